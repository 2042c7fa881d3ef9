"""`gs://` end to end against a local GCS emulator: pre-training and fine-tuning workdirs resume after a SIGKILL
exactly as on local disk, and `load_pretrained("gs://...")` reads the run; training data (LibriSpeech folders,
fairseq manifests, their audio, also decoded in worker processes) read from a bucket equals the local copy;
`export_hf` writes to a bucket."""

import dataclasses
import json
import os
import signal
import time

import flax.linen as nn
import jax
import numpy as np
import pytest

import batches  # tests/batches.py
import e2e  # tests/e2e.py
import gcs_emulator  # tests/gcs_emulator.py
import wav2vec_jax
from data_pipelines import manifest, pipeline, sources, storage, synthetic, tfds_source
from experiments.configs import finetune
from wav2vec_jax.interop.convert import export_hf
from wav2vec_jax.models import Wav2Vec2ForCTC, get_variant
from wav2vec_jax.training import loop

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
  path = storage.Path(url) / "metrics.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


@pytest.mark.slow
@pytest.mark.parametrize("script,flags", [("pretrain.py", PRETRAIN), ("finetune.py", FINETUNE)])
def test_a_gs_workdir_resumes_after_sigkill_like_a_local_one(bucket, tmp_path, script, flags):
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


# ---- training data on gs:// ----
SPLITS = {"train": 1, "dev": 2}  # split: seed of its audio


def _upload(local: str, url: str) -> None:
  """Copies a local folder tree to `url`, object by object."""
  for directory, _, files in os.walk(local):
    for name in files:
      path = os.path.join(directory, name)
      storage.Path(storage.join(url, os.path.relpath(path, local))).write_bytes(storage.Path(path).read_bytes())


@pytest.fixture(scope="module")
def data(bucket, tmp_path_factory):
  """(local folder, its gs:// copy, manifests written from each): two languages, train and dev."""
  root = tmp_path_factory.mktemp("gcs_data")
  folder = str(root / "folder")
  for split, seed in SPLITS.items():
    synthetic.write_librispeech_folder(folder, split=split, languages=("en", "de"), speakers_per_language=2,
                                       utterances_per_speaker=4, seconds=(1.0, 1.5), seed=seed)
  remote = f"{bucket}/data/folder"
  _upload(folder, remote)
  manifest.write_folder_manifests(folder, str(root / "manifests"))
  manifest.write_folder_manifests(remote, f"{bucket}/data/manifests")  # listed, header-read and written on gs://
  return folder, remote, str(root / "manifests"), f"{bucket}/data/manifests"


def test_gs_folder_and_manifests_list_like_the_local_copy(data):
  folder, remote, local_manifests, remote_manifests = data
  assert sources.find_splits(remote) == sources.find_splits(folder) == ["dev", "train"]
  for split in SPLITS:
    ours, local = sources.librispeech_folder(remote, split), sources.librispeech_folder(folder, split)
    assert len(ours) == 16 and not ours.errors and ours.reader.name(0).startswith(f"{remote}/{split}/")
    assert ours.ids == local.ids and ours.transcripts == local.transcripts and ours.languages == local.languages
    np.testing.assert_array_equal(ours.frames, local.frames)  # header reads through the object files
    np.testing.assert_array_equal(ours.sample_rates, local.sample_rates)
    np.testing.assert_array_equal(ours.reader.read(3)[0], local.reader.read(3)[0])
    np.testing.assert_array_equal(ours.reader.read_window(3, 500, 800)[0], local.reader.read(3)[0][500:1300])
    tsv = storage.Path(remote_manifests, f"{split}.tsv").read_text().splitlines()
    assert tsv[0] == remote and tsv[1:] == storage.Path(local_manifests, f"{split}.tsv").read_text().splitlines()[1:]
    for name in (f"{split}.ltr", f"{split}.wrd", "dict.ltr.txt"):
      assert storage.Path(remote_manifests, name).read_text() == storage.Path(local_manifests, name).read_text()
    read = manifest.read_manifest(f"{remote_manifests}/{split}.tsv", read_headers=True)
    assert read.ids == local.ids and read.transcripts == local.transcripts and read.reader.name(0).startswith(remote)
    np.testing.assert_array_equal(read.frames, local.frames)


def _finetune(data_path: str, workdir: str) -> tuple[list[dict], dict]:
  """Three updates of the tiny fine-tuning recipe on the manifests at `data_path`, validated at steps 2 and 3."""
  c = finetune.get_config("tiny")
  c.data.source, c.data.path, c.data.split, c.data.eval_split = "manifest", data_path, "train", "dev"
  c.data.labels, c.data.vocab = "ltr", storage.join(data_path, "dict.ltr.txt")
  c.data.input.batch_budget, c.data.input.num_buckets = 200_000, 1  # 8 rows: one per fake device
  c.data.input.normalize = False  # the audio's scale reaches the model
  c.total_steps, c.eval_every, c.log_every, c.freeze_finetune_updates = 3, 2, 1, 0
  c.measure_peak_flops, c.async_checkpoints, c.tensorboard, c.plots = False, False, False, False
  last = loop.train_and_evaluate(c, workdir)
  return e2e.metrics(workdir), last


