"""Fault injection through `train_and_evaluate`: each failure ends in a short error naming the cause and the fix,
or the run goes on from the last good state, and no checkpoint is lost."""

import glob
import json
import os
import subprocess
import sys

import e2e  # tests/e2e.py
import jax
import numpy as np
import pytest

import wav2vec_jax
from data_pipelines import synthetic
from experiments.configs import pretrain
from wav2vec_jax.interop.convert import CheckpointMismatchError
from wav2vec_jax.training import checkpointing, loop, metrics, workdir_lock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("audio"))
  synthetic.write_librispeech_folder(root, speakers_per_language=2, utterances_per_speaker=4, seconds=(1.0, 1.5))
  return root


def _config(folder, **fields):
  c = pretrain.get_config("tiny")
  c.data.source, c.data.path = "librispeech", folder
  c.data.input.batch_budget, c.data.input.max_sample_size = 32_000, 16_000
  c.data.input.min_sample_size, c.data.input.num_buckets = 16_000, 1
  c.measure_peak_flops, c.async_checkpoints, c.plots = False, False, False
  c.total_steps, c.checkpoint_every, c.log_every = 4, 2, 1
  for key, value in fields.items():
    target = c
    *parents, leaf = key.split(".")
    for p in parents:
      target = target[p]
    target[leaf] = value
  return c


def _steps(workdir):
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


def test_a_nan_burst_longer_than_the_limit_stops_the_run_between_log_steps(folder, tmp_path):
  # log_every=50: the limit is checked on every step (one step behind), not only on logging steps.
  config = _config(folder, total_steps=40, log_every=50, max_consecutive_bad_steps=5, checkpoint_every=2,
                   **{"fault_injection.nan_steps": tuple(range(2, 40))})
  workdir = str(tmp_path / "run")
  with pytest.raises(loop.BadStepsError, match=r"max_consecutive_bad_steps=5\); stopped at step 7\b") as err:
    loop.train_and_evaluate(config, workdir)
  assert "look for bad input" in str(err.value)
  # Nothing written is lost, and what was saved is the last good state: checkpoints 2, 4, 6 all hold the
  # parameters of update 2 (the later updates were skipped), finite; the logged row of step 1 is still there.
  assert _steps(workdir) == [2, 4, 6]
  saved = [e2e.saved_item(workdir, step=s)["params"] for s in (2, 6)]
  for a, b in zip(*(jax.tree_util.tree_leaves(p) for p in saved)):
    assert np.all(np.isfinite(a)) and np.array_equal(a, b)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    assert [json.loads(line)["step"] for line in f] == [1]


def test_relaunch_with_another_model_names_the_field_and_keeps_the_workdir(folder, tmp_path):
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(_config(folder, total_steps=2), workdir)
  meta = open(os.path.join(workdir, "wav2vec_jax.json")).read()
  with pytest.raises(loop.ConfigError, match=r"hidden_size: checkpoint 32, config 48.*new --workdir"):
    loop.train_and_evaluate(_config(folder, total_steps=4, **{"model.hidden_size": 48}), workdir)
  # Stacked layers are another checkpoint layout (the BASE/LARGE recipes scan, the tiny one does not).
  with pytest.raises(loop.ConfigError, match=r"scan_layers: checkpoint False, config True"):
    loop.train_and_evaluate(_config(folder, total_steps=4, **{"model.scan_layers": True}), workdir)
  assert open(os.path.join(workdir, "wav2vec_jax.json")).read() == meta  # not overwritten
  wav2vec_jax.load_pretrained(workdir)  # the workdir's own checkpoints still load
  # The loss is not the model: a relaunch with another feature penalty and K resumes at step 3 (not from scratch).
  loop.train_and_evaluate(_config(folder, total_steps=4, **{"model.feature_pen_weight": 0.5,
                                                            "model.num_negatives": 5}), workdir)
  assert [r["step"] for r in e2e.metrics(workdir)] == [1, 2, 3, 4]
  saved = json.load(open(os.path.join(workdir, "wav2vec_jax.json")))["model_config"]
  assert saved["feature_pen_weight"] == 0.5 and saved["num_negatives"] == 5


