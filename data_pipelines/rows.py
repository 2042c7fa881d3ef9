"""Decoding the rows of one planned batch into fixed-shape numpy arrays (runs inside `tf.numpy_function`).

Each row: decode → mixdown → resample → (normalise) → crop (pre-training, seeded per row) or pad (fine-tuning).
When pre-training crops a 16 kHz file without normalisation, only the crop window is decoded (the reader seeks), which
gives the same samples for less work; normalisation needs the whole utterance (fairseq normalises before cropping).
"""

import threading

import numpy as np
from absl import logging

from data_pipelines import audio as audio_lib
from data_pipelines import sources
from data_pipelines.batching import BucketSpec
from data_pipelines.checks import CheckedIndex
from data_pipelines.errors import AudioInputError
from data_pipelines.input_config import InputConfig


class AudioCache:
  """Decoded 16 kHz mono waveforms kept in memory up to a byte budget (tf.data's `cache()` for small corpora).

  Holds audio after mixdown and resampling, before normalisation and cropping, so batches are the same with or
  without it. Thread-safe; once the budget is full, further items are decoded every time.
  """

  def __init__(self, max_bytes: int):
    self.max_bytes = max_bytes
    self.bytes = 0
    self._items: dict[int, np.ndarray] = {}
    self._lock = threading.Lock()

  def get(self, item: int) -> np.ndarray | None:
    """The cached `[samples]` float32 waveform of `item`, or None."""
    return self._items.get(item)

  def put(self, item: int, wave: np.ndarray) -> None:
    """Keeps `wave` (`[samples]` float32) if it fits the budget."""
    with self._lock:
      if item not in self._items and self.bytes + wave.nbytes <= self.max_bytes:
        self._items[item] = wave
        self.bytes += wave.nbytes


def aligned_empty(shape: tuple[int, ...], dtype, alignment: int = 64) -> np.ndarray:
  """An uninitialised array of `shape` and `dtype` whose data starts on an `alignment`-byte boundary.

  tf.numpy_function's conversion (TensorFlow's NdarrayToTensor) wraps an aligned array as it is and copies any other
  while holding the GIL (64 bytes: Eigen's alignment in AVX-512 builds). A batch's waveform and mask are the bulk of
  what the decode returns: aligned, the threads decoded 4-6% faster and the parent of the decode workers held the GIL
  0.17 of the time instead of 0.20 (README, Speed: Input).
  """
  dtype = np.dtype(dtype)
  nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  raw = np.empty(nbytes + alignment, np.uint8)
  start = -raw.ctypes.data % alignment
  return raw[start:start + nbytes].view(dtype).reshape(shape)


def row_rng(seed: int, epoch: int, step: int, row: int) -> np.random.Generator:
  """The crop randomness of one global row: independent of threads, prefetching and the number of hosts."""
  return np.random.default_rng([seed, epoch, step, row])


def decode_row(data: CheckedIndex, item: int, size: int, config: InputConfig, rng: np.random.Generator | None,
               cache: AudioCache | None = None) -> np.ndarray:
  """The samples of one row.

  Args:
    data: the checked index.
    item: position in `data.index`.
    size: the bucket length.
    config: decode settings (sample rate, resampling, mixdown, normalisation).
    rng: crop randomness (pre-training), or None to keep the start (fine-tuning).
    cache: decoded audio kept across epochs, or None.

  Returns:
    `[n]` float32 with n ≤ size (n < size: padding follows).

  Raises:
    AudioInputError: the file cannot be decoded or fails a check.
  """
  index, name = data.index, data.index.name(item)
  if cache is not None:
    x = cache.get(item)
    if x is None:
      audio, rate = index.reader.read(item)
      x = audio_lib.postprocess(audio, rate, name=name, target_sample_rate=config.sample_rate,
                                allow_resample=config.allow_resample, mono_mixdown=config.mono_mixdown)
      cache.put(item, x)
    x = audio_lib.normalize(x) if config.normalize else x
    offset = audio_lib.crop_offset(x.shape[0], size, rng)
    return x[offset:offset + size]
  window = sources.window_reader(index.reader, item) if rng is not None and not config.normalize else None
  if window is not None and index.sample_rates[item] == config.sample_rate:
    offset = audio_lib.crop_offset(int(data.num_samples[item]), size, rng)  # header length = decoded length
    audio, rate = window[0].read_window(window[1], offset, size)
    offset = 0
  else:
    audio, rate = index.reader.read(item)
  x = audio_lib.postprocess(audio, rate, name=name, target_sample_rate=config.sample_rate,
                            allow_resample=config.allow_resample, mono_mixdown=config.mono_mixdown,
                            normalize_audio=config.normalize)
  if window is None or index.sample_rates[item] != config.sample_rate:
    offset = audio_lib.crop_offset(x.shape[0], size, rng)
  return x[offset:offset + size]


def load_rows(data: CheckedIndex, language_ids: np.ndarray, spec: BucketSpec, config: InputConfig, *, epoch: int,
              step: int, bucket: int, rows: np.ndarray, row_offset: int, crop: bool,
              cache: AudioCache | None = None):
  """Decodes this host's rows of one planned batch.

  Args:
    data: the checked index (lengths, labels).
    language_ids: `[N]` language id of each item.
    spec: the bucket shapes.
    config: pipeline settings.
    epoch, step: the batch's position (seeds the crops).
    bucket: the batch's bucket.
    rows: `[B]` int64 items (-1: empty row).
    row_offset: global row number of `rows[0]` (host p starts at p·B).
    crop: pre-training crop (True) or fine-tuning pad (False).
    cache: decoded audio kept across epochs, or None.

  Returns:
    (waveform `[B, S]` float32, attention_mask `[B, S]` int32, language `[B]` int32, utterance `[B]` int32,
    labels `[B, L]` int32, label_lengths `[B]` int32, errors `[B]` int32), S and L the bucket's lengths; rows that
    fail to decode with on_error="skip" are left empty (mask 0, utterance -1) and flagged in `errors`.
  """
  size = spec.lengths[bucket]
  wave, mask = aligned_empty((rows.size, size), np.float32), aligned_empty((rows.size, size), np.int32)
  wave.fill(0)
  mask.fill(0)
  language = np.full(rows.size, -1, np.int32)
  errors = np.zeros(rows.size, np.int32)
  labels = np.zeros((rows.size, spec.label_lengths[bucket] if spec.label_lengths else 0), np.int32)
  label_lengths = np.zeros(rows.size, np.int32)
  for r, item in enumerate(rows.tolist()):
    if item < 0:
      continue
    rng = row_rng(config.seed, epoch, step, row_offset + r) if crop else None
    try:
      x = decode_row(data, item, size, config, rng, cache)
    except AudioInputError as e:
      if config.on_error == "raise":
        raise
      logging.warning("Skipping bad input (row left empty): %s", e)
      errors[r] = 1
      continue
    wave[r, :x.shape[0]] = x
    mask[r, :x.shape[0]] = 1
    language[r] = language_ids[item]
    if data.labels is not None:
      label_lengths[r] = data.labels[item].size
      labels[r, :label_lengths[r]] = data.labels[item]
  utterance = np.where(errors > 0, -1, rows).astype(np.int32)
  return wave, mask, language, utterance, labels, label_lengths, errors
