"""The one table that maps logical axis names (used in model code) to mesh axes ("data", "fsdp", "tensor").

Model code names axes only logically; this module is the single place that knows the mesh. Variants:
  * "data":  pure data parallelism, parameters replicated;
  * "fsdp":  parameters and optimizer state sharded over "fsdp" along their embed/conv axes (ZeRO-3 style),
             the batch split over ("data", "fsdp");
  * "fsdp_tensor": additionally heads / MLP / vocab split over "tensor" (Megatron-style tensor parallelism).
"""

from typing import Sequence

import flax.linen as nn
import jax

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
