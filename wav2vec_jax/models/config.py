"""Model configuration: one frozen dataclass, named variants, and the Hugging Face `config.json` mapping.

Defaults are the BASE model of wav2vec 2.0 (arXiv 2006.11477, fairseq `wav2vec2_base_librispeech.yaml`). The
dataclass is frozen and hashable (static, never traced), so modules hold it as a field; a ConfigDict never reaches
model code.
"""

import dataclasses
from typing import Any

import jax.numpy as jnp

# Hugging Face config.json field -> ModelConfig field. Only fields whose names differ are listed.
_HF_RENAMES = {
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "do_stable_layer_norm": "layer_norm_first",
    "feat_proj_dropout": "dropout_input",
    "feat_quantizer_dropout": "dropout_features",
    "proj_codevector_dim": "final_dim",
    "contrastive_logits_temperature": "logit_temperature",
    "mask_feature_prob": "mask_channel_prob",
    "mask_feature_length": "mask_channel_length",
    "mask_feature_min_masks": "mask_channel_min_masks",
}
_TUPLE_FIELDS = ("conv_dim", "conv_kernel", "conv_stride")
# How the model is computed, not what it computes: free to differ between a checkpoint and the run loading it.
IMPLEMENTATION_FIELDS = ("dtype", "param_dtype", "scan_layers", "scan_unroll", "remat_policy", "pos_conv_impl",
                         "attention_impl")
# The pre-training objective's settings, not the parameters': free to change when a run resumes (fairseq builds its
# criterion from the relaunch's config), e.g. a lower feature penalty for a run stuck at chance.
LOSS_FIELDS = ("num_negatives", "logit_temperature", "diversity_loss_weight", "feature_pen_weight",
               "gumbel_temperature")
