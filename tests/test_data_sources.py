"""Sources: LibriSpeech-layout folders, fairseq manifests, TFDS by name (a tiny dataset built here) and the
manual-dir TFDS builder; all must list the same utterances and transcripts. Plus the bad-input checks."""

import dataclasses
import os

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf
import tensorflow_datasets as tfds

import batches  # tests/batches.py
from data_pipelines import checks, librispeech_builder, manifest, pipeline, sources, synthetic, tfds_source
from data_pipelines.errors import AudioInputError, Counters
from data_pipelines.vocab import Vocab

tf.config.set_visible_devices([], "GPU")
LANGS = ("en", "fr")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("corpus"))
  written = {}
  for i, split in enumerate(("train", "dev")):
    written[split] = synthetic.write_librispeech_folder(root, split=split, languages=LANGS, speakers_per_language=2,
                                                        utterances_per_speaker=2, seconds=(0.3, 0.8), seed=i)
  return root, written


def _by_id(index):
  return {uid: (index.transcripts[i], index.languages[i], int(index.num_samples()[i])) for i, uid in enumerate(index.ids)}


def _expected(utts):
  return {u.id: (u.text, u.language, u.num_samples) for u in utts}


def test_folder_source_lists_audio_transcripts_and_languages(corpus):
  root, written = corpus
  index = sources.librispeech_folder(root, "train")
  assert _by_id(index) == _expected(written["train"])  # languages come from SPEAKERS.txt's LANG column
  both = sources.librispeech_folder(root, ["train", "dev"])
  assert len(both) == len(written["train"]) + len(written["dev"])
  assert sources.find_splits(root) == ["dev", "train"]
  audio, rate = index.reader.read(0)
  assert audio.dtype == np.float32 and audio.shape == (written["train"][0].num_samples, 1) and rate == 16000
  with pytest.raises(FileNotFoundError):
    sources.librispeech_folder(root, "nope")


def test_manifest_write_then_read_round_trip(corpus, tmp_path):
  root, written = corpus
  paths = manifest.write_folder_manifests(root, tmp_path)
  assert sorted(os.path.basename(p) for p in paths) == sorted(
      [f"{s}.{e}" for s in ("train", "dev") for e in ("tsv", "ltr", "wrd")] + ["dict.ltr.txt"])
  lines = (tmp_path / "train.tsv").read_text(encoding="utf-8").splitlines()
  assert lines[0] == os.path.abspath(root) and lines[1].split("\t")[0].startswith("train/")
  first = written["train"][0]
  assert lines[1] == f"train/{first.id.split('-')[0]}/7/{first.id}.flac\t{first.num_samples}"
  assert (tmp_path / "train.ltr").read_text(encoding="utf-8").splitlines()[0] == " ".join(
      list(first.text.replace(" ", "|"))) + " |"
  for labels in ("ltr", "wrd", "auto"):
    index = manifest.read_manifest(tmp_path / "train.tsv", labels=labels, language=synthetic.language_of(LANGS))
    assert _by_id(index) == _expected(written["train"])
  index = manifest.read_manifest(tmp_path / "train.tsv", labels=None, read_headers=True)
  assert index.transcripts is None and index.frames.tolist() == [u.num_samples for u in written["train"]]
  vocab = Vocab.load(tmp_path / "dict.ltr.txt")
  assert all(vocab.decode(vocab.encode(u.text)) == u.text for u in written["train"])


def test_manifest_errors_name_file_and_line(tmp_path):
  (tmp_path / "bad.tsv").write_text("/root\na.flac 12\n", encoding="utf-8")
  with pytest.raises(ValueError, match=r"bad.tsv:2"):
    manifest.read_manifest(tmp_path / "bad.tsv")
  (tmp_path / "x.tsv").write_text("/root\na.flac\t12\n", encoding="utf-8")
  (tmp_path / "x.ltr").write_text("A |\nB |\n", encoding="utf-8")
  with pytest.raises(ValueError, match="2 lines for 1"):
    manifest.read_manifest(tmp_path / "x.tsv")


