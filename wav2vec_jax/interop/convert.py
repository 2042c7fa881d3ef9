"""Hugging Face <-> wav2vec_jax parameter conversion, and export to a directory `transformers` loads.

A Hugging Face state dict is a flat `{dotted name: numpy array}` in torch layouts (Linear `[out, in]`, Conv1d
`[out, in, kernel]`); the Flax tree uses `[in, out]`, `[kernel, in, out]`, attention kernels split into
`[embed, heads, head_dim]`, and optionally layers stacked on a leading axis (`scan_layers`). Every conversion checks
keys and shapes against the model's own abstract parameters and names the offending key on a mismatch.
"""

import json
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import storage
from wav2vec_jax.models.config import ModelConfig
from wav2vec_jax.models.wav2vec2 import MODEL_CLASSES

_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(.*)$")
_POS_CONV_ALIASES = {  # torch >= 2.1 parametrizations <-> legacy weight_norm names
    "encoder.pos_conv_embed.conv.parametrizations.weight.original0": "encoder.pos_conv_embed.conv.weight_g",
    "encoder.pos_conv_embed.conv.parametrizations.weight.original1": "encoder.pos_conv_embed.conv.weight_v",
}


class CheckpointMismatchError(ValueError):
  """A checkpoint's keys or shapes do not fit the model built from its configuration."""


def _base_entries(cfg: ModelConfig, layer_dims: bool) -> dict[str, tuple[tuple[str, ...], str]]:
  """HF name (without the `wav2vec2.` prefix) -> (Flax path, layout kind) for the base model's parameters."""
  entries = {}
  for i in range(len(cfg.conv_dim)):
    base = f"feature_extractor.conv_layers.{i}"
    path = ("feature_extractor", f"conv_layers_{i}")
    entries[f"{base}.conv.weight"] = (path + ("conv", "kernel"), "conv")
    if cfg.conv_bias:
      entries[f"{base}.conv.bias"] = (path + ("conv", "bias"), "same")
    if cfg.feat_extract_norm == "layer" or i == 0:
      entries[f"{base}.layer_norm.weight"] = (path + ("layer_norm", "scale"), "same")
      entries[f"{base}.layer_norm.bias"] = (path + ("layer_norm", "bias"), "same")
  entries["feature_projection.layer_norm.weight"] = (("feature_projection", "layer_norm", "scale"), "same")
  entries["feature_projection.layer_norm.bias"] = (("feature_projection", "layer_norm", "bias"), "same")
  entries["feature_projection.projection.weight"] = (("feature_projection", "projection", "kernel"), "linear")
  entries["feature_projection.projection.bias"] = (("feature_projection", "projection", "bias"), "same")
  if cfg.uses_mask_embedding:
    entries["masked_spec_embed"] = (("masked_spec_embed",), "same")
  pos = ("encoder", "pos_conv_embed")
  entries["encoder.pos_conv_embed.conv.weight_g"] = (pos + ("weight_g",), "pos_g")
  entries["encoder.pos_conv_embed.conv.weight_v"] = (pos + ("weight_v",), "conv")
  entries["encoder.pos_conv_embed.conv.bias"] = (pos + ("bias",), "same")
  entries["encoder.layer_norm.weight"] = (("encoder", "layer_norm", "scale"), "same")
  entries["encoder.layer_norm.bias"] = (("encoder", "layer_norm", "bias"), "same")
  if layer_dims:
    for i in range(cfg.num_layers):
      lp = ("encoder", f"layers_{i}")
      hp = f"encoder.layers.{i}"
      for proj in ("q_proj", "k_proj", "v_proj"):
        entries[f"{hp}.attention.{proj}.weight"] = (lp + ("attention", f"{proj}_kernel"), "qkv")
        entries[f"{hp}.attention.{proj}.bias"] = (lp + ("attention", f"{proj}_bias"), "qkv_bias")
      entries[f"{hp}.attention.out_proj.weight"] = (lp + ("attention", "out_proj_kernel"), "out_proj")
      entries[f"{hp}.attention.out_proj.bias"] = (lp + ("attention", "out_proj_bias"), "same")
      for dense in ("intermediate_dense", "output_dense"):
        entries[f"{hp}.feed_forward.{dense}.weight"] = (lp + ("feed_forward", dense, "kernel"), "linear")
        entries[f"{hp}.feed_forward.{dense}.bias"] = (lp + ("feed_forward", dense, "bias"), "same")
      for norm in ("layer_norm", "final_layer_norm"):
        entries[f"{hp}.{norm}.weight"] = (lp + (norm, "scale"), "same")
        entries[f"{hp}.{norm}.bias"] = (lp + (norm, "bias"), "same")
  return entries


