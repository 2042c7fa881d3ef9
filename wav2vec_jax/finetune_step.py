"""The CTC fine-tuning step: a pure function `(state, batch, rng) -> (state, metrics)` for Wav2Vec2ForCTC.

Same contract as `pretrain_step.train_step`: per-step randomness from `fold_in(rng, state.step)` split into the
model's "dropout" and "mask" (SpecAugment) streams, the learning rate from `state.step`, and a non-finite loss,
logit or gradient leaves params and optimizer state untouched and is counted in the TrainState.

The gradient is that of the summed zero-infinity CTC loss divided by the number of sentences (fairseq's
`sentence_avg: true` of the wav2vec 2.0 fine-tuning recipes; see `losses.ctc_loss` for transformers' reduction).

Freezing is decided by `trainable_mask`, used both by the optimiser (`optim.adam(..., trainable_mask=...)`) and by
the step, which drops the gradients of frozen leaves so that XLA removes their backward pass (as fairseq runs the
frozen wav2vec 2.0 trunk under `torch.no_grad()` during the first `freeze_finetune_updates`).
"""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from wav2vec_jax import losses
from wav2vec_jax import train_state
from wav2vec_jax.train_state import TrainState

# The conv feature encoder is never fine-tuned (fairseq `feature_grad_mult: 0.0`, transformers'
# `freeze_feature_encoder()`).
_CONV_ENCODER = ("wav2vec2", "feature_extractor")


@dataclasses.dataclass(frozen=True)
class StepOptions:
  """Static settings of the step (hashable; closed over, never traced)."""

  # Freeze the whole wav2vec2 trunk (only the CTC head trains): the first `freeze_finetune_updates` (10k) of the
  # recipes. The optimiser must be built with the same `trainable_mask(params, freeze_encoder)`.
  freeze_encoder: bool = False


def _path_names(path) -> tuple[str, ...]:
  return tuple(str(getattr(entry, "key", getattr(entry, "name", entry))) for entry in path)


def trainable_mask(params, freeze_encoder: bool):
  """Which parameters fine-tuning updates.

  Args:
    params: the Wav2Vec2ForCTC `params` tree (arrays, shape structs or logical-axis boxes).
    freeze_encoder: also freeze everything under `wav2vec2` (feature projection, mask embedding, transformer), so
      only `lm_head` trains.
  Returns:
    A tree of Python bools with the structure of `params`: False under `wav2vec2/feature_extractor` always, and
    under `wav2vec2` when `freeze_encoder`.
  """
  frozen_prefix = _CONV_ENCODER[:1] if freeze_encoder else _CONV_ENCODER
  return jax.tree_util.tree_map_with_path(
      lambda path, _: _path_names(path)[:len(frozen_prefix)] != frozen_prefix, params)


def _loss_fn(params, model, batch, key):
  """Sentence-averaged CTC loss; aux = (per-sentence losses `[batch]`, logits all finite `[]` bool)."""
  k_dropout, k_mask = jax.random.split(key)
  outputs = model.apply({"params": params}, batch["waveform"], batch["attention_mask"], deterministic=False,
                        rngs={"dropout": k_dropout, "mask": k_mask})
  loss_sum, per_sentence = losses.ctc_loss(outputs.logits, outputs.frame_mask, batch["labels"],
                                           batch["label_lengths"])
  num_sentences = jnp.maximum(jnp.sum(batch["label_lengths"] > 0), 1).astype(jnp.float32)
  # ctc_loss zeroes non-finite sentences (zero_infinity); a NaN input must still skip the update.
  logits_finite = jnp.all(jnp.isfinite(outputs.logits))
  return loss_sum / num_sentences, (per_sentence, logits_finite)


def train_step(state: TrainState, batch: dict, rng, *, model, tx: optax.GradientTransformation,
               schedule: Callable, options: StepOptions = StepOptions()):
  """One CTC fine-tuning update.

  Args:
    state: TrainState of a Wav2Vec2ForCTC; `tx` built with `trainable_mask(params, options.freeze_encoder)`.
    batch: {"waveform": `[batch, samples]` float32, "attention_mask": `[batch, samples]` int32, "labels":
      `[batch, max_labels]` int32 (right-padded with 0), "label_lengths": `[batch]` int32}.
    rng: the run's base PRNG key (the step folds in `state.step`).
    model: Wav2Vec2ForCTC (set `feature_grad_mult=0.0` so the conv encoder's backward is never built).
    tx: optimiser. schedule: learning rate of the update step (logged only).
    options: StepOptions.
  Returns:
    (new_state, metrics): metrics is a flat dict of float32 scalars: `loss/ctc` (nats per sentence, the optimised
    value), `loss/ctc_per_token` (nats per target label), `ctc/zeroed_sentences` (zero-infinity hits),
    `learning_rate`, `grad_norm` (of the trainable parameters), `skipped`, `bad_steps`.
  """
  step_key = jax.random.fold_in(rng, state.step)
  (loss, (per_sentence, logits_finite)), grads = jax.value_and_grad(_loss_fn, has_aux=True)(
      state.params, model, batch, step_key)
  mask = trainable_mask(grads, options.freeze_encoder)
  # Unused gradients are dead code: XLA drops the backward of frozen parts.
  grads = jax.tree_util.tree_map(lambda g, m: g if m else jnp.zeros_like(g), grads, mask)
  new_state, grad_norm, finite = train_state.apply_gradients(state, grads, tx, jnp.isfinite(loss) & logits_finite)
  num_tokens = jnp.maximum(jnp.sum(batch["label_lengths"]), 1).astype(jnp.float32)
  metrics = {
      "loss/ctc": loss,
      "loss/ctc_per_token": jnp.sum(per_sentence) / num_tokens,
      "ctc/zeroed_sentences": jnp.sum((per_sentence == 0.0) & (batch["label_lengths"] > 0)),
      "learning_rate": schedule(state.step),
      "grad_norm": grad_norm,
      "skipped": 1.0 - finite.astype(jnp.float32),
      "bad_steps": new_state.bad_steps,
  }
  return new_state, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
