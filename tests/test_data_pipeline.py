"""The tf.data pipeline end to end on folders the tests write: shapes, masks, labels, determinism, resuming,
per-host slicing, bad input at decode time, and multilingual sampling frequencies."""

import dataclasses
import json
import os
import types

import numpy as np
import pytest
import tensorflow as tf

import batches  # tests/batches.py
from data_pipelines import audio, pipeline, rows, sources, synthetic
from data_pipelines.errors import AudioInputError
from data_pipelines.source_config import build_index
from data_pipelines.vocab import Vocab
from wav2vec_jax.training import inputs

tf.config.set_visible_devices([], "GPU")
LANGS = ("en", "fr", "de")
BASE = pipeline.InputConfig(batch_budget=40_000, num_buckets=3, min_sample_size=2_000, max_sample_size=12_000,
                            seed=3, prefetch=2)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("pipe"))
  utts = synthetic.write_librispeech_folder(root, split="train", languages=LANGS, speakers_per_language=2,
                                            utterances_per_speaker=6, seconds=(0.15, 1.2), seed=5)
  return root, utts


@pytest.fixture(scope="module")
def index(folder):
  return sources.librispeech_folder(folder[0], "train")


def test_pretrain_fixed_shapes_no_padding_same_in_tf_data_and_eager(index):
  it_tf = pipeline.make_iterator(index, BASE)
  it_py = pipeline.make_iterator(index, dataclasses.replace(BASE, use_tf_data=False))
  steps = len(it_tf.epoch_plan(0)) + 2  # crosses an epoch boundary
  got_tf, got_py = batches.take(it_tf, steps), batches.take(it_py, steps)
  batches.assert_same(got_tf, got_py)
  assert len(it_tf.shapes) <= 3
  for b in got_tf:
    assert b["waveform"].dtype == np.float32 and b["attention_mask"].dtype == np.int32
    assert b["waveform"].shape in it_tf.shapes and b["attention_mask"].shape == b["waveform"].shape
    assert (b["attention_mask"] == 1).all()  # crop to the bucket: no padding in pre-training
    assert "labels" not in b and b["language"].shape == (b["waveform"].shape[0],)
  # Each row is a crop of its utterance: find the window in the decoded file.
  b = got_tf[0]
  wave = audio.load_waveform(it_tf.data.index.name(b["utterance"][0]))
  size = b["waveform"].shape[1]
  windows = np.lib.stride_tricks.sliding_window_view(wave, size)
  assert np.any(np.all(np.abs(windows - b["waveform"][0]) < 1e-6, axis=1))
  assert it_tf.counters()["input/padded_samples"] == 0 and it_tf.get_state()["epoch"] == 1


def test_tf_data_runs_without_autotuning(index):
  # tf.data's autotuning thread made releasing the iterator at the end of a run take 30-60 s on a busy machine
  # (the main job's test lost ~70 s to it); the decode parallelism is set explicitly instead.
  it = pipeline.make_iterator(index, BASE)
  assert it.tf_dataset(0, 0).options().autotune.enabled is False
  cores = len(os.sched_getaffinity(0))  # this process's cores (taskset counts), capped
  assert pipeline.usable_cores(cap=1) == 1 and pipeline.usable_cores(cap=4096) == cores
  assert pipeline.usable_cores() == min(cores, 16)


class _FullDecodeReader:
  """A reader without `read_window`: forces whole-file decoding."""

  def __init__(self, reader):
    self._reader = reader

  def read(self, i):
    return self._reader.read(i)

  def name(self, i):
    return self._reader.name(i)


def test_window_decoding_matches_full_decoding(index):
  full = dataclasses.replace(index, reader=_FullDecodeReader(index.reader))
  cfg = dataclasses.replace(BASE, use_tf_data=False)
  steps = len(pipeline.make_iterator(index, cfg).epoch_plan(0))
  batches.assert_same(batches.take(pipeline.make_iterator(index, cfg), steps),
                      batches.take(pipeline.make_iterator(full, cfg), steps))