def _damage(workdir, step, how):
  directory = os.path.join(workdir, "checkpoints", str(step))
  if how == "truncated_array":
    files = [f for f in glob.glob(os.path.join(directory, "state", "**", "*"), recursive=True)
             if os.path.isfile(f) and "d/" in f.replace(os.sep, "/")]
    for f in files:  # the OCDBT data files holding the arrays
      with open(f, "r+b") as fh:
        fh.truncate(max(os.path.getsize(f) // 3, 1))
    assert files
  elif how == "garbage_input_state":
    path = os.path.join(directory, "data", "metadata")  # the JSON item
    with open(path, "w") as fh:
      fh.write("{not json")


@pytest.mark.parametrize("how", ["truncated_array", "garbage_input_state"])
def test_a_damaged_latest_checkpoint_is_moved_aside_and_the_run_resumes_from_the_previous(folder, tmp_path, how):
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(_config(folder, total_steps=4), workdir)
  assert _steps(workdir) == [1, 2, 4]  # Orbax also keeps the first step
  _damage(workdir, 4, how)
  loop.train_and_evaluate(_config(folder, total_steps=6), workdir)
  (aside,) = glob.glob(os.path.join(workdir, "checkpoints.corrupt", "4-*"))
  assert os.path.exists(os.path.join(aside, "WHY.txt"))  # kept, with the reason, never deleted
  assert _steps(workdir) == [2, 4, 6]  # resumed from 2 (steps 3-6 re-run); keep_checkpoints=3 retired step 1
  assert [r["step"] for r in metrics_rows(workdir)] == [1, 2, 3, 4, 5, 6]


def test_when_no_checkpoint_restores_nothing_is_moved_and_the_error_says_what_to_do(folder, tmp_path):
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(_config(folder, total_steps=4), workdir)
  for step in (1, 2, 4):
    _damage(workdir, step, "garbage_input_state")
  with pytest.raises(checkpointing.CheckpointError, match=r"step 4: .*step 2: .*step 1: .*left in place"):
    loop.train_and_evaluate(_config(folder, total_steps=6), workdir)
  assert _steps(workdir) == [1, 2, 4] and not os.path.exists(os.path.join(workdir, "checkpoints.corrupt"))


def metrics_rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def test_a_second_run_on_a_live_workdir_stops_and_a_stale_lease_is_taken_over(folder, tmp_path):
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    lease = {"host": os.uname().nodename, "pid": other.pid, "started": 0, "heartbeat": 0}
    with open(os.path.join(workdir, workdir_lock.LOCK_FILE), "w") as f:
      json.dump(lease, f)
    with pytest.raises(workdir_lock.WorkdirLockedError, match=f"pid {other.pid}.*another --workdir"):
      loop.train_and_evaluate(_config(folder, total_steps=2), workdir)
    assert not os.path.exists(os.path.join(workdir, "checkpoints"))  # it wrote nothing
  finally:
    other.kill()
    other.wait()
  loop.train_and_evaluate(_config(folder, total_steps=2), workdir)  # the holder is gone: taken over
  assert _steps(workdir) == [1, 2] and not os.path.exists(os.path.join(workdir, workdir_lock.LOCK_FILE))


def test_configs_no_run_can_use_fail_before_anything_is_written(folder, tmp_path):
  for fields, message in (({"total_steps": -5}, "total_steps=-5"), ({"keep_checkpoints": 0}, "keep_checkpoints=0"),
                          ({"optim.grad_accum": 0}, "optim.grad_accum=0")):
    workdir = str(tmp_path / "run")
    with pytest.raises(loop.ConfigError, match=message):
      loop.train_and_evaluate(_config(folder, **fields), workdir)
    assert not os.path.exists(workdir)


def test_a_truncated_safetensors_file_names_the_path(tmp_path):
  pytest.importorskip("transformers")
  import hf_reference as ref  # pylint: disable=g-import-not-at-top
  directory = str(tmp_path / "hf")
  ref.save_reference(directory, "base", "Wav2Vec2ForCTC")
  path = os.path.join(directory, "model.safetensors")
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  with pytest.raises(CheckpointMismatchError, match=f"{path}: not a readable safetensors file.*truncated"):
    wav2vec_jax.load_pretrained(directory)


def test_metrics_past_the_restored_step_are_dropped(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 8)) + '{"step": 8, "lo')
  assert metrics.truncate_after(str(tmp_path), 4) == 4
  assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3, 4]


def test_the_entry_point_ends_with_the_cause_and_the_fix_not_a_traceback(folder, tmp_path):
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(_config(folder, total_steps=2), workdir)
  launched = subprocess.run(
      [sys.executable, os.path.join(REPO, "experiments", "pretrain.py"), f"--workdir={workdir}",
       "--config.data.source=librispeech", f"--config.data.path={folder}", "--config.model.hidden_size=48"],
      cwd=REPO, capture_output=True, text=True, check=False, env=dict(os.environ, XLA_FLAGS=e2e.xla_flags()))
  assert launched.returncode == 1
  tail = (launched.stdout + launched.stderr).strip().splitlines()[-3:]
  assert "Traceback" not in "\n".join(tail), tail
  assert "stopped: ConfigError:" in tail[-1] and "hidden_size" in tail[-1] and "new --workdir" in tail[-1]

