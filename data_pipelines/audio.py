"""Audio transforms: decode, mono mixdown, resampling, normalisation, crop and pad.

Pure numpy functions, so each is testable eagerly; the pipeline runs them inside `tf.numpy_function` (the `tf_*`
wrappers here show how and are what the tests use to run them inside tf.data). Every failure is an
`AudioInputError` naming the file. Paths may be local or `gs://` URLs (read through `storage`, never TensorFlow's
GCS client).
"""

import contextlib
import dataclasses
import io
import os
from typing import BinaryIO

import numpy as np

from data_pipelines import storage
from data_pipelines.errors import AudioInputError

TARGET_SAMPLE_RATE = 16_000
# The conv feature encoder's receptive field (kernel 10 stride 5, then 3/2 ×4, 2/2 ×2): shorter clips give no frame.
RECEPTIVE_FIELD = 400
# fairseq normalises with F.layer_norm(wav, wav.shape), whose epsilon is 1e-5.
NORMALIZE_EPS = 1e-5

Source = str | os.PathLike | bytes | BinaryIO


@dataclasses.dataclass(frozen=True)
class AudioInfo:
  """Header facts of an audio file.

  Attributes:
    frames: samples per channel at `sample_rate`.
    sample_rate: Hz.
    channels: number of channels.
  """

  frames: int
  sample_rate: int
  channels: int


def _name(source: Source, name: str | None) -> str:
  if name is not None:
    return name
  if isinstance(source, (str, os.PathLike)):
    return os.fspath(source)
  return "<in-memory audio>"


@contextlib.contextmanager
def _opened(source: Source, name: str):
  """What soundfile reads for `source`: a local path as is (libsndfile opens it itself), an object-store path as a
  binary file object (seekable, so headers and windows fetch only what they need), bytes as a buffer.

  Raises:
    AudioInputError: "empty_file" for zero bytes; "unreadable" for an object that cannot be opened.
  """
  if isinstance(source, (str, os.PathLike)) and storage.is_remote(source):
    try:
      f = storage.Path(source).open("rb")
    except Exception as e:  # FileNotFoundError, or the store's own errors once its client's retries are spent
      raise AudioInputError("unreadable", name, f"cannot open the object ({type(e).__name__}: {e})") from e
    with f:
      if f.seek(0, io.SEEK_END) == 0:
        raise AudioInputError("empty_file", name, "the file has zero bytes")
      f.seek(0)
      yield f
    return
  empty = (isinstance(source, bytes) and not source) or (
      isinstance(source, (str, os.PathLike)) and os.path.isfile(source) and os.path.getsize(source) == 0
  )
  if empty:
    raise AudioInputError("empty_file", name, "the file has zero bytes")
  yield io.BytesIO(source) if isinstance(source, bytes) else source


def audio_info(source: Source, *, name: str | None = None) -> AudioInfo:
  """Reads the header of an audio file (FLAC, WAV, OGG, MP3, ...) without decoding it.

  Args:
    source: a path (local or `gs://`), the file's bytes, or a binary file object.
    name: how errors name the source (defaults to the path).

  Returns:
    The file's `AudioInfo`.

  Raises:
    AudioInputError: kind "empty_file" or "unreadable".
  """
  import soundfile as sf  # pylint: disable=g-import-not-at-top  (decoders load on use: the model imports without them)
  name = _name(source, name)
  with _opened(source, name) as f:
    try:
      info = sf.info(f)
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError or TypeError depending on the problem
      raise AudioInputError("unreadable", name, f"cannot read the audio header ({e})") from e
  return AudioInfo(frames=int(info.frames), sample_rate=int(info.samplerate), channels=int(info.channels))


