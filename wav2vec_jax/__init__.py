"""wav2vec_jax: wav2vec 2.0 / XLSR in JAX/Flax.

Public API:
  load_pretrained(path) -> (model, variables)   Hugging Face dir, fairseq .pt, or a wav2vec_jax checkpoint
  save_pretrained(directory, model, variables)
  ModelConfig, get_variant, Wav2Vec2Model, Wav2Vec2ForPreTraining, Wav2Vec2ForCTC
  Recognizer.from_pretrained(ctc_checkpoint)     .transcribe_file(path) -> text and timed words; .log_probs(waveform)
"""

from wav2vec_jax.inference.recognizer import Recognizer
from wav2vec_jax.interop.loading import load_pretrained, save_pretrained
from wav2vec_jax.models import (ModelConfig, Wav2Vec2ForCTC, Wav2Vec2ForPreTraining, Wav2Vec2Model, Wav2Vec2Output,
                                get_variant)

__all__ = [
    "load_pretrained",
    "save_pretrained",
    "ModelConfig",
    "get_variant",
    "Wav2Vec2Model",
    "Wav2Vec2ForPreTraining",
    "Wav2Vec2ForCTC",
    "Wav2Vec2Output",
    "Recognizer",
]
