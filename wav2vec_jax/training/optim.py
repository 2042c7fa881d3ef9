"""Optimisers and schedules of the reference recipes (fairseq): Adam(W), warmup + linear decay, tri-stage, Gumbel.

Schedules are functions of the update step, evaluated inside the jitted train step from `state.step`.
"""

import math

import jax
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


def hold(inner: optax.GradientTransformation) -> optax.GradientTransformation:
  """`inner` paused: zero updates, and its state (moments, step count) passed through unchanged.

  The state has `inner`'s structure, so a held and a running optimiser share one checkpoint layout: fine-tuning
  holds the trunk's Adam for the first `freeze_finetune_updates`, then runs it, and its bias correction counts from
  its own first update (fairseq's Adam keeps a step count per parameter and skips parameters without a gradient).
  """
  def update(updates, state, params=None):
    del params
    return jax.tree_util.tree_map(jnp.zeros_like, updates), state

  return optax.GradientTransformation(inner.init, update)


FROZEN = "frozen"  # the label of parameters that never train (the conv encoder in fine-tuning)


def adam(schedule, b1: float = 0.9, b2: float = 0.98, eps: float = 1e-6, weight_decay: float = 0.01,
         clip_norm: float = 0.0, labels=None, groups: tuple[str, ...] | None = None,
         held: tuple[str, ...] = ()) -> optax.GradientTransformation:
  """fairseq's Adam: decoupled weight decay, one learning-rate schedule, optional global-norm clipping.

  Parameters are split into groups by `labels`; each group has its own Adam moments and step count (bias
  correction), group "frozen" never moves, and groups in `held` are paused (see `hold`). The learning rate comes
  from one schedule for all groups, counted in applied updates, so a group that starts late joins at the run's
  current learning rate, not at the start of the warm-up.

  Args:
    schedule: learning rate as a function of the 0-based update.
    b1, b2, eps: Adam's coefficients. weight_decay: decoupled, on every trained parameter (fairseq's AdamW).
    clip_norm: clip the global gradient norm to this (0: off).
    labels: optional pytree of group names with the structure of params, or a function params -> such a tree
      (None: one group, everything trains).
    groups: every group name `labels` uses (needed when `labels` is a function; else read from the tree).
    held: groups whose update is paused, state kept.
  Returns:
    An optax GradientTransformation; its state has the same structure whatever `held` is.
  """
  def group(name):
    inner = optax.chain(optax.scale_by_adam(b1=b1, b2=b2, eps=eps), optax.add_decayed_weights(weight_decay))
    return hold(inner) if name in held else inner

  parts = [optax.clip_by_global_norm(clip_norm)] if clip_norm > 0 else []
  if labels is None:
    parts.append(group("trained"))
  else:
    names = sorted(set(groups or jax.tree_util.tree_leaves(labels)) - {FROZEN})
    transforms = {name: group(name) for name in names}
    transforms[FROZEN] = optax.set_to_zero()
    parts.append(optax.multi_transform(transforms, labels))
  parts.append(optax.scale_by_learning_rate(schedule))
  return optax.chain(*parts)