def hf_entries(cfg: ModelConfig, architecture: str) -> dict[str, tuple[tuple[str, ...], str]]:
  """HF state-dict name -> (Flax path with per-layer `layers_i`, layout kind) for one architecture."""
  base = _base_entries(cfg, layer_dims=True)
  if architecture == "Wav2Vec2Model":
    return base
  entries = {f"wav2vec2.{k}": (("wav2vec2",) + p, kind) for k, (p, kind) in base.items()}
  if architecture == "Wav2Vec2ForPreTraining":
    entries["quantizer.codevectors"] = (("quantizer", "codevectors"), "codevectors")
    entries["quantizer.weight_proj.weight"] = (("quantizer", "weight_proj", "kernel"), "linear")
    entries["quantizer.weight_proj.bias"] = (("quantizer", "weight_proj", "bias"), "same")
    for head in ("project_q", "project_hid"):
      entries[f"{head}.weight"] = ((head, "kernel"), "linear")
      entries[f"{head}.bias"] = ((head, "bias"), "same")
  elif architecture == "Wav2Vec2ForCTC":
    entries["lm_head.weight"] = (("lm_head", "kernel"), "linear")
    entries["lm_head.bias"] = (("lm_head", "bias"), "same")
  else:
    raise ValueError(f"Unsupported architecture {architecture!r}; supported: {sorted(MODEL_CLASSES)}")
  return entries


def _to_flax(kind: str, w: np.ndarray, cfg: ModelConfig) -> np.ndarray:
  heads, head_dim = cfg.num_heads, cfg.head_dim
  if kind == "same":
    return w
  if kind == "linear":
    return w.T
  if kind == "conv":
    return w.transpose(2, 1, 0)
  if kind == "pos_g":
    return w.reshape(-1)
  if kind == "qkv":
    return w.T.reshape(w.shape[1], heads, head_dim)
  if kind == "qkv_bias":
    return w.reshape(heads, head_dim)
  if kind == "out_proj":
    return w.T.reshape(heads, head_dim, w.shape[0])
  if kind == "codevectors":
    return w.reshape(cfg.num_codevector_groups, cfg.num_codevectors_per_group, -1)
  raise AssertionError(kind)


def _to_hf(kind: str, w: np.ndarray, cfg: ModelConfig) -> np.ndarray:
  if kind == "same":
    return w
  if kind == "linear":
    return w.T
  if kind == "conv":
    return w.transpose(2, 1, 0)
  if kind == "pos_g":
    return w.reshape(1, 1, -1)
  if kind == "qkv":
    return w.reshape(w.shape[0], -1).T
  if kind == "qkv_bias":
    return w.reshape(-1)
  if kind == "out_proj":
    return w.reshape(-1, w.shape[-1]).T
  if kind == "codevectors":
    return w.reshape(1, cfg.num_codevectors, -1)
  raise AssertionError(kind)


def _set(tree: dict, path: tuple[str, ...], value):
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def stack_layers(params: dict, num_layers: int) -> dict:
  """Turns `encoder/layers_i/...` subtrees into one `encoder/layers/...` subtree stacked on axis 0."""

  def visit(tree):
    if "encoder" in tree and "layers_0" in tree["encoder"]:
      enc = tree["encoder"]
      per_layer = [enc.pop(f"layers_{i}") for i in range(num_layers)]
      enc["layers"] = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *per_layer)
    for value in tree.values():
      if isinstance(value, dict):
        visit(value)

  visit(params)
  return params


def unstack_layers(params: dict, num_layers: int) -> dict:
  def visit(tree):
    if "encoder" in tree and "layers" in tree["encoder"]:
      stacked = tree["encoder"].pop("layers")
      for i in range(num_layers):
        tree["encoder"][f"layers_{i}"] = jax.tree_util.tree_map(lambda x, i=i: x[i], stacked)
    for value in tree.values():
      if isinstance(value, dict):
        visit(value)

  visit(params)
  return params


def abstract_params(model: nn.Module, num_samples: int = 16000) -> dict:
  """Parameter shapes and dtypes of `model` (jax.ShapeDtypeStruct tree, logical boxes removed), no memory used."""
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, num_samples), jnp.float32))
  return nn.unbox(shapes)["params"]


