"""Audio transforms, eagerly and inside tf.data, and the bad-input errors they raise."""

import os

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from data_pipelines import audio
from data_pipelines import synthetic
from data_pipelines.errors import AudioInputError

tf.config.set_visible_devices([], "GPU")


def _in_tf_data(fn, *inputs, dtype=tf.float32):
  """Runs a numpy transform inside a tf.data map, as the pipeline does, and returns its single output."""
  ds = tf.data.Dataset.from_tensors(tuple(inputs)).map(
      lambda *xs: tf.numpy_function(fn, list(xs), dtype, stateful=False))
  return next(iter(ds.as_numpy_iterator()))


@pytest.mark.parametrize("fmt,atol", [("flac", 1e-4), ("wav", 1e-4), ("ogg", None), ("mp3", None)])
def test_decode_formats_eager_and_tf_data(tmp_path, fmt, atol):
  x = synthetic.tone(8000, 16000, seed=1)
  path = str(tmp_path / f"a.{fmt}")
  sf.write(path, x, 16000)
  eager = audio.load_waveform(path)
  assert eager.dtype == np.float32 and eager.ndim == 1
  if atol is not None:  # lossless formats give the samples back
    np.testing.assert_allclose(eager, x, atol=atol)
  else:  # lossy codecs: the same samples (no codec delay is left after decoding), up to a few percent of noise
    n = min(eager.shape[0], x.shape[0])
    assert n > x.shape[0] - 2000 and np.linalg.norm(eager[:n] - x[:n]) < 0.1 * np.linalg.norm(x[:n])
  ds = tf.data.Dataset.from_tensor_slices([path]).map(audio.tf_load_waveform)
  np.testing.assert_array_equal(next(iter(ds.as_numpy_iterator())), eager)


def test_mono_mixdown_eager_and_tf_data():
  stereo = np.stack([np.ones(10, np.float32), 3 * np.ones(10, np.float32)], axis=1)
  np.testing.assert_allclose(audio.to_mono(stereo), 2.0)
  np.testing.assert_allclose(_in_tf_data(audio.to_mono, stereo), 2.0)
  np.testing.assert_array_equal(audio.to_mono(stereo[:, :1]), stereo[:, 0])


def test_resample_length_and_content_eager_and_tf_data():
  sr_in = 22050
  t = np.arange(sr_in) / sr_in
  x = np.sin(2 * np.pi * 440 * t).astype(np.float32)
  y = audio.resample(x, sr_in, 16000)
  assert y.shape == (audio.resampled_length(sr_in, sr_in, 16000),) == (16000,)
  ref = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
  assert np.abs(y[200:-200] - ref[200:-200]).max() < 1e-2  # a 440 Hz tone survives 22.05 → 16 kHz
  np.testing.assert_allclose(_in_tf_data(lambda a: audio.resample(a, sr_in, 16000), x), y)
  assert audio.resample(x, 16000, 16000) is not None and audio.resample(x, 16000, 16000).shape == x.shape
  np.testing.assert_array_equal(audio.resampled_length(np.array([22050, 400]), np.array([22050, 44100])), [16000, 145])


def test_normalize_matches_layer_norm_eager_and_tf_data():
  x = np.random.default_rng(0).normal(3.0, 2.0, 5000).astype(np.float32)
  y = audio.normalize(x)
  ref = (x - x.mean()) / np.sqrt(x.var() + 1e-5)
  np.testing.assert_allclose(y, ref, atol=1e-5)
  assert abs(y.mean()) < 1e-5 and abs(y.std() - 1) < 1e-3
  np.testing.assert_allclose(_in_tf_data(audio.normalize, x), y)


def test_crop_and_pad_eager_and_tf_data():
  x = np.arange(10, dtype=np.float32)
  wave, mask = audio.crop_or_pad(x, 4, offset=3)
  np.testing.assert_array_equal(wave, [3, 4, 5, 6])
  assert mask.dtype == np.int32 and mask.tolist() == [1, 1, 1, 1]
  wave, mask = audio.crop_or_pad(x, 13)
  np.testing.assert_array_equal(wave[10:], 0)
  assert mask.tolist() == [1] * 10 + [0] * 3
  tf_wave = _in_tf_data(lambda a: audio.crop_or_pad(a, 13)[0], x)
  np.testing.assert_array_equal(tf_wave, wave)
  rng = lambda: np.random.default_rng(5)
  assert audio.crop_offset(10, 4, rng()) == audio.crop_offset(10, 4, rng())  # seeded → deterministic
  assert {audio.crop_offset(10, 4, np.random.default_rng(s)) for s in range(50)} == set(range(7))  # uniform range
  assert audio.crop_offset(10, 4, None) == 0 and audio.crop_offset(3, 4, rng()) == 0


def test_load_waveform_resamples_mixes_and_normalises(tmp_path):
  path = str(tmp_path / "stereo8k.wav")
  sf.write(path, synthetic.tone(4000, 8000, seed=2, channels=2), 8000)
  y = audio.load_waveform(path, normalize_audio=True)
  assert y.shape == (8000,) and abs(y.mean()) < 1e-4 and abs(y.std() - 1) < 1e-2
  with pytest.raises(AudioInputError, match=r"stereo8k\.wav: sample_rate: 8000 Hz"):
    audio.load_waveform(path, allow_resample=False)
  with pytest.raises(AudioInputError, match=r"stereo8k\.wav: multichannel: 2 channels"):
    audio.load_waveform(path, mono_mixdown=False)


def _write_bad_files(folder):
  good = synthetic.tone(16000, 16000, seed=3)
  sf.write(os.path.join(folder, "good.flac"), good, 16000)
  data = open(os.path.join(folder, "good.flac"), "rb").read()
  files = {
      "empty.flac": (b"", "empty_file"),
      "garbage.flac": (os.urandom(2000), "unreadable"),
      "truncated.flac": (data[: len(data) // 2], "decode_error"),
  }
  for name, (content, _) in files.items():
    with open(os.path.join(folder, name), "wb") as f:
      f.write(content)
  sf.write(os.path.join(folder, "short.flac"), good[:300], 16000)
  files["short.flac"] = (None, "too_short")
  sf.write(os.path.join(folder, "zero.wav"), good[:0], 16000)
  files["zero.wav"] = (None, "too_short")
  poisoned = good.astype(np.float32).copy()
  poisoned[[10, 5000]] = [np.nan, np.inf]
  sf.write(os.path.join(folder, "nan.wav"), poisoned, 16000, subtype="FLOAT")  # float WAV stores NaN as is
  files["nan.wav"] = (None, "decode_error")
  return {os.path.join(folder, k): kind for k, (_, kind) in files.items()}


def test_bad_files_give_clear_errors_eager_and_in_tf_data(tmp_path):
  for path, kind in _write_bad_files(str(tmp_path)).items():
    with pytest.raises(AudioInputError) as err:
      audio.load_waveform(path)
    assert err.value.kind == kind and path in str(err.value)
    ds = tf.data.Dataset.from_tensor_slices([path]).map(audio.tf_load_waveform)
    with pytest.raises(tf.errors.OpError, match=os.path.basename(path)):  # the message reaches tf.data's error
      next(iter(ds))
