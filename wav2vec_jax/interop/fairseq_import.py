"""Import of fairseq wav2vec 2.0 checkpoints (pre-training and CTC fine-tuned), without fairseq installed.

A fairseq checkpoint is a pickled dict: `model` (the state dict) and either `cfg` (omegaconf, fairseq >= 0.10) or
`args` (argparse.Namespace, 2020 releases). The restricted reader in `torch_checkpoint` turns both into plain data;
this module maps the configuration onto `ModelConfig` and the state-dict names onto transformers' names, so the
rest of the import is shared with the Hugging Face path (`convert.params_from_hf`).
"""

import ast
import os
import re

import numpy as np

from wav2vec_jax.models.config import ModelConfig
from wav2vec_jax.interop.plain_data import to_plain
from wav2vec_jax.interop.torch_checkpoint import load_torch_checkpoint

# fairseq Wav2Vec2Config defaults for fields a checkpoint may omit.
_DEFAULT_CONV = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]"

# (fairseq pattern, transformers replacement) applied to the base model's names, in order.
_RENAMES = [
    (r"^feature_extractor\.conv_layers\.(\d+)\.0\.", r"feature_extractor.conv_layers.\1.conv."),
    (r"^feature_extractor\.conv_layers\.(\d+)\.2\.1\.", r"feature_extractor.conv_layers.\1.layer_norm."),
    (r"^feature_extractor\.conv_layers\.(\d+)\.2\.", r"feature_extractor.conv_layers.\1.layer_norm."),
    (r"^post_extract_proj\.", "feature_projection.projection."),
    (r"^layer_norm\.", "feature_projection.layer_norm."),
    (r"^mask_emb$", "masked_spec_embed"),
    (r"^encoder\.pos_conv\.0\.", "encoder.pos_conv_embed.conv."),
    (r"^encoder\.layers\.(\d+)\.self_attn\.", r"encoder.layers.\1.attention."),
    (r"^encoder\.layers\.(\d+)\.self_attn_layer_norm\.", r"encoder.layers.\1.layer_norm."),
    (r"^encoder\.layers\.(\d+)\.fc1\.", r"encoder.layers.\1.feed_forward.intermediate_dense."),
    (r"^encoder\.layers\.(\d+)\.fc2\.", r"encoder.layers.\1.feed_forward.output_dense."),
]
_HEAD_RENAMES = {"quantizer.vars": "quantizer.codevectors", "final_proj.weight": "project_hid.weight",
                 "final_proj.bias": "project_hid.bias"}
_PRETRAINING_ONLY = ("quantizer.", "project_q.", "final_proj.", "target_glu.")
_IGNORED = ("_float_tensor",)


def parse_conv_layers(spec: str) -> list[tuple[int, int, int]]:
  """Evaluates fairseq's `conv_feature_layers` string (lists of (dim, kernel, stride) with + and *) safely."""

  def evaluate(node):
    if isinstance(node, ast.Expression):
      return evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
      return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
      items = [evaluate(e) for e in node.elts]
      return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
      left, right = evaluate(node.left), evaluate(node.right)
      return left + right if isinstance(node.op, ast.Add) else left * right
    raise ValueError(f"conv_feature_layers {spec!r}: unsupported expression {ast.dump(node)[:80]}")

  layers = evaluate(ast.parse(spec, mode="eval"))
  return [tuple(int(v) for v in layer[:3]) for layer in layers]


def _model_section(ckpt: dict, path: str) -> dict:
  if ckpt.get("cfg") is not None:
    cfg = to_plain(ckpt["cfg"])
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
      raise ValueError(f"{path}: checkpoint field 'cfg' has no 'model' section")
    return cfg["model"]
  if ckpt.get("args") is not None:
    args = to_plain(ckpt["args"])
    if not isinstance(args, dict):
      raise ValueError(f"{path}: checkpoint field 'args' is not readable as a namespace")
    return args
  raise ValueError(f"{path}: neither 'cfg' nor 'args' found; is this a fairseq checkpoint?")