def read_audio(source: Source, *, name: str | None = None, start: int = 0,
               frames: int = -1) -> tuple[np.ndarray, int]:
  """Decodes an audio file, or the window `[start, start + frames)` of it (seeking, so the rest is not decoded).

  Args:
    source: a path (local or `gs://`), the file's bytes, or a binary file object.
    name: how errors name the source (defaults to the path).
    start: first frame to read.
    frames: number of frames to read; -1 reads to the end.

  Returns:
    `(audio, sample_rate)`: audio `[frames, channels]` float32 in [-1, 1], and its sample rate in Hz.

  Raises:
    AudioInputError: kind "empty_file", "unreadable" (no usable header) or "decode_error" (truncated/corrupt body).
  """
  import soundfile as sf  # pylint: disable=g-import-not-at-top
  name = _name(source, name)
  with _opened(source, name) as src:
    try:
      f = sf.SoundFile(src)
    except Exception as e:
      raise AudioInputError("unreadable", name, f"cannot read the audio header ({e})") from e
    with f:
      try:
        if start:
          f.seek(start)
        audio = f.read(frames, dtype="float32", always_2d=True)
      except Exception as e:
        raise AudioInputError("decode_error", name, f"decoding failed, file truncated or corrupt? ({e})") from e
      if audio.shape[0] == 0 and f.frames > start:
        raise AudioInputError("decode_error", name, f"header promises {f.frames} frames but none decoded")
      return audio, int(f.samplerate)


def to_mono(audio: np.ndarray) -> np.ndarray:
  """Mixes down to one channel by averaging channels (as fairseq's RawAudioDataset does).

  Args:
    audio: `[frames, channels]` or `[frames]` float.

  Returns:
    `[frames]` float32.
  """
  audio = np.asarray(audio, np.float32)
  if audio.ndim == 1:
    return audio
  return audio[:, 0] if audio.shape[1] == 1 else audio.mean(axis=1)


def resampled_length(frames: int | np.ndarray, orig_sample_rate: int | np.ndarray, target_sample_rate: int = TARGET_SAMPLE_RATE):
  """Number of samples `resample` returns (soxr's rounding): round(frames · target / orig).

  Args:
    frames: int or `[N]` integer array of input lengths.
    orig_sample_rate: int or `[N]` integer array, Hz.
    target_sample_rate: Hz.

  Returns:
    int or `[N]` int64 array.
  """
  out = np.rint(np.asarray(frames, np.float64) * target_sample_rate / np.asarray(orig_sample_rate, np.float64))
  return int(out) if np.ndim(out) == 0 else out.astype(np.int64)


def resample(audio: np.ndarray, orig_sample_rate: int, target_sample_rate: int = TARGET_SAMPLE_RATE) -> np.ndarray:
  """Band-limited resampling (soxr "HQ", librosa's default back end).

  Args:
    audio: `[frames]` float.
    orig_sample_rate: Hz.
    target_sample_rate: Hz.

  Returns:
    `[resampled_length(frames, orig, target)]` float32 (identity when the rates match).
  """
  audio = np.asarray(audio, np.float32)
  if orig_sample_rate == target_sample_rate:
    return audio
  import soxr  # pylint: disable=g-import-not-at-top
  out = soxr.resample(audio, orig_sample_rate, target_sample_rate, quality="HQ").astype(np.float32)
  return fit_length(out, resampled_length(audio.shape[0], orig_sample_rate, target_sample_rate))


def normalize(audio: np.ndarray) -> np.ndarray:
  """Per-utterance zero mean, unit variance (fairseq `normalize=True`, LARGE/XLSR): layer norm without affine.

  Args:
    audio: `[samples]` float.

  Returns:
    `[samples]` float32, (audio - mean) / sqrt(var + 1e-5), computed in float64.
  """
  audio = np.asarray(audio, np.float64)
  if audio.size == 0:
    return audio.astype(np.float32)
  return ((audio - audio.mean()) / np.sqrt(audio.var() + NORMALIZE_EPS)).astype(np.float32)


def fit_length(audio: np.ndarray, length: int) -> np.ndarray:
  """Trims or zero-pads the end of `audio` to exactly `length` samples. `[n]` → `[length]`, same dtype."""
  if audio.shape[0] >= length:
    return audio[:length]
  return np.pad(audio, (0, length - audio.shape[0]))


def crop_offset(length: int, size: int, rng: np.random.Generator | None) -> int:
  """Start of a `size`-sample crop from a `length`-sample clip: uniform if `rng` is given, else 0 (eval)."""
  if length <= size or rng is None:
    return 0
  return int(rng.integers(0, length - size + 1))


