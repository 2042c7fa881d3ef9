"""The one table that maps logical axis names (used in model code) to mesh axes ("data", "fsdp", "tensor").

Model code names axes only logically; this module is the single place that knows the mesh. Variants:
  * "data":  pure data parallelism, parameters replicated;
  * "fsdp":  parameters and optimizer state sharded over "fsdp" along their embed/conv axes (ZeRO-3 style),
             the batch split over ("data", "fsdp");
  * "fsdp_tensor": additionally heads / MLP / vocab split over "tensor" (Megatron-style tensor parallelism).
"""

import contextlib
from typing import Sequence

import flax.linen as nn
import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# Every logical name used by the model. None = replicated.
_DATA_PARALLEL = (
    ("batch", ("data", "fsdp")),
    ("samples", None),
    ("frames", None),
    ("layers", None),
    ("conv_width", None),
    ("conv_in", None),
    ("conv_out", None),
    ("embed", None),
    ("heads", None),
    ("head_dim", None),
    ("mlp", None),
    ("codebook_groups", None),
    ("codevectors", None),
    ("codevector_dim", None),
    ("codebook", None),
    ("final_dim", None),
    ("vocab", None),
)

_OVERRIDES = {
    "data": {},
    # Shard every large parameter along one axis over fsdp. Activations keep embed unsharded (FSDP gathers weights).
    "fsdp": {"embed": "fsdp", "conv_out": "fsdp"},
    "fsdp_tensor": {"embed": "fsdp", "conv_out": "fsdp", "heads": "tensor", "mlp": "tensor", "vocab": "tensor"},
}

LOGICAL_AXIS_NAMES = frozenset(name for name, _ in _DATA_PARALLEL)


def logical_axis_rules(variant: str = "fsdp", overrides: Sequence[tuple[str, object]] = ()):
  """The logical -> mesh axis rules of a named variant, with optional (name, mesh_axes) overrides on top.

  Returns:
    A tuple of (logical_name, mesh_axis_or_None) pairs for `nn.logical_axis_rules`.
  """
  if variant not in _OVERRIDES:
    raise ValueError(f"Unknown sharding variant {variant!r}; choose one of {sorted(_OVERRIDES)}")
  table = dict(_DATA_PARALLEL)
  table.update(_OVERRIDES[variant])
  for name, axes in overrides:
    if name not in table:
      raise ValueError(f"Sharding override names unknown logical axis {name!r}; known: {sorted(table)}")
    table[name] = axes
  return tuple(table.items())


def unknown_axis_names(boxed_variables) -> dict[str, tuple]:
  """Parameters whose logical names are missing or not in the rules table.

  Args:
    boxed_variables: variables as returned by `model.init` (with nn.Partitioned boxes).
  Returns:
    {parameter path: its names} for every offending parameter; empty when all are covered.
  """
  bad = {}
  leaves = jax.tree_util.tree_flatten_with_path(
      boxed_variables, is_leaf=lambda x: isinstance(x, nn.Partitioned))[0]
  for path, leaf in leaves:
    key = jax.tree_util.keystr(path)
    if not isinstance(leaf, nn.Partitioned):
      bad[key] = ()
    elif any(name is not None and name not in LOGICAL_AXIS_NAMES for name in leaf.names):
      bad[key] = tuple(leaf.names)
  return bad


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices=None) -> jax.sharding.Mesh:
  """A ("data", "fsdp", "tensor") mesh over all (or the given) devices; -1 for data takes what is left.

  Axes are Auto: Linen's logical constraints expect it (jax.make_mesh defaults to Explicit axes since 0.9).
  """
  devices = list(devices) if devices is not None else jax.devices()
  if data == -1:
    if len(devices) % (fsdp * tensor):
      raise ValueError(f"{len(devices)} devices cannot be split into fsdp={fsdp} x tensor={tensor}")
    data = len(devices) // (fsdp * tensor)
  if data * fsdp * tensor != len(devices):
    raise ValueError(f"mesh (data={data}, fsdp={fsdp}, tensor={tensor}) needs {data * fsdp * tensor} devices, "
                     f"found {len(devices)}; set config.mesh so that the product matches")
  return jax.make_mesh((data, fsdp, tensor), MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


@contextlib.contextmanager
def activate(mesh: jax.sharding.Mesh, rules):
  """Mesh and logical rules in context, for tracing and running (without it Flax skips logical constraints)."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def shardings_of(boxed_tree, mesh: jax.sharding.Mesh, rules):
  """NamedShardings for a tree of nn.Partitioned boxes (e.g. `jax.eval_shape` of an init function)."""
  return nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed_tree), mesh, rules)


def batch_sharding(mesh: jax.sharding.Mesh, rules, ndim: int = 2) -> NamedSharding:
  """Sharding of a `[batch, ...]` input array: batch split by the "batch" rule, the rest replicated."""
  batch_axes = dict(rules)["batch"]
  return NamedSharding(mesh, PartitionSpec(batch_axes, *([None] * (ndim - 1))))


def host_to_global(mesh: jax.sharding.Mesh, rules):
  """A function `(dict of this host's numpy rows) -> dict of global jax arrays`, batch split by the "batch" rule.

  Every process passes its own rows (`[local_batch, ...]`); the global batch is their concatenation in process
  order, as the input pipeline plans it.
  """
  def to_global(local: dict) -> dict:
    return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, rules, v.ndim), v)
            for k, v in local.items()}

  return to_global
