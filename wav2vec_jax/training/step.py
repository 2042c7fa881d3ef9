"""The train step of every task: a pure function `(state, batch, rng) -> (state, metrics)`.

Per-step randomness is `fold_in(rng, state.step)` (split once more per microbatch when accumulating). The schedules
(learning rate, Gumbel temperature) count applied updates, `state.step - state.bad_steps`, as fairseq's `num_updates`
and optax's own count do: a skipped update does not advance them. Gradients
of the *summed* loss over all microbatches are divided by the accumulated sample size (fairseq: masked frames in
pre-training, sentences in CTC fine-tuning), so four microbatches give the update of one batch four times the size.
Parameters in frozen or held optimiser groups get no gradient (XLA removes their backward pass). A non-finite loss,
task check or gradient leaves params and optimiser state untouched and is counted (`train_state.apply_gradients`).
"""

import jax
import jax.numpy as jnp
import optax

from wav2vec_jax.training import optim, train_state
from wav2vec_jax.training.train_state import TrainState


def _microbatches(batch: dict, accum: int) -> dict:
  return {k: v.reshape(accum, v.shape[0] // accum, *v.shape[1:]) for k, v in batch.items()}


def train_step(state: TrainState, batch: dict, rng, *, task, tx: optax.GradientTransformation, schedule,
               phase: str = "train", grad_accum: int = 1):
  """One update of `task`.

  Args:
    state: TrainState.
    batch: the task's `batch_keys`, each with a leading `[batch]` axis divisible by `grad_accum`.
    rng: the run's base PRNG key.
    task: a task object (`tasks/pretraining.py`, `tasks/ctc.py`); static.
    tx: the optimiser for `phase` (`optim.adam(..., labels=task.parameter_labels(params), held=task.held(phase))`).
    schedule: learning rate of the 0-based applied update (logged; the optimiser applies the same value).
    phase: the task's phase at this update (static; e.g. "frozen" while the CTC trunk is held).
    grad_accum: microbatches per update (fairseq update_freq); microbatch i uses key `split(step_key, n)[i]`.
  Returns:
    (new_state, metrics): flat dict of float32 scalars: the task's metrics, `learning_rate`, `grad_norm`,
    `skipped`, `bad_steps`, `consecutive_bad_steps`.
  """
  step_key = jax.random.fold_in(rng, state.step)
  updates = state.step - state.bad_steps  # applied so far: what optax's schedule count holds
  batch = {k: batch[k] for k in task.batch_keys}
  labels = task.parameter_labels(state.params)
  no_grad = {optim.FROZEN, *task.held(phase)}

  def grads_of(micro, key):
    (loss_sum, aux), grads = jax.value_and_grad(task.loss, has_aux=True)(state.params, micro, key, updates)
    # Gradients nobody uses are dead code: XLA drops the backward pass of frozen and held parameters.
    grads = jax.tree_util.tree_map(lambda g, label: jnp.zeros_like(g) if label in no_grad else g, grads, labels)
    return loss_sum, aux, grads

  if grad_accum == 1:
    loss_sum, aux, grads = grads_of(batch, step_key)
  else:
    def body(carry, inputs):
      loss_i, aux_i, grads_i = grads_of(*inputs)
      loss_acc, aux_acc, grads_acc = carry
      aux_acc = {k: (aux_acc[k] & v) if k == "finite" else aux_acc[k] + v for k, v in aux_i.items()}
      return (loss_acc + loss_i, aux_acc, jax.tree_util.tree_map(jnp.add, grads_acc, grads_i)), None

    first = jax.eval_shape(grads_of, jax.tree_util.tree_map(lambda x: x[:x.shape[0] // grad_accum], batch), step_key)
    zero_aux = {k: jnp.ones((), bool) if k == "finite" else jnp.zeros(v.shape, v.dtype) for k, v in first[1].items()}
    init = (jnp.zeros((), jnp.float32), zero_aux, jax.tree_util.tree_map(jnp.zeros_like, state.params))
    (loss_sum, aux, grads), _ = jax.lax.scan(
        body, init, (_microbatches(batch, grad_accum), jax.random.split(step_key, grad_accum)))

  new_state, grad_norm, finite = train_state.apply_gradients(
      state, grads, tx, jnp.isfinite(loss_sum) & aux["finite"],
      grad_scale=1.0 / jnp.maximum(aux["sample_size"], 1.0))
  metrics = dict(task.metrics(loss_sum, aux, grad_accum))
  metrics.update({"learning_rate": schedule(updates), "grad_norm": grad_norm,
                  "skipped": 1.0 - finite.astype(jnp.float32), "bad_steps": new_state.bad_steps,
                  "consecutive_bad_steps": new_state.consecutive_bad_steps})
  return new_state, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
