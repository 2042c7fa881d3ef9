"""`gs://` workdirs end to end against a local GCS emulator: pre-training and fine-tuning resume after a SIGKILL
exactly as on local disk, and `load_pretrained("gs://...")` reads the run."""

import json
import os
import signal
import time

import jax
import numpy as np
import pytest

import e2e  # tests/e2e.py
import gcs_emulator  # tests/gcs_emulator.py

pytestmark = pytest.mark.slow

PRETRAIN = ["--config.data.input.batch_budget=32000", "--config.data.input.max_sample_size=16000",
            "--config.data.input.min_sample_size=16000"]
FINETUNE = ["--config.data.input.batch_budget=64000", "--config.data.input.max_sample_size=64000",
            "--config.data.input.num_buckets=2", "--config.data.eval_split=", "--config.freeze_finetune_updates=4"]
COMMON = ["--config.total_steps=9", "--config.checkpoint_every=3", "--config.log_every=1",
          "--config.measure_peak_flops=false", "--config.tensorboard=false"]


@pytest.fixture(scope="module")
def bucket():
  server = gcs_emulator.start("bucket")
  yield "gs://bucket"
  server.stop()


def _metrics(url):
  from data_pipelines import storage  # pylint: disable=g-import-not-at-top
  path = storage.Path(url) / "metrics.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


@pytest.mark.parametrize("script,flags", [("pretrain.py", PRETRAIN), ("finetune.py", FINETUNE)])
def test_a_gs_workdir_resumes_after_sigkill_like_a_local_one(bucket, tmp_path, script, flags):
  import wav2vec_jax  # pylint: disable=g-import-not-at-top
  from data_pipelines import storage  # pylint: disable=g-import-not-at-top

  local = str(tmp_path / "local")
  e2e.finish(e2e.launch(script, local, *COMMON, *flags))
  remote = f"{bucket}/{script.split('.')[0]}"
  proc = e2e.launch(script, remote, *COMMON, *flags)
  while not (storage.Path(remote) / "checkpoints" / "6").exists():  # the step-6 save has begun
    assert proc.poll() is None, e2e.output(proc)[-4000:]
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  out = e2e.finish(e2e.launch(script, remote, *COMMON, *flags))
  assert e2e.resumed_from(out) >= 3 and e2e.steps_run(out) == 9 - e2e.resumed_from(out)  # 6 if its save committed
  assert not os.path.exists("gs:")  # nothing went to a local "gs:" folder
  assert [r["step"] for r in _metrics(remote)] == list(range(1, 10))
  ours = jax.tree_util.tree_map(np.asarray, wav2vec_jax.load_pretrained(remote)[1]["params"])
  jax.tree_util.tree_map(np.testing.assert_array_equal, ours, e2e.params(local))