_NOT_SUPPORTED = {  # HF fields whose non-default values this implementation does not model.
    "add_adapter": False,
    "use_weighted_layer_sum": False,
    "adapter_attn_dim": None,
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture and regularisation of a wav2vec 2.0 model (BASE defaults)."""

  # Conv feature encoder: per-layer channels, kernel widths and strides (total stride 320 = 20 ms at 16 kHz).
  conv_dim: tuple[int, ...] = (512,) * 7
  conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
  conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
  conv_bias: bool = False  # BASE convs have no bias; LARGE/XLSR do.
  feat_extract_norm: str = "group"  # "group": GroupNorm in conv block 0 only; "layer": LayerNorm in every block.
  # Transformer context network.
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  layer_norm_first: bool = False  # False: post-LN (BASE); True: pre-LN with a final LayerNorm (LARGE/XLSR).
  layer_norm_eps: float = 1e-5
  num_conv_pos_embeddings: int = 128  # Kernel of the convolutional relative positional embedding.
  num_conv_pos_embedding_groups: int = 16
  # Regularisation (fairseq names in comments).
  hidden_dropout: float = 0.1  # dropout
  attention_dropout: float = 0.1  # attention_dropout
  activation_dropout: float = 0.0  # activation_dropout
  dropout_input: float = 0.1  # dropout_input, after the feature projection
  dropout_features: float = 0.1  # dropout_features, on the quantizer input
  final_dropout: float = 0.1  # before the CTC head
  layerdrop: float = 0.05  # encoder_layerdrop, drawn per layer per step
  feature_grad_mult: float = 0.1  # gradient scale into the conv encoder; 0 stops it
  # Masking (pre-training: 0.65 / 10; fine-tuning uses the same fields as SpecAugment).
  mask_time_prob: float = 0.65
  mask_time_length: int = 10
  mask_time_min_masks: int = 2
  mask_channel_prob: float = 0.0
  mask_channel_length: int = 10
  mask_channel_min_masks: int = 0
  # Quantizer and contrastive head.
  num_codevector_groups: int = 2  # G
  num_codevectors_per_group: int = 320  # V
  codevector_dim: int = 256  # concatenated codevector size before project_q
  final_dim: int = 256  # contrastive space (project_q and final_proj outputs)
  num_negatives: int = 100  # K
  logit_temperature: float = 0.1  # kappa
  diversity_loss_weight: float = 0.1  # alpha
  feature_pen_weight: float = 10.0
  gumbel_temperature: tuple[float, float, float] = (2.0, 0.5, 0.999995)  # (start, min, decay per update)
  # CTC head.
  vocab_size: int = 32
  # Implementation.
  dtype: str = "float32"  # compute dtype of matmuls and convs; norms, softmax, logits and losses stay float32
  param_dtype: str = "float32"
  scan_layers: bool = False  # nn.scan over the transformer layers (flat compile time as depth grows)
  scan_unroll: int = 1  # layers per iteration of the scan loop (scan_layers only; must divide num_layers)
  remat_policy: str = "none"  # "none", "full", "dots" (matmul outputs kept: dots_with_no_batch_dims_saveable)
  # Positional conv: "fft" (spectral product; with a backward pass ~10x faster than XLA:CPU's conv), "conv" (one
  # conv per group) or "auto" (fft for training passes on CPU; conv for deterministic passes on CPU, where its
  # forward is 2x faster, and on GPU/TPU: `transformer.pos_conv_impl`). Both compute the same function (~1e-6).
  pos_conv_impl: str = "auto"
  # Self-attention: "batched" (all heads in two batched matmuls), "per_head" (lax.map over heads, no attention
  # dropout), "fused" (jax.nn.dot_product_attention: cuDNN on GPU; no attention dropout) or "auto" (per_head for
  # deterministic passes on a single CPU device: ~2x faster there; else batched).
  attention_impl: str = "auto"
  initializer_range: float = 0.02

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)

  @property
  def weight_dtype(self):
    return jnp.dtype(self.param_dtype)

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def num_codevectors(self) -> int:
    return self.num_codevector_groups * self.num_codevectors_per_group

  @property
  def receptive_field(self) -> int:
    """Samples seen by one output frame of the conv encoder (400 for the standard stack)."""
    field = 1
    for k, s in reversed(list(zip(self.conv_kernel, self.conv_stride))):
      field = (field - 1) * s + k
    return field

  @property
  def uses_mask_embedding(self) -> bool:
    # As transformers: the learned mask embedding exists only when some masking is configured.
    return self.mask_time_prob > 0.0 or self.mask_channel_prob > 0.0

  def replace(self, **updates) -> "ModelConfig":
    unknown = set(updates) - {f.name for f in dataclasses.fields(self)}
    if unknown:
      raise ValueError(f"ModelConfig has no field(s) {sorted(unknown)}; valid fields: {self.field_names()}")
    return dataclasses.replace(self, **updates)

  @classmethod
  def from_dict(cls, fields: dict[str, Any]) -> "ModelConfig":
    """Builds a config from a plain dict of its fields (JSON or ConfigDict: lists become tuples)."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    return cls(**fields).validate()

  @classmethod
  def field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]

  def validate(self) -> "ModelConfig":
    """Raises ValueError naming the field when the configuration is inconsistent."""
    if not len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride):
      raise ValueError("conv_dim, conv_kernel and conv_stride must have the same length, got "
                       f"{len(self.conv_dim)}, {len(self.conv_kernel)}, {len(self.conv_stride)}")
    if self.feat_extract_norm not in ("group", "layer"):
      raise ValueError(f"feat_extract_norm must be 'group' or 'layer', got {self.feat_extract_norm!r}")
    if self.hidden_size % self.num_heads:
      raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
    if self.hidden_size % self.num_conv_pos_embedding_groups:
      raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_conv_pos_embedding_groups "
                       f"{self.num_conv_pos_embedding_groups}")
    if self.codevector_dim % self.num_codevector_groups:
      raise ValueError(f"codevector_dim {self.codevector_dim} is not divisible by num_codevector_groups "
                       f"{self.num_codevector_groups}")
    if self.scan_unroll < 1 or self.num_layers % self.scan_unroll:
      raise ValueError(f"scan_unroll {self.scan_unroll} must be >= 1 and divide num_layers {self.num_layers}")
    if self.remat_policy not in ("none", "full", "dots"):
      raise ValueError(f"remat_policy must be 'none', 'full' or 'dots', got {self.remat_policy!r}")
    if self.pos_conv_impl not in ("auto", "conv", "fft"):
      raise ValueError(f"pos_conv_impl must be 'auto', 'conv' or 'fft', got {self.pos_conv_impl!r}")
    if self.attention_impl not in ("auto", "batched", "per_head", "fused"):
      raise ValueError(f"attention_impl must be 'auto', 'batched', 'per_head' or 'fused', got {self.attention_impl!r}")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"{name} must be 'float32', 'bfloat16' or 'float16', got {getattr(self, name)!r}")
    return self

  # --- Hugging Face config.json -------------------------------------------------------------------------------

  @classmethod
  def from_hf_dict(cls, hf: dict[str, Any]) -> "ModelConfig":
    """Builds a config from a transformers `Wav2Vec2Config` dict (the contents of `config.json`)."""
    for key, default in _NOT_SUPPORTED.items():
      if hf.get(key, default) != default:
        raise ValueError(f"config.json field {key}={hf[key]!r} is not supported by wav2vec_jax "
                         f"(only {key}={default!r})")
    for key, expected in (("hidden_act", "gelu"), ("feat_extract_activation", "gelu")):
      if hf.get(key, expected) != expected:
        raise ValueError(f"config.json field {key}={hf[key]!r} is not supported (only {expected!r})")
    names = set(cls.field_names())
    kwargs = {}
    for key, value in hf.items():
      name = _HF_RENAMES.get(key, key)
      if name in names and name not in ("dtype", "param_dtype"):
        kwargs[name] = tuple(value) if name in _TUPLE_FIELDS else value
    if hf.get("vocab_size") is None:
      kwargs.pop("vocab_size", None)
    if "mask_time_prob" not in hf:  # transformers' default, not fairseq's pre-training value
      kwargs["mask_time_prob"] = 0.05
    return cls(**kwargs).validate()

  def to_hf_dict(self, architecture: str) -> dict[str, Any]:
    """The transformers `config.json` contents for this model (architecture e.g. "Wav2Vec2ForPreTraining")."""
    inverse = {v: k for k, v in _HF_RENAMES.items()}
    hf = {"model_type": "wav2vec2", "architectures": [architecture], "hidden_act": "gelu",
          "feat_extract_activation": "gelu", "num_feat_extract_layers": len(self.conv_dim),
          "apply_spec_augment": True, "pad_token_id": 0, "ctc_loss_reduction": "mean", "ctc_zero_infinity": True,
          "torch_dtype": "float32"}
    skip = IMPLEMENTATION_FIELDS + ("feature_grad_mult", "feature_pen_weight", "gumbel_temperature")
    for field in dataclasses.fields(self):
      if field.name in skip:
        continue
      value = getattr(self, field.name)
      hf[inverse.get(field.name, field.name)] = list(value) if isinstance(value, tuple) else value
    return hf