@pytest.mark.parametrize("mode, normalize", [("pretrain", False), ("pretrain", True), ("finetune", True)])
def test_audio_cache_gives_the_same_batches(index, folder, mode, normalize):
  vocab = Vocab.from_transcripts(u.text for u in folder[1])
  cfg = dataclasses.replace(BASE, use_tf_data=False, mode=mode, normalize=normalize, max_sample_size=20_000)
  plain = pipeline.make_iterator(index, cfg, vocab=vocab)
  steps = 2 * len(plain.epoch_plan(0))  # the second epoch reads from the cache
  cached = pipeline.make_iterator(index, dataclasses.replace(cfg, cache_audio_bytes=1 << 30), vocab=vocab)
  batches.assert_same(batches.take(plain, steps), batches.take(cached, steps))
  assert cached._cache.bytes > 0
  tiny = pipeline.make_iterator(index, dataclasses.replace(cfg, cache_audio_bytes=1000), vocab=vocab)
  batches.take(tiny, 2)
  assert tiny._cache.bytes <= 1000


def test_finetune_pads_and_encodes_labels(index, folder):
  vocab = Vocab.from_transcripts(u.text for u in folder[1])
  cfg = dataclasses.replace(BASE, mode="finetune", max_sample_size=20_000, shuffle=False, drop_remainder=False,
                            num_epochs=1, normalize=True)
  it = pipeline.make_iterator(index, cfg, vocab=vocab)
  seen = []
  for b in it:
    assert set(b) == {"waveform", "attention_mask", "language", "utterance", "labels", "label_lengths"}
    assert b["labels"].dtype == np.int32 and b["labels"].shape[1] % 8 == 0
    for r, u in enumerate(b["utterance"]):
      if u < 0:
        assert b["attention_mask"][r].sum() == 0 and b["label_lengths"][r] == 0
        continue
      seen.append(int(u))
      wave = audio.load_waveform(it.data.index.name(u), normalize_audio=True)
      n = wave.shape[0]
      assert b["attention_mask"][r].sum() == n and b["attention_mask"][r, :n].all()
      np.testing.assert_allclose(b["waveform"][r, :n], wave, atol=1e-6)
      assert (b["waveform"][r, n:] == 0).all()
      assert vocab.decode(b["labels"][r, :b["label_lengths"][r]]) == it.data.index.transcripts[u]
      assert LANGS[["en", "fr", "de"].index(it.languages[b["language"][r]])] == it.data.index.languages[u]
  assert sorted(seen) == list(range(len(it.data.index)))  # one epoch, no drop: every utterance once
  it.set_state({**it.get_state(), "epoch": 0, "step": 0})
  specs = it.batch_specs()
  for b in it:
    assert any(all(b[k].shape == shape and b[k].dtype == dtype for k, (shape, dtype) in spec.items())
               for spec in specs)


def test_same_seed_same_batches_other_seed_differs(index):
  a = batches.take(pipeline.make_iterator(index, BASE), 5)
  b = batches.take(pipeline.make_iterator(index, BASE), 5)
  batches.assert_same(a, b)
  c = batches.take(pipeline.make_iterator(index, dataclasses.replace(BASE, seed=4)), 5)
  assert any(x["waveform"].shape != y["waveform"].shape or not np.array_equal(x["waveform"], y["waveform"])
             for x, y in zip(a, c))


@pytest.mark.parametrize("use_tf_data", [True, False])
def test_restore_position_continues_identically(index, use_tf_data):
  cfg = dataclasses.replace(BASE, use_tf_data=use_tf_data)
  reference = pipeline.make_iterator(index, cfg)
  steps = len(reference.epoch_plan(0))
  expected = batches.take(reference, 2 * steps + 1)
  for cut in (3, steps - 1, steps + 2):  # mid-epoch, last batch of an epoch, next epoch
    it = pipeline.make_iterator(index, cfg)
    batches.take(it, cut)
    state = json.loads(json.dumps(it.get_state()))  # what Orbax would store
    resumed = pipeline.make_iterator(index, cfg)
    resumed.set_state(state)
    batches.assert_same(batches.take(resumed, 4), expected[cut:cut + 4])
    assert resumed.counters()["input/batches"] == cut + 4
  it = pipeline.make_iterator(index, cfg)
  it.set_state(reference.get_state())
  next(it)
  it.set_state({**reference.get_state(), "epoch": 0, "step": 1})  # rewinding works too
  batches.assert_same([next(it)], expected[1:2])
  other = pipeline.make_iterator(index, dataclasses.replace(cfg, seed=99))
  with pytest.raises(ValueError, match="another dataset, seed or batching"):
    other.set_state(reference.get_state())


