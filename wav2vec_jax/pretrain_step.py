"""The pre-training step: a pure function `(state, batch, rng) -> (state, metrics)`.

Per-step randomness comes from `fold_in(rng, state.step)` split into named streams (mask, negatives, dropout,
gumbel); the learning rate and the Gumbel temperature are computed from `state.step`. Gradients are the sum of
per-masked-frame losses divided by the masked count of the whole (global, accumulated) batch, as fairseq divides
by the sample size. A non-finite loss or gradient leaves params and optimizer state untouched and is counted.
"""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from wav2vec_jax import losses, masking, optim, train_state
from wav2vec_jax.train_state import TrainState


@dataclasses.dataclass(frozen=True)
class StepOptions:
  """Static settings of the step (hashable; closed over, never traced)."""

  grad_accum: int = 1  # microbatches per update (fairseq update_freq)


def _microbatch_loss(model, params, waveform, attention_mask, key, temperature):
  """Sum-scale pre-training loss of one microbatch; returns (loss, (num_masked, metrics))."""
  cfg = model.config
  k_mask, k_neg, k_drop, k_gumbel = jax.random.split(key, 4)
  frames = masking.conv_output_lengths(waveform.shape[1], cfg.conv_kernel, cfg.conv_stride)
  frame_mask = masking.frame_mask_from_attention_mask(attention_mask, frames, cfg.conv_kernel, cfg.conv_stride)
  masked = masking.compute_time_mask(k_mask, frame_mask, cfg.mask_time_prob, cfg.mask_time_length,
                                     cfg.mask_time_min_masks)
  negatives = masking.sample_negatives(k_neg, masked.count, masked.valid, cfg.num_negatives)
  outputs = model.apply({"params": params}, waveform, attention_mask, masked, temperature, False, method="pretrain",
                        rngs={"dropout": k_drop, "gumbel": k_gumbel})
  loss, metrics = losses.pretraining_loss(cfg, outputs, negatives)
  return loss.loss, (loss.num_masked, metrics)


def train_step(state: TrainState, batch: dict, rng, *, model, tx: optax.GradientTransformation,
               schedule: Callable, options: StepOptions = StepOptions()):
  """One update.

  Args:
    state: TrainState.
    batch: {"waveform": `[batch, samples]` float32, "attention_mask": `[batch, samples]` int32}; batch divisible by
      `options.grad_accum`.
    rng: the run's base PRNG key (the step folds in `state.step`).
    model: Wav2Vec2ForPreTraining. tx: optimiser. schedule: learning rate of the update step.
  Returns:
    (new_state, metrics): metrics is a flat dict of float32 scalars.
  """
  cfg = model.config
  step_key = jax.random.fold_in(rng, state.step)
  temperature = optim.gumbel_temperature(state.step, *cfg.gumbel_temperature)
  accum = options.grad_accum
  waveform, attention_mask = batch["waveform"], batch["attention_mask"]
  grad_fn = jax.value_and_grad(_microbatch_loss, argnums=1, has_aux=True)

  if accum == 1:
    (loss, (num_masked, metrics)), grads = grad_fn(model, state.params, waveform, attention_mask, step_key,
                                                  temperature)
  else:
    micro = lambda x: x.reshape(accum, x.shape[0] // accum, *x.shape[1:])  # noqa: E731

    def body(carry, inputs):
      grads_acc, loss_acc, masked_acc = carry
      wav, mask, key = inputs
      (loss_i, (masked_i, metrics_i)), grads_i = grad_fn(model, state.params, wav, mask, key, temperature)
      grads_acc = jax.tree_util.tree_map(jnp.add, grads_acc, grads_i)
      return (grads_acc, loss_acc + loss_i, masked_acc + masked_i), metrics_i

    zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
    keys = jax.random.split(step_key, accum)
    (grads, loss, num_masked), metrics_all = jax.lax.scan(
        body, (zeros, jnp.zeros(()), jnp.zeros(())), (micro(waveform), micro(attention_mask), keys))
    metrics = jax.tree_util.tree_map(jnp.mean, metrics_all)
    metrics["loss/bits"] = loss / jnp.maximum(num_masked, 1.0) / jnp.log(2.0)
    metrics["num_masked"] = num_masked

  # fairseq divides the summed gradients by the sample size; the factor is applied inside the optimiser update.
  new_state, grad_norm, finite = train_state.apply_gradients(
      state, grads, tx, jnp.isfinite(loss), grad_scale=1.0 / jnp.maximum(num_masked, 1.0))
  metrics = dict(metrics)
  metrics.update({
      "learning_rate": jnp.asarray(schedule(state.step), jnp.float32),
      "gumbel_temperature": temperature,
      "grad_norm": grad_norm,
      "skipped": 1.0 - finite.astype(jnp.float32),
      "bad_steps": new_state.bad_steps.astype(jnp.float32),
  })
  return new_state, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