@pytest.mark.slow  # two fine-tuning runs: ~20 s with a warm compilation cache, ~70 s cold
def test_fine_tuning_on_gs_manifests_reads_the_same_data_as_the_local_copy(data, tmp_path):
  _, _, local_manifests, remote_manifests = data
  rows, last = _finetune(remote_manifests, str(tmp_path / "gs"))
  want, _ = _finetune(local_manifests, str(tmp_path / "local"))
  assert [r["step"] for r in rows] == [r["step"] for r in want] == [1, 2, 3]
  assert last["val/utterances"] == 16 and last["num_sentences"] == 8
  timing = ("time", "second", "flop", "mfu", "throughput", "step_time", "compile")
  compared = sorted(k for k in want[-1] if not any(t in k for t in timing))
  assert {"loss/ctc", "grad_norm", "val/loss_ctc", "val/wer", "val/cer"} <= set(compared), compared
  for key in compared:  # bit for bit: the same utterances, transcripts, audio and batches, step by step
    assert [r.get(key) for r in rows] == [r.get(key) for r in want], key


def test_export_hf_to_gs_loads_back_the_same_parameters(bucket, tmp_path):
  model = Wav2Vec2ForCTC(get_variant("tiny", vocab_size=12))
  params = nn.unbox(model.init(jax.random.PRNGKey(3), np.zeros((1, 4000), np.float32)))["params"]
  export_hf(f"{bucket}/export", params, model.config, "Wav2Vec2ForCTC")
  export_hf(str(tmp_path), params, model.config, "Wav2Vec2ForCTC")
  for name in ("config.json", "model.safetensors"):  # the same bytes as a local export
    assert storage.Path(f"{bucket}/export/{name}").read_bytes() == (tmp_path / name).read_bytes(), name
  loaded_model, variables = wav2vec_jax.load_pretrained(f"{bucket}/export")
  assert type(loaded_model).__name__ == "Wav2Vec2ForCTC" and loaded_model.config == model.config
  jax.tree_util.tree_map(np.testing.assert_array_equal, variables["params"], params)


def test_a_tfds_dataset_on_gs_reads_like_the_local_copy(bucket, tmp_path):
  from test_data_sources import TinyVoice  # pylint: disable=g-import-not-at-top  # tfrecord shards, as TFDS writes
  local = str(tmp_path / "tfds")
  TinyVoice(data_dir=local).download_and_prepare()
  remote = f"{bucket}/tfds"
  _upload(local, remote)
  kw = dict(split="train", sample_rate=8000)
  want = tfds_source.tfds_index("tiny_voice", data_dir=local, **kw)
  ours = tfds_source.tfds_index("tiny_voice", data_dir=remote, cache_dir=f"{bucket}/tfds_cache", **kw)
  assert isinstance(ours.reader.records, tfds_source.TfrecordRecords)
  assert all(f.startswith(f"{remote}/") for f in ours.reader.records.files)  # read from the bucket, not a copy
  assert len(ours) == 5 and ours.ids == want.ids and ours.transcripts == want.transcripts
  np.testing.assert_array_equal(ours.frames, want.frames)
  for i in range(len(ours)):
    np.testing.assert_array_equal(ours.reader.read(i)[0], want.reader.read(i)[0])
  assert storage.Path(f"{bucket}/tfds_cache").exists()  # the lengths cache went to the bucket
  cached = tfds_source.tfds_index("tiny_voice", data_dir=remote, cache_dir=f"{bucket}/tfds_cache", **kw)
  assert cached.ids == want.ids and cached.transcripts == want.transcripts


def test_decode_workers_read_a_gs_folder_like_threads_read_the_local_copy(data):
  folder, remote, _, _ = data
  cfg = pipeline.InputConfig(batch_budget=60_000, num_buckets=2, min_sample_size=8_000, max_sample_size=20_000,
                             normalize=True, prefetch=2)
  local = pipeline.make_iterator(sources.librispeech_folder(folder, "train"), cfg)
  workers = pipeline.make_iterator(sources.librispeech_folder(remote, "train"),
                                   dataclasses.replace(cfg, decode_processes=2))
  steps = len(local.epoch_plan(0)) + 1
  try:
    batches.assert_same(batches.take(local, steps), batches.take(workers, steps))
  finally:
    local.close()
    workers.close()