def _base() -> ModelConfig:
  return ModelConfig()


def _large() -> ModelConfig:
  # fairseq wav2vec2_large_librivox.yaml: layer-norm extractor, pre-LN, conv bias, no dropout, final_dim 768.
  return ModelConfig(
      conv_bias=True, feat_extract_norm="layer", hidden_size=1024, num_layers=24, num_heads=16,
      intermediate_size=4096, layer_norm_first=True, hidden_dropout=0.0, attention_dropout=0.0,
      activation_dropout=0.0, dropout_input=0.0, dropout_features=0.0, final_dropout=0.0, layerdrop=0.0,
      feature_grad_mult=1.0, codevector_dim=768, final_dim=768, feature_pen_weight=0.0,
      gumbel_temperature=(2.0, 0.1, 0.999995))


def _xlsr_53() -> ModelConfig:
  # XLSR-53 (arXiv 2006.13979) uses the LARGE architecture; one quantizer shared across languages.
  return _large()


def _tiny() -> ModelConfig:
  # For tests and CPU smoke runs: the real conv stack (stride 320, receptive field 400), a tiny transformer.
  return ModelConfig(
      conv_dim=(32,) * 7, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
      num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, num_codevector_groups=2,
      num_codevectors_per_group=16, codevector_dim=16, final_dim=16, num_negatives=10)


_VARIANTS = {"base": _base, "large": _large, "xlsr_53": _xlsr_53, "tiny": _tiny}


def get_variant(name: str, **overrides) -> ModelConfig:
  """Returns a named variant ("base", "large", "xlsr_53", "tiny") with optional field overrides."""
  if name not in _VARIANTS:
    raise ValueError(f"Unknown model variant {name!r}; choose one of {sorted(_VARIANTS)}")
  return _VARIANTS[name]().replace(**overrides).validate()
