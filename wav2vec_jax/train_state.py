"""Train state and its sharded initialisation (shardings derived from the parameters' logical axis names)."""

from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from wav2vec_jax import partitioning


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


def all_finite(tree) -> jax.Array:
  """`[]` bool: every element of every leaf is finite."""
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))


def apply_gradients(state: TrainState, grads, tx: optax.GradientTransformation, finite) -> TrainState:
  """One optimiser update that is skipped (params and optimiser state kept) when `finite` is False.

  Args:
    state: the current TrainState.
    grads: gradients, same structure as `state.params`.
    tx: the optimiser.
    finite: `[]` bool, whether the loss and the gradients were finite; a False is counted in `bad_steps` and in
      the run of `consecutive_bad_steps` (reset by the next good update).
  Returns:
    The next TrainState (`step` advances either way: it counts the batches consumed).
  """
  updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
  new_params = optax.apply_updates(state.params, updates)
  keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
  bad = (~finite).astype(jnp.int32)
  return state.replace(
      step=state.step + 1,
      params=jax.tree_util.tree_map(keep, new_params, state.params),
      opt_state=jax.tree_util.tree_map(keep, new_opt_state, state.opt_state),
      bad_steps=state.bad_steps + bad,
      consecutive_bad_steps=(state.consecutive_bad_steps + 1) * bad)