def normalize_hf_names(state_dict: dict) -> dict:
  """Maps torch parametrization names of the positional conv to the legacy weight_g/weight_v names."""
  out = {}
  for key, value in state_dict.items():
    for new, old in _POS_CONV_ALIASES.items():
      if key.endswith(new):
        key = key[: -len(new)] + old
    out[key] = value
  return out


def params_from_hf(state_dict: dict, cfg: ModelConfig, architecture: str, source: str = "checkpoint") -> dict:
  """Converts a Hugging Face state dict to a Flax parameter tree for `MODEL_CLASSES[architecture](cfg)`.

  Args:
    state_dict: {HF name: numpy array} (float arrays of any float dtype; stored as cfg.param_dtype).
    cfg: the model configuration.
    architecture: "Wav2Vec2Model", "Wav2Vec2ForPreTraining" or "Wav2Vec2ForCTC".
    source: file name used in error messages.
  Returns:
    The `params` collection (nested dict of numpy arrays).
  Raises:
    CheckpointMismatchError naming the key that is unknown, missing or of the wrong shape.
  """
  state_dict = normalize_hf_names(state_dict)
  entries = hf_entries(cfg, architecture)
  unknown = sorted(set(state_dict) - set(entries))
  if unknown:
    raise CheckpointMismatchError(
        f"{source}: key {unknown[0]!r} has no place in a {architecture} with this configuration"
        f"{f' (and {len(unknown) - 1} more)' if len(unknown) > 1 else ''}; check config.json or the architecture")
  missing = sorted(set(entries) - set(state_dict))
  if missing:
    raise CheckpointMismatchError(
        f"{source}: key {missing[0]!r} is missing{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}")
  expected = abstract_params(MODEL_CLASSES[architecture](cfg.replace(scan_layers=False)))  # per-layer paths
  params = {}
  for key, (path, kind) in entries.items():
    value = np.asarray(state_dict[key])
    want = expected
    for part in path:
      want = want[part]
    try:
      converted = _to_flax(kind, value, cfg)
    except ValueError as err:
      raise CheckpointMismatchError(f"{source}: key {key!r} has shape {value.shape}, which does not fit "
                                    f"the expected {tuple(want.shape)} ({err})") from None
    if converted.shape != tuple(want.shape):
      raise CheckpointMismatchError(
          f"{source}: key {key!r} has shape {value.shape}; the model expects a tensor that converts to "
          f"{tuple(want.shape)} (got {converted.shape}); the checkpoint does not match its configuration")
    _set(params, path, converted.astype(cfg.weight_dtype))
  return stack_layers(params, cfg.num_layers) if cfg.scan_layers else params


def params_to_hf(params: dict, cfg: ModelConfig, architecture: str) -> dict[str, np.ndarray]:
  """Inverse of `params_from_hf`: a Flax `params` tree -> {HF name: float32 numpy array}."""
  params = jax.tree_util.tree_map(np.asarray, nn.unbox(params))
  if cfg.scan_layers:
    params = unstack_layers(params, cfg.num_layers)
  out = {}
  for key, (path, kind) in hf_entries(cfg, architecture).items():
    value = params
    for part in path:
      value = value[part]
    out[key] = np.ascontiguousarray(_to_hf(kind, np.asarray(value, np.float32), cfg))
  return out


def export_hf(directory: str, params: dict, cfg: ModelConfig, architecture: str, extra_config: dict | None = None):
  """Writes `config.json` and `model.safetensors` that `transformers.<architecture>.from_pretrained` loads.

  `directory` may be local or `gs://` (everything goes through `storage`).
  """
  from safetensors import numpy as safetensors_np  # pylint: disable=g-import-not-at-top

  storage.Path(directory).mkdir(parents=True, exist_ok=True)
  state = params_to_hf(params, cfg, architecture)
  hf_config = cfg.to_hf_dict(architecture)
  hf_config.update(extra_config or {})
  storage.write_text(storage.join(directory, "config.json"), json.dumps(hf_config, indent=2, sort_keys=True))
  weights = storage.join(directory, "model.safetensors")
  if storage.is_remote(weights):  # safetensors writes local files only: serialise in memory, one object write
    storage.Path(weights).write_bytes(safetensors_np.save(state, metadata={"format": "pt"}))
  else:
    safetensors_np.save_file(state, weights, metadata={"format": "pt"})