def config_from_fairseq(model_cfg: dict, vocab_size: int | None = None, finetune_cfg: dict | None = None) -> ModelConfig:
  """Maps a fairseq wav2vec2 model config (and, for CTC models, the fine-tuning overrides) onto ModelConfig."""
  g = lambda key, default: default if model_cfg.get(key) is None else model_cfg[key]  # noqa: E731
  conv = parse_conv_layers(g("conv_feature_layers", _DEFAULT_CONV))
  mode = g("extractor_mode", "default")
  if mode not in ("default", "layer_norm"):
    raise ValueError(f"fairseq extractor_mode {mode!r} is not supported (only 'default' and 'layer_norm')")
  if g("activation_fn", "gelu") != "gelu":
    raise ValueError(f"fairseq activation_fn {model_cfg['activation_fn']!r} is not supported (only 'gelu')")
  embed = int(g("encoder_embed_dim", 768))
  final_dim = int(g("final_dim", 0)) or embed
  temps = g("latent_temp", (2.0, 0.5, 0.999995))
  if isinstance(temps, str):
    temps = ast.literal_eval(temps)
  fields = dict(
      conv_dim=tuple(c[0] for c in conv), conv_kernel=tuple(c[1] for c in conv), conv_stride=tuple(c[2] for c in conv),
      conv_bias=bool(g("conv_bias", False)), feat_extract_norm="layer" if mode == "layer_norm" else "group",
      hidden_size=embed, num_layers=int(g("encoder_layers", 12)), num_heads=int(g("encoder_attention_heads", 12)),
      intermediate_size=int(g("encoder_ffn_embed_dim", 3072)), layer_norm_first=bool(g("layer_norm_first", False)),
      num_conv_pos_embeddings=int(g("conv_pos", 128)), num_conv_pos_embedding_groups=int(g("conv_pos_groups", 16)),
      hidden_dropout=float(g("dropout", 0.1)), attention_dropout=float(g("attention_dropout", 0.1)),
      activation_dropout=float(g("activation_dropout", 0.0)), dropout_input=float(g("dropout_input", 0.0)),
      dropout_features=float(g("dropout_features", 0.0)), layerdrop=float(g("encoder_layerdrop", 0.0)),
      feature_grad_mult=float(g("feature_grad_mult", 1.0)), mask_time_prob=float(g("mask_prob", 0.65)),
      mask_time_length=int(g("mask_length", 10)), mask_channel_prob=float(g("mask_channel_prob", 0.0)),
      mask_channel_length=int(g("mask_channel_length", 10)), num_codevector_groups=int(g("latent_groups", 2)),
      num_codevectors_per_group=int(g("latent_vars", 320)), codevector_dim=int(g("latent_dim", 0)) or final_dim,
      final_dim=final_dim, num_negatives=int(g("num_negatives", 100)), logit_temperature=float(g("logit_temp", 0.1)),
      gumbel_temperature=tuple(float(t) for t in temps))
  if finetune_cfg is not None:  # fairseq's Wav2Vec2AsrConfig overrides these at fine-tuning time
    f = lambda key, default: default if finetune_cfg.get(key) is None else finetune_cfg[key]  # noqa: E731
    fields.update(
        hidden_dropout=float(f("dropout", 0.0)), attention_dropout=float(f("attention_dropout", 0.0)),
        activation_dropout=float(f("activation_dropout", 0.0)), dropout_input=float(f("dropout_input", 0.0)),
        final_dropout=float(f("final_dropout", 0.0)), layerdrop=float(f("layerdrop", 0.0)),
        feature_grad_mult=float(f("feature_grad_mult", 0.0)), mask_time_prob=float(f("mask_prob", 0.5)),
        mask_time_length=int(f("mask_length", 10)), mask_channel_prob=float(f("mask_channel_prob", 0.0)),
        mask_channel_length=int(f("mask_channel_length", 10)))
  if vocab_size is not None:
    fields["vocab_size"] = vocab_size
  return ModelConfig(**fields).validate()


def _rename_base(key: str) -> str:
  for pattern, replacement in _RENAMES:
    new, n = re.subn(pattern, replacement, key)
    if n:
      return new
  return key


def read_fairseq_checkpoint(path: str):
  """Reads a fairseq wav2vec 2.0 `.pt` file.

  Returns:
    (ModelConfig, architecture, state_dict) where architecture is "Wav2Vec2ForPreTraining" or "Wav2Vec2ForCTC" and
    state_dict maps transformers' names to numpy arrays, ready for `convert.params_from_hf`.
  """
  ckpt = load_torch_checkpoint(path)
  if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
    raise ValueError(f"{path}: not a fairseq checkpoint (expected a dict with a 'model' state dict)")
  state = {k: np.asarray(v) for k, v in ckpt["model"].items() if not k.endswith(_IGNORED)}
  model_cfg = _model_section(ckpt, path)
  if any(k.startswith("w2v_encoder.") for k in state):  # CTC fine-tuned model
    w2v_args = to_plain(model_cfg.get("w2v_args"))
    if w2v_args is None and model_cfg.get("w2v_path"):  # as fairseq's Wav2VecEncoder: the pre-training file's
      w2v_path = model_cfg["w2v_path"]
      if not os.path.isfile(w2v_path):
        raise ValueError(f"{path}: w2v_args is empty and w2v_path {w2v_path!r} (the pre-training checkpoint "
                         "that holds the model config) is not a file here")
      w2v_args = _model_section(load_torch_checkpoint(w2v_path), w2v_path)
    if isinstance(w2v_args, dict) and isinstance(w2v_args.get("model"), dict):
      w2v_args = w2v_args["model"]
    if not isinstance(w2v_args, dict):
      raise ValueError(f"{path}: fine-tuned checkpoint has no readable w2v_args (the pre-training config)")
    if "w2v_encoder.proj.weight" not in state:
      raise ValueError(f"{path}: fine-tuned checkpoint lacks the CTC head 'w2v_encoder.proj.weight'")
    vocab_size = state["w2v_encoder.proj.weight"].shape[0]
    cfg = config_from_fairseq(w2v_args, vocab_size=vocab_size, finetune_cfg=model_cfg)
    hf_state = {}
    for key, value in state.items():
      if key.startswith("w2v_encoder.proj."):
        hf_state["lm_head." + key[len("w2v_encoder.proj."):]] = value
      elif key.startswith("w2v_encoder.w2v_model."):
        inner = key[len("w2v_encoder.w2v_model."):]
        if not inner.startswith(_PRETRAINING_ONLY):  # fairseq drops these when fine-tuning; ignore leftovers
          hf_state["wav2vec2." + _rename_base(inner)] = value
      else:
        raise ValueError(f"{path}: key {key!r} is not part of a fairseq wav2vec 2.0 CTC model")
    if not cfg.uses_mask_embedding:  # fine-tuned without masking: the mask embedding is unused, as in transformers
      hf_state.pop("wav2vec2.masked_spec_embed", None)
    return cfg, "Wav2Vec2ForCTC", hf_state
  cfg = config_from_fairseq(model_cfg)
  hf_state = {}
  for key, value in state.items():
    if key in _HEAD_RENAMES:
      hf_state[_HEAD_RENAMES[key]] = value
    elif key.startswith(("quantizer.", "project_q.")):
      hf_state[key] = value
    else:
      hf_state["wav2vec2." + _rename_base(key)] = value
  return cfg, "Wav2Vec2ForPreTraining", hf_state