class TinyVoice(tfds.core.GeneratorBasedBuilder):
  """A common_voice-like dataset: `voice` audio (8 kHz, no sample_rate metadata), `sentence` text."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "voice": tfds.features.Audio(dtype=np.int16),
        "sentence": tfds.features.Text(),
        "client_id": tfds.features.Text(),
    }))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i in range(5):
      x = synthetic.tone(4000 + 800 * i, 8000, seed=i)
      yield i, {"voice": (x * 32767).astype(np.int16), "sentence": f"ÇA VA {i}", "client_id": f"c{i}"}


def test_tfds_by_name_tfrecord_with_resampling(tmp_path):
  TinyVoice(data_dir=str(tmp_path)).download_and_prepare()
  index = tfds_source.tfds_index("tiny_voice", split="train", data_dir=str(tmp_path), sample_rate=8000,
                                 cache_dir=str(tmp_path / "cache"))
  assert sorted(index.transcripts) == [f"ÇA VA {i}" for i in range(5)]
  i = index.transcripts.index("ÇA VA 2")
  assert index.frames[i] == 5600 and index.sample_rates[i] == 8000 and index.num_samples()[i] == 11200
  audio, rate = index.reader.read(i)
  np.testing.assert_allclose(audio[:, 0], synthetic.tone(5600, 8000, seed=2), atol=1e-4)
  assert rate == 8000 and index.languages[i] == "und"
  cached = tfds_source.tfds_index("tiny_voice", split="train", data_dir=str(tmp_path), sample_rate=8000,
                                  cache_dir=str(tmp_path / "cache"))  # second call reads the lengths cache
  assert cached.ids == index.ids and os.listdir(tmp_path / "cache")
  part = tfds_source.tfds_index("tiny_voice", split="train[2:4]", data_dir=str(tmp_path), sample_rate=8000)
  assert part.transcripts == index.transcripts[2:4] and part.ids[0] == "tiny_voice/1.0.0/train[2:4][0]"


def test_tfds_records_decode_in_worker_processes_like_threads(tmp_path):
  # The pod recipes read TFDS; its reader (record offsets, the FeaturesDict) must reach the workers whole.
  TinyVoice(data_dir=str(tmp_path)).download_and_prepare()
  index = tfds_source.tfds_index("tiny_voice", split="train", data_dir=str(tmp_path), sample_rate=8000)
  cfg = pipeline.InputConfig(batch_budget=30_000, num_buckets=1, min_sample_size=2_000, max_sample_size=12_000,
                             prefetch=2)
  threads, workers = (pipeline.make_iterator(index, dataclasses.replace(cfg, decode_processes=n)) for n in (0, 2))
  try:
    batches.assert_same(batches.take(threads, 4), batches.take(workers, 4))
  finally:
    threads.close()
    workers.close()


def test_tfrecord_offsets(tmp_path):
  path = str(tmp_path / "x.tfrecord")
  with tf.io.TFRecordWriter(path) as w:
    for rec in (b"a", b"bcd", b""):
      w.write(rec)
  records = tfds_source.TfrecordRecords.from_files([path])
  assert [records[i] for i in range(len(records))] == [b"a", b"bcd", b""]
  offsets, lengths = tfds_source.tfrecord_offsets(path)
  assert offsets.tolist() == [0, 17, 36] and lengths.tolist() == [1, 3, 0]  # 12-byte header + data + 4-byte crc


@pytest.mark.slow
def test_builder_folder_and_manifest_agree(corpus, tmp_path):
  root, written = corpus
  librispeech_builder.build(root, tmp_path / "tfds", file_format="array_record")
  folder = sources.librispeech_folder(root, "dev")
  manifest.write_folder_manifests(root, tmp_path / "man")
  man = manifest.read_manifest(tmp_path / "man" / "dev.tsv", language=synthetic.language_of(LANGS))
  built = tfds_source.tfds_index("librispeech_manual", split="dev", data_dir=str(tmp_path / "tfds"))
  assert _by_id(built) == _by_id(folder) == _by_id(man) == _expected(written["dev"])
  uid = written["dev"][1].id
  a = built.reader.read(built.ids.index(uid))[0]
  b = folder.reader.read(folder.ids.index(uid))[0]
  np.testing.assert_allclose(a, b, atol=1 / 32768)  # stored as int16


def test_checks_skip_and_count_or_raise(tmp_path):
  synthetic.write_librispeech_folder(tmp_path, split="train", languages=("en",), speakers_per_language=1,
                                     utterances_per_speaker=6, seconds=(0.5, 0.6))
  chapter = tmp_path / "train" / "100" / "7"
  open(chapter / "100-7-0000.flac", "wb").close()  # empty
  (chapter / "100-7-0001.flac").write_bytes(os.urandom(500))  # not audio
  sf.write(chapter / "100-7-0002.flac", np.zeros(100, np.float32), 16000)  # shorter than the receptive field
  sf.write(chapter / "100-7-0003.flac", np.zeros((9000, 2), np.float32), 8000)  # 8 kHz stereo
  sf.write(chapter / "100-7-0006.flac", np.zeros(9000, np.float32), 16000)  # no transcript line
  trans = chapter / "100-7.trans.txt"
  trans.write_text(trans.read_text(encoding="utf-8").replace("100-7-0004 ", "100-7-0004 QQ ~ "), encoding="utf-8")
  index = sources.librispeech_folder(tmp_path, "train")
  vocab = Vocab.from_transcripts(["ABCDEFGHIJKLMNOPQRSTUVWXYZ'"])
  counters = Counters()
  checked = checks.check_index(index, counters=counters, vocab=vocab, allow_resample=False)
  assert list(checked.index.ids) == ["100-7-0005"]
  assert counters.as_dict() == {
      "index/utterances": 1, "skipped/empty_file": 1, "skipped/unreadable": 1, "skipped/too_short": 1,
      "skipped/sample_rate": 1, "skipped/missing_transcript": 1, "skipped/out_of_vocabulary": 1}
  assert checked.labels[0].dtype == np.int32
  relaxed = checks.check_index(index, counters=Counters(), vocab=vocab, on_unknown="unk", mono_mixdown=False)
  assert "100-7-0004" in relaxed.index.ids and "100-7-0003" not in relaxed.index.ids  # multichannel refused
  with pytest.raises(AudioInputError, match=r"100-7-0000\.flac: empty_file"):
    checks.check_index(index, counters=Counters(), on_error="raise")
  n = int(index.num_samples()[5])
  for kwargs, name in (({"min_sample_size": n + 1}, "filtered/too_short"), ({"max_sample_size": n - 1}, "filtered/too_long")):
    filtered = Counters()
    assert len(checks.check_index(index.select([5]), counters=filtered, **kwargs).index) == 0
    assert filtered.as_dict() == {name: 1, "index/utterances": 0}


@pytest.mark.parametrize("mode", ["finetune", "pretrain"])
def test_digital_silence_is_counted_and_named_not_skipped(tmp_path, caplog, mode):
  written = synthetic.write_librispeech_folder(tmp_path, split="train", languages=("en",), speakers_per_language=1,
                                               utterances_per_speaker=4, seconds=(0.5, 0.6))
  silent = written[2]
  sf.write(silent.path, np.zeros(silent.num_samples, np.float32), 16000)  # valid FLAC, peak exactly 0
  index = sources.librispeech_folder(tmp_path, "train")
  cfg = pipeline.InputConfig(mode=mode, batch_budget=20_000, num_buckets=1, min_sample_size=0, max_sample_size=12_000,
                             shuffle=False, drop_remainder=False, num_epochs=1)
  it = pipeline.make_iterator(index, cfg, vocab=Vocab.from_transcripts(u.text for u in written))
  with caplog.at_level("WARNING"):
    batches = list(it)
  fed = {int(u): int(m.sum()) for b in batches for u, m in zip(b["utterance"], b["attention_mask"]) if u >= 0}
  assert sorted(it.data.index.ids[u] for u in fed) == [u.id for u in written]  # every clip fed, the silent one too
  crop = it.shapes[0][1]  # one bucket: pre-training crops every clip to its length
  assert fed[it.data.index.ids.index(silent.id)] == (silent.num_samples if mode == "finetune" else crop)
  assert it.counters()["warned/digital_silence"] == 1 and it.counters().get("skipped/decode_error", 0) == 0
  named = [r.getMessage() for r in caplog.records if "Digital silence" in r.getMessage()]
  assert len(named) == 1 and silent.path in named[0]
