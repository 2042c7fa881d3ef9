"""TensorFlow Datasets by name from a data_dir (librispeech, common_voice, or any dataset with an audio feature).

The pipeline plans batches from lengths, so it needs random access: `array_record` datasets are read through
`builder.as_data_source`; `tfrecord` datasets (the TFDS default) through an index of record offsets built here
(a TFRecord is `uint64 length, uint32 crc, data, uint32 crc`), so neither needs converting. Lengths come from one
pass over the data, cached in `cache_dir` when given.
"""

import concurrent.futures
import dataclasses
import json
import os
import struct
from typing import Any, Callable, Sequence

import numpy as np

from data_pipelines import audio as audio_lib
from data_pipelines import storage
from data_pipelines.errors import AudioInputError
from data_pipelines.sources import DEFAULT_LANGUAGE, AudioIndex

_TEXT_KEYS = ("text", "sentence", "transcript", "transcription", "normalized_text")
_ID_KEYS = ("id", "path", "file_name")
# Datasets whose Audio feature does not record its rate: Common Voice's MP3s are decoded at 48 kHz.
_KNOWN_RATES = {"common_voice": 48_000}


def tfrecord_offsets(path: str) -> tuple[np.ndarray, np.ndarray]:
  """Byte offsets and data lengths of every record of an uncompressed TFRecord file (local or `gs://`).

  Reads only the 12-byte record headers. Returns (`[num_records]` int64 offsets, `[num_records]` int64 lengths).
  """
  offsets, lengths, pos, size = [], [], 0, storage.size(path)
  with storage.Path(path).open("rb") as f:
    while pos < size:
      header = f.read(12)
      if len(header) < 12:
        raise ValueError(f"{path}: truncated TFRecord header at byte {pos}")
      (length,) = struct.unpack("<Q", header[:8])
      offsets.append(pos)
      lengths.append(length)
      pos += 12 + length + 4
      f.seek(pos)
  return np.asarray(offsets, np.int64), np.asarray(lengths, np.int64)


@dataclasses.dataclass(frozen=True)
class TfrecordRecords:
  """Random access to the serialized records of TFRecord files (local or `gs://`: one ranged read per record)."""

  files: tuple[str, ...]
  file_of: np.ndarray  # [N] int64 file index of each record
  offsets: np.ndarray  # [N] int64 byte offset of each record in its file
  lengths: np.ndarray  # [N] int64 length of each record's data

  @classmethod
  def from_files(cls, files: Sequence[str], ranges: Sequence[tuple[int, int]] | None = None) -> "TfrecordRecords":
    """Indexes the records of `files` (reads only the record headers).

    Args:
      files: TFRecord paths.
      ranges: per file, `(skip, take)` to keep records [skip, skip + take) (TFDS sub-splits like "train[:10%]").
    """
    per_file = [tfrecord_offsets(f) for f in files]
    if ranges is not None:
      per_file = [(o[skip:skip + take], n[skip:skip + take]) for (o, n), (skip, take) in zip(per_file, ranges)]
    empty = [np.zeros(0, np.int64)]
    file_of = np.concatenate([np.full(len(o), k, np.int64) for k, (o, _) in enumerate(per_file)] + empty)
    return cls(tuple(files), file_of, np.concatenate([o for o, _ in per_file] + empty),
               np.concatenate([n for _, n in per_file] + empty))

  def __len__(self) -> int:
    return len(self.offsets)

  def __getitem__(self, i: int) -> bytes:
    return storage.read_range(self.files[self.file_of[i]], int(self.offsets[i]) + 12, int(self.lengths[i]))


@dataclasses.dataclass(frozen=True)
class TfdsReader:
  """Decodes the audio of record i of a TFDS split."""

  records: Any  # sequence of serialized records (tfrecord) or of decoded examples (array_record data source)
  features: Any  # the builder's FeaturesDict
  audio_key: str
  sample_rate: int
  label: str  # e.g. "librispeech/train_clean_100", for messages
  serialized: bool

  def example(self, i: int) -> dict[str, Any]:
    """Record i as a dict of numpy values."""
    record = self.records[int(i)]
    return self.features.deserialize_example_np(record) if self.serialized else record

  def read(self, i: int) -> tuple[np.ndarray, int]:
    """Decodes the audio of record i → (`[frames, channels]` float32, sample rate)."""
    return _audio_of(self.example(i)[self.audio_key], self.sample_rate, self.name(i))

  def name(self, i: int) -> str:
    """"dataset/split[i]", for messages."""
    return f"{self.label}[{int(i)}]"


def _audio_of(value: Any, sample_rate: int, name: str) -> tuple[np.ndarray, int]:
  """An Audio feature value → (`[frames, channels]` float32, rate). Integer audio is taken as 16-bit PCM."""
  if isinstance(value, (bytes, np.bytes_)):  # lazy_decode=True stores the encoded file
    return audio_lib.read_audio(bytes(value), name=name)
  x = np.asarray(value)
  if x.dtype.kind in "iu":
    x = x.astype(np.float32) / 32768.0
  x = x.astype(np.float32)
  if x.size == 0:
    raise AudioInputError("too_short", name, "zero-length clip")
  return (x[:, None] if x.ndim == 1 else x), sample_rate


