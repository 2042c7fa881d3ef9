"""Helpers that build `transformers` reference models (random init, fixed seed) for parity tests."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ARCHITECTURES = {
    "Wav2Vec2Model": transformers.Wav2Vec2Model,
    "Wav2Vec2ForPreTraining": transformers.Wav2Vec2ForPreTraining,
    "Wav2Vec2ForCTC": transformers.Wav2Vec2ForCTC,
}


def small_config(style: str, **overrides):
  """A small transformers config in BASE style (group norm, post-LN) or LARGE style (layer norm, pre-LN, bias)."""
  kwargs = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=96, conv_dim=(32,) * 7,
                num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, codevector_dim=32,
                proj_codevector_dim=24, num_codevectors_per_group=20, num_codevector_groups=2, vocab_size=12,
                mask_time_prob=0.65, num_negatives=10)
  if style == "large":
    kwargs.update(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
  elif style != "base":
    raise ValueError(style)
  kwargs.update(overrides)
  return transformers.Wav2Vec2Config(**kwargs)


def save_reference(directory, style: str, architecture: str, seed: int = 0, **overrides):
  """Builds a randomly initialised transformers model, saves it to `directory`, returns it in eval mode."""
  torch.manual_seed(seed)
  model = ARCHITECTURES[architecture](small_config(style, **overrides)).eval()
  model.save_pretrained(directory)
  return model


def padded_batch(seed: int = 0, samples: int = 8000, lengths=(8000, 5000, 3000)):
  """A float32 waveform batch `[len(lengths), samples]` zero-padded, and its int64 attention mask."""
  rng = np.random.RandomState(seed)
  waveform = rng.randn(len(lengths), samples).astype(np.float32)
  mask = (np.arange(samples)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)
  return (waveform * mask).astype(np.float32), mask
