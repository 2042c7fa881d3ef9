"""Flax Linen modules of wav2vec 2.0: feature encoder, transformer, quantizer and heads."""

from wav2vec_jax.models.config import ModelConfig, get_variant
from wav2vec_jax.models.wav2vec2 import Wav2Vec2ForCTC, Wav2Vec2ForPreTraining, Wav2Vec2Model, Wav2Vec2Output

__all__ = [
    "ModelConfig",
    "get_variant",
    "Wav2Vec2Model",
    "Wav2Vec2ForPreTraining",
    "Wav2Vec2ForCTC",
    "Wav2Vec2Output",
]
