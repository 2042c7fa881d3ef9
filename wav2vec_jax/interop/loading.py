"""`load_pretrained`: one entry point for Hugging Face directories, fairseq `.pt` files and our own checkpoints.

Nothing here executes code from a checkpoint: safetensors are plain data, and `.bin` / `.pt` files go through the
restricted unpickler of `torch_checkpoint` (no torch or fairseq needed).
"""

import dataclasses
import json
import os

import flax.linen as nn
import jax
import numpy as np

from data_pipelines import storage

from wav2vec_jax.interop import convert
from wav2vec_jax.models.config import ModelConfig
from wav2vec_jax.models.wav2vec2 import MODEL_CLASSES

OWN_CONFIG_FILE = "wav2vec_jax.json"


def _read_hf_state_dict(directory: str) -> dict[str, np.ndarray]:
  """All tensors of a Hugging Face model directory (single or sharded safetensors, or pytorch_model.bin)."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top

  for index_name, loader in (("model.safetensors.index.json", load_file), ("pytorch_model.bin.index.json", None)):
    index_path = storage.Path(storage.join(directory, index_name))
    if index_path.exists():
      shards = sorted(set(json.loads(index_path.read_text())["weight_map"].values()))
      state = {}
      for shard in shards:
        state.update(_read_tensor_file(storage.join(directory, shard)))
      return state
  for name in ("model.safetensors", "pytorch_model.bin"):
    path = storage.join(directory, name)
    if storage.Path(path).exists():
      return _read_tensor_file(path)
  raise FileNotFoundError(f"{directory}: no model.safetensors or pytorch_model.bin (nor a sharded index) found")


def _read_tensor_file(path: str) -> dict[str, np.ndarray]:
  if path.endswith(".safetensors"):
    from safetensors.numpy import load  # pylint: disable=g-import-not-at-top

    try:
      return load(storage.Path(path).read_bytes())
    except Exception as e:  # pylint: disable=broad-except  # SafetensorError is not importable on every version
      raise convert.CheckpointMismatchError(
          f"{path}: not a readable safetensors file ({type(e).__name__}: {e}); the download or copy is probably "
          "truncated: fetch it again") from e
  from wav2vec_jax.interop.torch_checkpoint import load_torch_checkpoint  # pylint: disable=g-import-not-at-top

  with storage.local_file(path) as local:
    state = load_torch_checkpoint(local)
  if not isinstance(state, dict):
    raise ValueError(f"{path}: expected a state dict, found {type(state).__name__}")
  return {k: np.asarray(v) for k, v in state.items()}


def _infer_architecture(hf_config: dict, keys) -> str:
  for arch in hf_config.get("architectures") or ():
    if arch in MODEL_CLASSES:
      return arch
  if any(k.startswith("lm_head.") for k in keys):
    return "Wav2Vec2ForCTC"
  if any(k.startswith("quantizer.") for k in keys):
    return "Wav2Vec2ForPreTraining"
  return "Wav2Vec2Model"


def load_hf(directory: str, **config_overrides):
  """Loads a Hugging Face wav2vec 2.0 directory. Returns (model, variables); see `load_pretrained`."""
  config_path = storage.join(directory, "config.json")
  if not storage.Path(config_path).exists():
    raise FileNotFoundError(f"{directory}: no config.json; a Hugging Face model directory needs one")
  hf_config = json.loads(storage.Path(config_path).read_text())
  if hf_config.get("model_type", "wav2vec2") != "wav2vec2":
    raise ValueError(f"{config_path}: model_type is {hf_config.get('model_type')!r}, expected 'wav2vec2'")
  cfg = ModelConfig.from_hf_dict(hf_config).replace(**config_overrides).validate()
  state = _read_hf_state_dict(directory)
  architecture = _infer_architecture(hf_config, state)
  if architecture == "Wav2Vec2Model" and any(k.startswith("wav2vec2.") for k in state):
    state = {k[len("wav2vec2."):]: v for k, v in state.items() if k.startswith("wav2vec2.")}
  params = convert.params_from_hf(state, cfg, architecture, source=directory)
  return MODEL_CLASSES[architecture](cfg), {"params": jax.tree_util.tree_map(jax.numpy.asarray, params)}


def save_pretrained(directory: str, model: nn.Module, variables: dict):
  """Writes a model in this project's format: `wav2vec_jax.json` (config + architecture) and Orbax `params/`."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  directory = storage.absolute(directory)
  storage.Path(directory).mkdir(parents=True, exist_ok=True)
  meta = {"architecture": type(model).__name__, "model_config": dataclasses.asdict(model.config)}
  storage.write_text(storage.join(directory, OWN_CONFIG_FILE), json.dumps(meta, indent=2))
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(storage.join(directory, "params"), nn.unbox(variables["params"]), force=True)