def test_hosts_take_slices_of_the_same_global_batch(index):
  cfg = dataclasses.replace(BASE, batch_multiple=2)
  single = batches.take(pipeline.make_iterator(index, cfg), 4)
  hosts = [batches.take(pipeline.make_iterator(index, cfg, process_index=p, process_count=2), 4) for p in range(2)]
  for step in range(4):
    for key in single[step]:
      np.testing.assert_array_equal(np.concatenate([hosts[0][step][key], hosts[1][step][key]]), single[step][key])
  with pytest.raises(ValueError, match="process_index"):
    pipeline.make_iterator(index, cfg, process_index=2, process_count=2)


@pytest.mark.parametrize("decode_processes", [0, 1])  # threads, or a worker process (tests/test_decode_pool.py)
def test_decode_errors_skip_counted_or_raise(tmp_path, decode_processes):
  synthetic.write_librispeech_folder(tmp_path, split="train", languages=("en",), speakers_per_language=1,
                                     utterances_per_speaker=4, seconds=(0.5, 0.6))
  index = sources.librispeech_folder(tmp_path, "train")
  bad = index.name(2)
  data = open(bad, "rb").read()
  with open(bad, "wb") as f:  # header intact, body truncated after listing: only decoding can find out
    f.write(data[: len(data) // 2])
  cfg = dataclasses.replace(BASE, num_buckets=1, batch_budget=10**6, max_batch_size=4, shuffle=False, num_epochs=1,
                            decode_processes=decode_processes)
  for use_tf_data in (True, False):
    it = pipeline.make_iterator(index, dataclasses.replace(cfg, use_tf_data=use_tf_data))
    (batch,) = list(it)
    it.close()
    assert batch["utterance"].tolist() == [0, 1, -1, 3] and batch["attention_mask"][2].sum() == 0
    assert it.counters()["skipped/decode_error"] == 1
    it = pipeline.make_iterator(index, dataclasses.replace(cfg, use_tf_data=use_tf_data, on_error="raise"))
    with pytest.raises(AudioInputError, match=os.path.basename(bad) + ": decode_error") as raised:
      next(it)
    it.close()
    assert raised.value.source == bad and raised.value.kind == "decode_error"


def test_unusable_input_fails_fast_with_a_reason(tmp_path, index):
  (tmp_path / "train" / "1" / "1").mkdir(parents=True)
  (tmp_path / "train" / "1" / "1" / "1-1-0000.flac").write_bytes(b"")
  (tmp_path / "train" / "1" / "1" / "1-1.trans.txt").write_text("1-1-0000 A\n", encoding="utf-8")
  with pytest.raises(ValueError, match="no usable utterances.*skipped/empty_file"):
    pipeline.make_iterator(sources.librispeech_folder(tmp_path, "train"), BASE)
  with pytest.raises(ValueError, match="no batch"):
    pipeline.make_iterator(index, dataclasses.replace(BASE, batch_budget=10**9))
  with pytest.raises(ValueError, match="needs a vocabulary"):
    pipeline.make_iterator(index, dataclasses.replace(BASE, mode="finetune"))


def test_multilingual_sampling_frequencies(tmp_path):
  counts = {"en": 24, "fr": 6, "de": 2}
  for lang, n in counts.items():
    synthetic.write_librispeech_folder(tmp_path / lang, split=None, languages=(lang,), speakers_per_language=1,
                                       utterances_per_speaker=n, seconds=(0.1, 0.12), seed=len(lang) + n)
  index = sources.concat([sources.librispeech_folder(tmp_path / lang, language=lang) for lang in counts])
  cfg = dataclasses.replace(BASE, multilingual_alpha=0.5, num_buckets=1, batch_budget=4 * 1_600, min_sample_size=1_000,
                            use_tf_data=False)
  it = pipeline.make_iterator(index, cfg)
  # p_l ∝ (n_l / N)^0.5, worked out here rather than taken from `sampling`.
  root = {lang: (n / 32) ** 0.5 for lang, n in counts.items()}
  p = {lang: r / sum(root.values()) for lang, r in root.items()}
  assert it.language_probabilities == pytest.approx(p) and it.language_sizes == {"de": 2.0, "en": 24.0, "fr": 6.0}
  epochs = 25
  while it.get_state()["epoch"] < epochs:
    next(it)
  c = it.counters()
  total = sum(c[f"language/{k}/utterances"] for k in counts)
  for lang, prob in p.items():
    share = c[f"language/{lang}/utterances"] / total
    assert abs(share - prob) < 4 * np.sqrt(prob * (1 - prob) / total) + 0.01, (lang, share, prob)
  natural = pipeline.make_iterator(index, dataclasses.replace(cfg, multilingual_alpha=None))
  assert natural.language_probabilities == pytest.approx({"de": 2 / 32, "en": 24 / 32, "fr": 6 / 32})


def test_languages_kept_by_name_and_low_resource_caps(folder, index):
  """`config.data.languages` keeps some languages in every split; `config.data.language_seconds` cuts some
  languages of the training mix to a fixed random subset (the same for a seed), keeping the others whole."""
  data = types.SimpleNamespace(source="librispeech", path=folder[0], split="train", languages="fr,de")
  kept = build_index(data)
  assert set(kept.languages) == {"fr", "de"} and len(kept) == 24 and len(index) == 36
  with pytest.raises(ValueError, match=r"config.data.languages='xx'.*its languages are \['de', 'en', 'fr'\]"):
    build_index(types.SimpleNamespace(**vars(data) | {"languages": "xx"}))

  seconds = index.num_samples() / 16_000
  names = np.asarray(index.languages)
  fr_total = seconds[names == "fr"].sum()
  capped = inputs.language_subset(index, "fr=2.5", seed=0)
  capped_seconds, capped_names = capped.num_samples() / 16_000, np.asarray(capped.languages)
  assert 0 < capped_seconds[capped_names == "fr"].sum() <= 2.5 < fr_total
  for other in ("en", "de"):  # whole
    assert [i for i in capped.ids if i in set(np.asarray(index.ids)[names == other])] == list(
        np.asarray(index.ids)[names == other])
  assert capped.ids == inputs.language_subset(index, "fr=2.5", seed=0).ids
  assert any(inputs.language_subset(index, "fr=2.5", seed=s).ids != capped.ids for s in (1, 2, 3))
  for bad in ("fr", "fr=0", "fr=x", "=3"):
    with pytest.raises(ValueError, match="is not LANGUAGE=SECONDS"):
      inputs.language_subset(index, bad, seed=0)
  with pytest.raises(ValueError, match=r"no training utterances of \['xx'\]"):
    inputs.language_subset(index, "xx=3", seed=0)


def test_config_from_config_dict():
  ml_collections = pytest.importorskip("ml_collections")
  cfg = pipeline.InputConfig.from_dict(ml_collections.ConfigDict({"mode": "finetune", "bucket_lengths": [1, 2]}))
  assert cfg.mode == "finetune" and cfg.bucket_lengths == (1, 2)
  with pytest.raises(TypeError):
    pipeline.InputConfig.from_dict({"batch_size": 3})


def test_batches_are_aligned_for_tensorflow(index):
  # tf.numpy_function copies an unaligned array, holding the GIL; the waveform and mask are most of a batch.
  for processes in (0, 1):
    it = pipeline.make_iterator(index, dataclasses.replace(BASE, use_tf_data=False, decode_processes=processes))
    batch = next(it)
    it.close()
    assert all(batch[k].ctypes.data % 64 == 0 for k in ("waveform", "attention_mask")), processes
  x = rows.aligned_empty((3, 5), np.int32, alignment=256)
  assert x.shape == (3, 5) and x.dtype == np.int32 and x.ctypes.data % 256 == 0 and x.flags.c_contiguous
