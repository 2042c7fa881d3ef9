"""Optimisers and schedules of the reference recipes (fairseq): Adam(W), warmup + linear decay, tri-stage, Gumbel.

Schedules are functions of the update step, evaluated inside the jitted train step from `state.step`.
"""

import math

import jax.numpy as jnp
import optax


def warmup_linear_decay(peak_lr: float, warmup_steps: int, total_steps: int):
  """fairseq `polynomial_decay` (power 1, end lr 0) as a function of the 0-based update step.

  Update u = step + 1 uses peak * u / warmup during warm-up (so the first update already moves, as in fairseq,
  which starts at peak / warmup), then decays linearly to 0 at total_steps.
  """
  warmup_steps = max(warmup_steps, 1)

  def schedule(step):
    u = jnp.asarray(step, jnp.float32) + 1.0
    warm = peak_lr * u / warmup_steps
    decay = peak_lr * jnp.clip((total_steps - u) / max(total_steps - warmup_steps, 1), 0.0, 1.0)
    return jnp.where(u <= warmup_steps, warm, decay)

  return schedule


def tri_stage(peak_lr: float, total_steps: int, warmup_frac: float = 0.1, hold_frac: float = 0.4,
              decay_frac: float = 0.5, init_scale: float = 0.01, final_scale: float = 0.05):
  """fairseq `tri_stage`: linear warmup from init_scale*lr, hold, exponential decay to final_scale*lr."""
  warmup_steps = int(total_steps * warmup_frac)
  hold_steps = int(total_steps * hold_frac)
  decay_steps = max(int(total_steps * decay_frac), 1)
  decay_rate = -jnp.log(final_scale) / decay_steps

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = peak_lr * (init_scale + (1 - init_scale) * step / max(warmup_steps, 1))
    decayed = peak_lr * jnp.exp(-decay_rate * (step - warmup_steps - hold_steps))
    lr = jnp.where(step < warmup_steps, warm, jnp.where(step < warmup_steps + hold_steps, peak_lr, decayed))
    return jnp.where(step >= warmup_steps + hold_steps + decay_steps, peak_lr * final_scale, lr)

  return schedule


def gumbel_temperature(step, start: float, minimum: float, decay: float):
  """tau = max(start * decay**step, minimum), fairseq's per-update annealing. Float32 scalar."""
  # exp(step * log(decay)) with log taken in float64: decay**step in float32 drifts by ~1e-3 after 1e5 steps.
  return jnp.maximum(start * jnp.exp(jnp.asarray(step, jnp.float32) * math.log(decay)), minimum)


def adam(schedule, b1: float = 0.9, b2: float = 0.98, eps: float = 1e-6, weight_decay: float = 0.01,
         clip_norm: float = 0.0, trainable_mask=None) -> optax.GradientTransformation:
  """fairseq's Adam (decoupled weight decay on every parameter), optional global-norm clipping.

  Args:
    schedule: learning rate as a function of the update step.
    trainable_mask: optional pytree of bools (same structure as params); False leaves get zero updates.
  """
  parts = []
  if clip_norm > 0:
    parts.append(optax.clip_by_global_norm(clip_norm))
  parts.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))
  tx = optax.chain(*parts)
  if trainable_mask is not None:
    tx = optax.multi_transform({True: tx, False: optax.set_to_zero()}, trainable_mask)
  return tx