def load_own(directory: str, **config_overrides):
  """Loads a directory written by `save_pretrained`, or a pre-training workdir (latest checkpoint's parameters).

  Returns:
    (model, variables).
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  directory = storage.absolute(directory)
  meta = json.loads(storage.Path(storage.join(directory, OWN_CONFIG_FILE)).read_text())
  saved_cfg = ModelConfig.from_dict(meta["model_config"])
  cfg = saved_cfg.replace(**config_overrides).validate()
  model_class = MODEL_CLASSES[meta["architecture"]]
  params_dir = storage.join(directory, "params")
  if not storage.Path(params_dir).exists():  # a training workdir: parameters of the latest checkpoint's state
    checkpoints = storage.Path(storage.join(directory, "checkpoints"))
    steps = sorted(int(d.name) for d in checkpoints.iterdir() if d.name.isdigit()) if checkpoints.exists() else []
    if not steps:
      raise FileNotFoundError(f"{directory}: neither params/ nor a finished checkpoint under checkpoints/")
    params_dir = storage.join(directory, "checkpoints", str(steps[-1]), "state")
  with ocp.PyTreeCheckpointer() as checkpointer:
    # As host numpy arrays: the saved shardings may name a mesh this process does not have.
    tree = checkpointer.metadata(params_dir).item_metadata.tree
    restored = checkpointer.restore(params_dir, restore_args=jax.tree_util.tree_map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree))
  params = restored.get("params", restored) if isinstance(restored, dict) and "step" in restored else restored
  want = convert.abstract_params(model_class(saved_cfg))
  got = dict(jax.tree_util.tree_flatten_with_path(params)[0])
  for path, spec in jax.tree_util.tree_flatten_with_path(want)[0]:
    if path not in got or tuple(np.shape(got[path])) != tuple(spec.shape):
      found = tuple(np.shape(got[path])) if path in got else "nothing"
      raise convert.CheckpointMismatchError(
          f"{params_dir}: parameter {jax.tree_util.keystr(path)} should be {tuple(spec.shape)}, found {found}")
  if cfg.scan_layers != saved_cfg.scan_layers:  # re-layout the layers: stacked <-> one subtree per layer
    relayout = convert.stack_layers if cfg.scan_layers else convert.unstack_layers
    params = relayout(jax.tree_util.tree_map(np.asarray, params), cfg.num_layers)
  return model_class(cfg), {"params": params}


def load_pretrained(path: str, **config_overrides):
  """Loads a pre-trained or fine-tuned wav2vec 2.0 model.

  Args:
    path: a Hugging Face model directory (`config.json` + `model.safetensors` or `pytorch_model.bin`), a fairseq
      checkpoint file (`.pt`, pre-training or CTC fine-tuned), or a directory written by `save_pretrained`.
    **config_overrides: ModelConfig fields to change (e.g. dtype="bfloat16", scan_layers=True, dropout rates).
  Returns:
    (model, variables): a Flax module (Wav2Vec2Model, Wav2Vec2ForPreTraining or Wav2Vec2ForCTC) and its
    `{"params": ...}`. `model.apply(variables, waveform [batch, samples] float32, attention_mask=None)` returns
    a Wav2Vec2Output (`last_hidden_state`, `extract_features`, and `logits` for CTC models); eval mode by default.
  """
  path = os.fspath(path)
  if storage.Path(path).is_dir():
    if storage.Path(storage.join(path, OWN_CONFIG_FILE)).exists():
      return load_own(path, **config_overrides)
    return load_hf(path, **config_overrides)
  if storage.Path(path).is_file():
    from wav2vec_jax.interop import fairseq_import  # pylint: disable=g-import-not-at-top

    with storage.local_file(path) as local:
      cfg, architecture, state = fairseq_import.read_fairseq_checkpoint(local)
    cfg = cfg.replace(**config_overrides).validate()
    params = convert.params_from_hf(state, cfg, architecture, source=path)
    return MODEL_CLASSES[architecture](cfg), {"params": jax.tree_util.tree_map(jax.numpy.asarray, params)}
  raise FileNotFoundError(f"{path}: no such file or directory")
