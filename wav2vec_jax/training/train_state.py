"""Train state and its sharded initialisation (shardings derived from the parameters' logical axis names)."""

from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from wav2vec_jax.training import partitioning


@flax.struct.dataclass
class TrainState:
  """Everything a step updates. All leaves are arrays, so the whole state is one Orbax item.

  Attributes:
    step: `[]` int32 batches processed (updates applied + updates skipped).
    params: model parameters (float32 by default).
    opt_state: optax state.
    bad_steps: `[]` int32 updates skipped because the loss or a gradient was not finite.
    consecutive_bad_steps: `[]` int32 current run of skipped updates (the loop stops past a configured limit).
  """

  step: jax.Array
  params: Any
  opt_state: Any
  bad_steps: jax.Array
  consecutive_bad_steps: jax.Array


def _init_fn(model: nn.Module, tx: optax.GradientTransformation, num_samples: int,
             params_fn: Callable | None) -> Callable:
  def init(rng):
    variables = model.init(rng, jnp.zeros((1, num_samples), jnp.float32))
    params = variables["params"]
    if params_fn is not None:  # e.g. weights loaded from a checkpoint, re-boxed with the init's logical names
      params = jax.tree_util.tree_map(lambda box, value: box.replace_boxed(value), params, params_fn(),
                                      is_leaf=lambda x: isinstance(x, nn.Partitioned))
    zero = jnp.zeros((), jnp.int32)
    return TrainState(step=zero, params=params, opt_state=tx.init(params), bad_steps=zero,
                      consecutive_bad_steps=zero)

  return init


def abstract_state(model: nn.Module, tx: optax.GradientTransformation, num_samples: int = 16000):
  """Shapes of the train state with logical-axis boxes (no memory)."""
  return jax.eval_shape(_init_fn(model, tx, num_samples, None), jax.random.PRNGKey(0))


def state_shardings(model: nn.Module, tx: optax.GradientTransformation, mesh, rules):
  """NamedShardings of every leaf of the (unboxed) train state, derived from the logical axis names."""
  return partitioning.shardings_of(abstract_state(model, tx), mesh, rules)


def sharded_abstract_state(model: nn.Module, tx: optax.GradientTransformation, mesh, rules):
  """The unboxed train state as `jax.ShapeDtypeStruct`s with their NamedShardings (an Orbax restore target).

  Traced exactly like `create_train_state`, so its structure is the one a fresh state has (optax's masked
  optimiser states included).
  """
  shardings = state_shardings(model, tx, mesh, rules)
  init = _init_fn(model, tx, 16000, None)
  with partitioning.activate(mesh, rules):
    return jax.jit(lambda key: nn.unbox(init(key)), out_shardings=shardings).eval_shape(jax.random.PRNGKey(0))


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, rng, mesh, rules,
                       initial_params: Callable | None = None) -> TrainState:
  """Initialises the train state directly sharded over `mesh` (no host-memory copy of the full state).

  Args:
    model: the Flax module.
    tx: the optimiser.
    rng: PRNG key for parameter initialisation.
    mesh, rules: the device mesh and logical axis rules.
    initial_params: optional zero-argument function returning a `params` tree (e.g. imported weights).
  Returns:
    TrainState with unboxed arrays laid out by `state_shardings`.
  """
  shardings = state_shardings(model, tx, mesh, rules)
  init = _init_fn(model, tx, 16000, initial_params)
  with partitioning.activate(mesh, rules):
    return jax.jit(lambda key: nn.unbox(init(key)), out_shardings=shardings)(rng)


def apply_gradients(state: TrainState, grads, tx: optax.GradientTransformation, loss_finite,
                    grad_scale=None) -> tuple[TrainState, jax.Array, jax.Array]:
  """One optimiser update, skipped (params and optimiser state kept) when the loss or a gradient is not finite.

  Args:
    state: the current TrainState.
    grads: gradients, same structure as `state.params`.
    tx: the optimiser.
    loss_finite: `[]` bool, whether the loss (and whatever else the caller checks) was finite.
    grad_scale: optional `[]` float32 factor applied to `grads` (e.g. fairseq's 1 / sample size), inside the
      update where XLA fuses it into the optimiser's elementwise pass instead of writing a scaled copy.
  Returns:
    (next TrainState, grad_norm `[]` float32 of the scaled gradients, finite `[]` bool). A NaN or inf anywhere in
    the gradients makes their norm non-finite (fairseq's check); a skipped update is counted in `bad_steps` and in
    the run of `consecutive_bad_steps` (reset by the next good update). `step` advances either way: it counts the
    batches consumed.
  """
  grad_norm = optax.global_norm(grads)
  if grad_scale is not None:
    grad_norm = grad_norm * grad_scale
  finite = loss_finite & jnp.isfinite(grad_norm)

  def update(params_and_opt):
    params, opt_state = params_and_opt
    scaled = grads if grad_scale is None else jax.tree_util.tree_map(lambda g: g * grad_scale, grads)
    updates, new_opt_state = tx.update(scaled, opt_state, params)
    return optax.apply_updates(params, updates), new_opt_state

  # lax.cond, not a jnp.where per leaf: the select re-reads and re-writes every parameter and optimiser moment
  # (~0.3 s per BASE step on 2 CPU cores, 4x the Adam update itself).
  params, opt_state = jax.lax.cond(finite, update, lambda x: x, (state.params, state.opt_state))
  bad = (~finite).astype(jnp.int32)
  new_state = state.replace(
      step=state.step + 1,
      params=params,
      opt_state=opt_state,
      bad_steps=state.bad_steps + bad,
      consecutive_bad_steps=(state.consecutive_bad_steps + 1) * bad)
  return new_state, grad_norm, finite


def with_params(state: TrainState, params, shardings) -> TrainState:
  """`state` with params replaced by host values (e.g. imported weights), laid out by `shardings`.

  Args:
    state: a TrainState (e.g. freshly initialised).
    params: a tree like `state.params` of numpy arrays to place, or `jax.ShapeDtypeStruct` leaves to keep as
      they are. Each process passes the same values; every device takes its shard (no full copy is traced into a
      program, and nothing is gathered).
    shardings: NamedShardings of `state.params`.
  Returns:
    The new TrainState. Adam's moments start at zero whatever the values, so the optimiser state stays valid.
  """
  def place(current, value, sharding):
    if isinstance(value, jax.ShapeDtypeStruct):
      return current
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda idx: value[idx])

  return state.replace(params=jax.tree_util.tree_map(place, state.params, params, shardings))
