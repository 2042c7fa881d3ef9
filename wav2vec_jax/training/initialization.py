"""The model a run trains and the weights it starts from (`config.init_from`).

Fine-tuning takes the architecture from the initial checkpoint (a pre-training workdir of this project, a Hugging
Face directory or a fairseq `.pt`, pre-training or already fine-tuned) and the training regime from the config
(`REGIME_FIELDS`: dropouts, layerdrop, SpecAugment masks, dtype, layout). Parameters are copied by name: the CTC
head is freshly initialised when the checkpoint has none, a pre-training model's quantizer and heads are dropped,
and a leaf whose shape differs (a vocabulary that does not fit an imported head) is an error naming it.
"""

import json
import os
import re

import jax
import numpy as np
from absl import logging

from data_pipelines import storage

from wav2vec_jax.interop.convert import CheckpointMismatchError
from wav2vec_jax.models.config import IMPLEMENTATION_FIELDS, ModelConfig

# ModelConfig fields a fine-tuning config sets whatever the checkpoint was trained with.
REGIME_FIELDS = ("hidden_dropout", "attention_dropout", "activation_dropout", "dropout_input", "dropout_features",
                 "final_dropout", "layerdrop", "feature_grad_mult", "mask_time_prob", "mask_time_length",
                 "mask_time_min_masks", "mask_channel_prob", "mask_channel_length",
                 "mask_channel_min_masks") + IMPLEMENTATION_FIELDS


def load_initial(path: str, scan_layers: bool):
  """(model, numpy params, directory holding a vocab.json or None) of `config.init_from`."""
  from wav2vec_jax.interop.loading import load_pretrained  # pylint: disable=g-import-not-at-top

  model, variables = load_pretrained(path, scan_layers=scan_layers)
  params = jax.tree_util.tree_map(np.asarray, variables["params"])
  vocab_dir = path if storage.Path(path).is_dir() else os.fspath(storage.Path(path).parent)
  return model, params, vocab_dir


def saved_config(workdir: str) -> ModelConfig | None:
  """The ModelConfig a workdir's checkpoints were written with (None before the first run)."""
  path = storage.Path(storage.join(workdir, "wav2vec_jax.json"))
  if not path.exists():
    return None
  return ModelConfig.from_dict(json.loads(path.read_text())["model_config"])


def model_config(config, initial: ModelConfig | None = None, vocab_size: int | None = None) -> ModelConfig:
  """The ModelConfig of a run: `config.model`, or the initial checkpoint's architecture with the regime fields of
  `config.model` (fine-tuning); `vocab_size` from the vocabulary."""
  fields = config.model.to_dict()
  if initial is not None and config.get("task", "pretrain") == "ctc":
    regime = {name: fields[name] for name in REGIME_FIELDS}
    cfg = initial.replace(**regime)
    differs = sorted(k for k, v in ModelConfig.from_dict(fields).__dict__.items()
                     if k not in REGIME_FIELDS and k != "vocab_size" and getattr(cfg, k) != v)
    if differs:
      logging.info("architecture from config.init_from (config.model values not used for %s)", ", ".join(differs))
  else:
    cfg = ModelConfig.from_dict(fields)
  if vocab_size is not None:
    cfg = cfg.replace(vocab_size=vocab_size)
  return cfg.validate()


def check_head(loaded, vocab_size: int, source: str, vocab_origin: str) -> None:
  """Fails before any data is read when an imported CTC head does not fit the vocabulary."""
  head = loaded.get("lm_head", {}) if isinstance(loaded, dict) else {}
  if "kernel" in head and head["kernel"].shape[-1] != vocab_size:
    raise CheckpointMismatchError(
        f"{source}: parameter ['lm_head']['kernel'] has {head['kernel'].shape[-1]} outputs but the vocabulary "
        f"({vocab_origin}) has {vocab_size} symbols: the CTC head does not fit the vocabulary. Use the checkpoint's "
        "own vocabulary (config.data.vocab) or a checkpoint without a head.")


def _flat(tree) -> dict:
  return {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def merge_params(fresh, loaded, source: str):
  """`fresh` (the new model's params, arrays or shape structs) with every leaf that `loaded` has under the same
  name.

  Args:
    fresh: the initialised params of the model to train.
    loaded: numpy params of the initial checkpoint, possibly of another architecture class (a pre-training model's
      `wav2vec2` subtree becomes the CTC model's).
    source: the checkpoint path, for messages.
  Returns:
    A tree with the structure of `fresh`: loaded numpy leaves where names and shapes agree, `fresh`'s own leaves
    elsewhere (see `train_state.with_params`).
  Raises:
    CheckpointMismatchError: a leaf exists in both with different shapes.
  """
  if "wav2vec2" in fresh and "wav2vec2" not in loaded:  # a bare Wav2Vec2Model checkpoint
    loaded = {"wav2vec2": loaded}
  have = _flat(loaded)
  used, fresh_names = set(), []

  def pick(path, leaf):
    name = jax.tree_util.keystr(path)
    if name not in have:
      fresh_names.append(name)
      return leaf
    value = have[name]
    if tuple(value.shape) != tuple(leaf.shape):
      hint = (" (the CTC head does not fit the vocabulary: use the checkpoint's own vocabulary, config.data.vocab, "
              "or a checkpoint without a head)") if "lm_head" in name else ""
      raise CheckpointMismatchError(f"{source}: parameter {name} has shape {tuple(value.shape)}, the model needs "
                                    f"{tuple(leaf.shape)}{hint}")
    used.add(name)
    return value.astype(leaf.dtype)

  merged = jax.tree_util.tree_map_with_path(pick, fresh)
  dropped = sorted(set(have) - used)
  logging.info("init_from %s: %d tensors loaded, freshly initialised: %s, not used: %s", source, len(used),
               _summary(fresh_names), _summary(dropped))
  if not used:
    raise CheckpointMismatchError(f"{source}: no parameter of the checkpoint fits the model")
  return merged


def _summary(names: list[str]) -> str:
  """Top-level groups of parameter names ("wav2vec2/encoder", "lm_head", ...)."""
  groups = sorted({"/".join(re.findall(r"\['([^']*)'\]", name)[:2]) for name in names})
  return ", ".join(groups) if groups else "none"