def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def find_keys(features, audio_key: str | None = None, text_key: str | None = None) -> tuple[str, str | None]:
  """Picks the audio feature (the only `tfds.features.Audio`) and text feature (Text, or a known name)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if audio_key is None:
    audio = [k for k, f in features.items() if isinstance(f, tfds.features.Audio)]
    if len(audio) != 1:
      raise ValueError(f"expected exactly one Audio feature, found {audio}; pass audio_key")
    audio_key = audio[0]
  if text_key is None:
    text_key = next((k for k in _TEXT_KEYS if k in features), None)
  return audio_key, text_key


def tfds_index(
    name: str,
    *,
    split: str,
    data_dir: str | None = None,
    audio_key: str | None = None,
    text_key: str | None = None,
    sample_rate: int | None = None,
    language: str | Callable[[dict[str, Any]], str] | None = None,
    cache_dir: str | None = None,
    num_threads: int = 8,
) -> AudioIndex:
  """Lists a prepared TFDS dataset split, e.g. `tfds_index("librispeech", split="train_clean100", data_dir=...)`.

  Args:
    name: TFDS name, optionally "name/config:version".
    split: the split.
    data_dir: where the dataset is prepared.
    audio_key: the Audio feature (default: the only one).
    text_key: the transcript feature (default: "text", "sentence", ... if present); None leaves it unlabelled.
    sample_rate: the audio's rate (default: the Audio feature's `sample_rate`, else metadata, else 48 kHz for
      common_voice, else 16 kHz).
    language: a language for all utterances, a function of the example dict (e.g. `lambda ex: ex["locale"]`), or
      None: the example's "language" feature where present, else "und".
    cache_dir: where to cache the lengths pass (recommended for large datasets).
    num_threads: threads for the lengths pass.

  Returns:
    The index; ids are the examples' "id" feature where present, else "name/split[i]".
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(name, data_dir=data_dir)
  features = builder.info.features
  audio_key, text_key = find_keys(features, audio_key, text_key)
  rate = (sample_rate or features[audio_key].sample_rate or (builder.info.metadata or {}).get("sample_rate")
          or _KNOWN_RATES.get(builder.name) or audio_lib.TARGET_SAMPLE_RATE)
  label = f"{builder.info.full_name}/{split}"
  formats = {str(f.value if hasattr(f, "value") else f) for f in builder.info.available_file_formats()} | {
      str(getattr(builder.info.file_format, "value", builder.info.file_format))}
  if "array_record" in formats:
    records, serialized = builder.as_data_source(split=split, file_format="array_record"), False
  else:
    shards = builder.info.splits[split].file_instructions  # handles sub-splits such as "train[:10%]"
    records = TfrecordRecords.from_files([os.fspath(f.filename) for f in shards], [(f.skip, f.take) for f in shards])
    serialized = True
  reader = TfdsReader(records, features, audio_key, int(rate), label, serialized)
  cache = storage.Path(cache_dir) / (label.replace("/", "_").replace(":", "_") + ".json") if cache_dir else None
  if cache is not None and cache.exists():
    meta = json.loads(cache.read_text())
  else:
    meta = _scan(reader, len(records), text_key, language, num_threads)
    if cache is not None:
      cache.parent.mkdir(parents=True, exist_ok=True)
      storage.write_text(cache, json.dumps(meta))
  errors = {i: AudioInputError(*e) for i, e in meta["errors"]}
  return AudioIndex(ids=tuple(meta["ids"]), frames=np.asarray(meta["frames"], np.int64),
                    sample_rates=np.asarray(meta["rates"], np.int64), channels=np.asarray(meta["channels"], np.int64),
                    transcripts=tuple(meta["texts"]) if text_key else None, languages=tuple(meta["languages"]),
                    reader=reader, errors=errors)


def _scan(reader: TfdsReader, n: int, text_key, language, num_threads) -> dict[str, Any]:
  """One pass over the split: lengths, rates, channels, ids, transcripts, languages, listing errors."""

  def one(i):
    ex = reader.example(i)
    uid = next((_text(ex[k]) for k in _ID_KEYS if k in ex), reader.name(i))
    text = _text(ex[text_key]) if text_key else None
    if language is None:
      lang = _text(ex["language"]) if "language" in ex else DEFAULT_LANGUAGE
    else:
      lang = language(ex) if callable(language) else language
    value = ex[reader.audio_key]
    try:
      if isinstance(value, (bytes, np.bytes_)):
        info = audio_lib.audio_info(bytes(value), name=reader.name(i))
        shape = (info.frames, info.channels, info.sample_rate)
      else:
        arr = np.asarray(value)
        shape = (arr.shape[0], 1 if arr.ndim == 1 else arr.shape[1], reader.sample_rate)
      error = None
    except AudioInputError as e:
      shape, error = (-1, 0, 0), [e.kind, e.source, e.detail]
    return uid, text, lang, shape, error

  with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
    rows = list(pool.map(one, range(n)))
  return {"ids": [r[0] for r in rows], "texts": [r[1] for r in rows], "languages": [r[2] for r in rows],
          "frames": [r[3][0] for r in rows], "channels": [r[3][1] for r in rows], "rates": [r[3][2] for r in rows],
          "errors": [[i, r[4]] for i, r in enumerate(rows) if r[4] is not None]}
