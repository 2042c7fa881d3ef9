"""Convolutional feature encoder: raw 16 kHz waveform -> 20 ms frames, and the feature projection."""

import math

import flax.linen as nn
import jax.numpy as jnp

from wav2vec_jax.models import layers
from wav2vec_jax.models.config import ModelConfig


class ConvLayer(nn.Module):
  """Conv1d (no padding) -> optional GroupNorm/LayerNorm (float32) -> GELU."""

  config: ModelConfig
  layer_id: int  # index in the conv stack
  norm: str  # "none", "group" (per-channel over time) or "layer" (over channels per frame)

  @nn.compact
  def __call__(self, x):
    """[batch, time, in_channels] -> [batch, time', out_channels] in the compute dtype."""
    cfg = self.config
    c_in = x.shape[-1]
    c_out, kernel, stride = cfg.conv_dim[self.layer_id], cfg.conv_kernel[self.layer_id], cfg.conv_stride[self.layer_id]
    bias_bound = math.sqrt(1.0 / (c_in * kernel))
    x = nn.Conv(
        c_out, (kernel,), strides=(stride,), padding="VALID", use_bias=cfg.conv_bias, dtype=cfg.compute_dtype,
        param_dtype=cfg.weight_dtype,
        kernel_init=layers.partitioned(layers.kaiming_normal, ("conv_width", "conv_in", "conv_out")),
        bias_init=layers.partitioned(layers.uniform_init(bias_bound), ("conv_out",)),
        conv_general_dilated=layers.conv_general_dilated, name="conv")(x)
    if self.norm == "group":
      # GroupNorm with one group per channel: statistics over time (padding included, as in the reference).
      x = layers.Norm(axis=1, axis_name="conv_out", epsilon=1e-5, param_dtype=cfg.weight_dtype, name="layer_norm")(x)
    elif self.norm == "layer":
      x = layers.layer_norm(cfg, "layer_norm", axis_name="conv_out", epsilon=1e-5)(x)
    return layers.gelu(x).astype(cfg.compute_dtype)


class FeatureEncoder(nn.Module):
  """The stack of 7 conv blocks (stride 320, receptive field 400 samples)."""

  config: ModelConfig

  @nn.compact
  def __call__(self, waveform):
    """Args: waveform `[batch, samples]` float32. Returns `[batch, frames, conv_dim[-1]]` in the compute dtype."""
    cfg = self.config
    if waveform.shape[-1] < cfg.receptive_field:
      raise ValueError(
          f"waveform has {waveform.shape[-1]} samples, fewer than the conv encoder's receptive field of "
          f"{cfg.receptive_field} samples ({cfg.receptive_field / 16:.0f} ms at 16 kHz): pad or drop such clips")
    x = waveform.astype(cfg.compute_dtype)[..., None]
    x = nn.with_logical_constraint(x, ("batch", "samples", None))
    for i in range(len(cfg.conv_dim)):
      if cfg.feat_extract_norm == "layer":
        norm = "layer"
      else:
        norm = "group" if i == 0 else "none"
      x = ConvLayer(cfg, i, norm, name=f"conv_layers_{i}")(x)
    return nn.with_logical_constraint(x, ("batch", "frames", "conv_out"))


class FeatureProjection(nn.Module):
  """LayerNorm(conv_dim) -> Linear(conv_dim -> hidden) -> dropout (fairseq `layer_norm` + `post_extract_proj`)."""

  config: ModelConfig

  @nn.compact
  def __call__(self, features, deterministic: bool = True):
    """[batch, frames, conv_dim] -> (hidden `[batch, frames, hidden]`, normed features `[batch, frames, conv_dim]`).

    The normed features (float32) feed the quantizer and are returned as `extract_features`.
    """
    cfg = self.config
    normed = layers.layer_norm(cfg, "layer_norm", axis_name="conv_out")(features.astype(jnp.float32))
    fan_in = features.shape[-1]
    bound = 1.0 / math.sqrt(fan_in)
    hidden = layers.dense(cfg, cfg.hidden_size, ("conv_out", "embed"), "projection",
                          kernel_init=layers.uniform_init(bound), bias_init=layers.uniform_init(bound))(normed)
    hidden = nn.Dropout(cfg.dropout_input)(hidden, deterministic=deterministic)
    return nn.with_logical_constraint(hidden, ("batch", "frames", "embed")), normed
