"""Checkpoints that do not fit their configuration fail with an error naming the key."""

import json

import pytest
from safetensors.numpy import load_file, save_file

import wav2vec_jax
from wav2vec_jax.interop.convert import CheckpointMismatchError
import hf_reference as ref


@pytest.fixture(name="hf_dir")
def _hf_dir(tmp_path):
  ref.save_reference(tmp_path, "base", "Wav2Vec2ForCTC")
  return tmp_path


def _edit_weights(directory, edit):
  path = directory / "model.safetensors"
  state = load_file(str(path))
  edit(state)
  save_file(state, str(path), metadata={"format": "pt"})


def test_wrong_shape_names_the_key(hf_dir):
  key = "wav2vec2.encoder.layers.1.feed_forward.intermediate_dense.weight"
  _edit_weights(hf_dir, lambda s: s.__setitem__(key, s[key][:50]))
  with pytest.raises(CheckpointMismatchError, match=r"intermediate_dense\.weight.*\(50, 64\)"):
    wav2vec_jax.load_pretrained(str(hf_dir))


def test_unknown_key_is_named(hf_dir):
  _edit_weights(hf_dir, lambda s: s.__setitem__("wav2vec2.encoder.layers.9.extra.weight", s["lm_head.bias"]))
  with pytest.raises(CheckpointMismatchError, match=r"layers\.9\.extra\.weight"):
    wav2vec_jax.load_pretrained(str(hf_dir))


def test_missing_key_is_named(hf_dir):
  _edit_weights(hf_dir, lambda s: s.pop("lm_head.weight"))
  with pytest.raises(CheckpointMismatchError, match=r"'lm_head\.weight' is missing"):
    wav2vec_jax.load_pretrained(str(hf_dir))


def test_config_that_does_not_match_the_weights(hf_dir):
  config = json.loads((hf_dir / "config.json").read_text())
  config["num_hidden_layers"] = 2
  (hf_dir / "config.json").write_text(json.dumps(config))
  with pytest.raises(CheckpointMismatchError, match=r"encoder\.layers\.2\."):
    wav2vec_jax.load_pretrained(str(hf_dir))


def test_missing_files_are_clear(tmp_path):
  with pytest.raises(FileNotFoundError, match="no such file"):
    wav2vec_jax.load_pretrained(str(tmp_path / "nope"))
  with pytest.raises(FileNotFoundError, match="no config.json"):
    wav2vec_jax.load_pretrained(str(tmp_path))