def crop_or_pad(audio: np.ndarray, size: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Takes `audio[offset:offset + size]`, zero-padding the end when too short.

  Args:
    audio: `[samples]` float32.
    size: output length.
    offset: crop start.

  Returns:
    `(waveform, mask)`: waveform `[size]` float32; mask `[size]` int32, 1 on real samples, 0 on padding.
  """
  piece = np.asarray(audio, np.float32)[offset:offset + size]
  mask = np.zeros(size, np.int32)
  mask[:piece.shape[0]] = 1
  return fit_length(piece, size), mask


def load_waveform(
    source: Source,
    *,
    name: str | None = None,
    target_sample_rate: int = TARGET_SAMPLE_RATE,
    allow_resample: bool = True,
    mono_mixdown: bool = True,
    normalize_audio: bool = False,
) -> np.ndarray:
  """Decodes a file into a mono waveform at the target rate: read → mixdown → resample → (normalise).

  Args:
    source: a path, the file's bytes, or a binary file object.
    name: how errors name the source (defaults to the path).
    target_sample_rate: Hz.
    allow_resample: if False, a file at another rate is an error instead of being resampled.
    mono_mixdown: if False, a multichannel file is an error instead of being averaged to mono.
    normalize_audio: per-utterance zero mean / unit variance (after resampling, before any crop, as fairseq).

  Returns:
    `[samples]` float32 at `target_sample_rate`.

  Raises:
    AudioInputError: "empty_file", "unreadable", "decode_error", "sample_rate", "multichannel" or "too_short".
  """
  name = _name(source, name)
  audio, sample_rate = read_audio(source, name=name)
  return postprocess(audio, sample_rate, name=name, target_sample_rate=target_sample_rate,
                     allow_resample=allow_resample, mono_mixdown=mono_mixdown, normalize_audio=normalize_audio)


def postprocess(audio: np.ndarray, sample_rate: int, *, name: str, target_sample_rate: int = TARGET_SAMPLE_RATE,
                allow_resample: bool = True, mono_mixdown: bool = True, normalize_audio: bool = False) -> np.ndarray:
  """The part of `load_waveform` after decoding, for audio that arrives already decoded (TFDS).

  Args:
    audio: `[frames, channels]` or `[frames]` float32.
    sample_rate: Hz of `audio`.
    name: how errors name the source.
    target_sample_rate, allow_resample, mono_mixdown, normalize_audio: as in `load_waveform`.

  Returns:
    `[samples]` float32 at `target_sample_rate`.
  """
  if audio.ndim == 2 and audio.shape[1] > 1 and not mono_mixdown:
    raise AudioInputError("multichannel", name, f"{audio.shape[1]} channels and mono mixdown is disabled")
  wave = to_mono(audio)
  bad = int(np.size(wave) - np.count_nonzero(np.isfinite(wave)))
  if bad:  # one NaN would make every batch holding this clip a skipped update
    raise AudioInputError("decode_error", name, f"{bad} non-finite samples (NaN or inf): the file is corrupt; "
                          "re-encode or remove it")
  if sample_rate != target_sample_rate:
    if not allow_resample:
      raise AudioInputError("sample_rate", name, f"{sample_rate} Hz, expected {target_sample_rate} Hz (resampling disabled)")
    wave = resample(wave, sample_rate, target_sample_rate)
  if wave.shape[0] < RECEPTIVE_FIELD:
    raise AudioInputError("too_short", name, f"{wave.shape[0]} samples, fewer than the {RECEPTIVE_FIELD}-sample receptive field")
  return normalize(wave) if normalize_audio else wave


def tf_load_waveform(path, **kwargs):
  """`load_waveform` as a TensorFlow op, for `tf.data.Dataset.map`.

  Args:
    path: scalar tf.string tensor, the file path.
    **kwargs: keyword arguments of `load_waveform`.

  Returns:
    `[samples]` tf.float32 tensor.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (keeps TF out of numpy-only users)

  def _load(p):
    return load_waveform(p.decode("utf-8"), **kwargs)

  wave = tf.numpy_function(_load, [path], tf.float32, stateful=False)
  wave.set_shape([None])
  return wave
