"""wav2vec 2.0 models: the base encoder, the pre-training model (quantizer + heads) and the CTC model.

Parameter trees mirror transformers' module names (`feature_extractor`, `feature_projection`, `encoder`,
`masked_spec_embed`, `quantizer`, `project_q`, `project_hid`, `lm_head`; the task models wrap the encoder as
`wav2vec2`), so checkpoint conversion is a rename plus layout changes.

Usage:
  outputs = model.apply(variables, waveform, attention_mask)            # eval, deterministic
  outputs = model.apply(variables, waveform, deterministic=False, rngs={"dropout": k1, "mask": k2})
"""

from typing import Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from wav2vec_jax.models import masking
from wav2vec_jax.models import layers
from wav2vec_jax.models.config import ModelConfig
from wav2vec_jax.models.feature_encoder import FeatureEncoder, FeatureProjection
from wav2vec_jax.models.quantizer import GumbelQuantizer, QuantizerOutput
from wav2vec_jax.models.transformer import Encoder


@flax.struct.dataclass
class Wav2Vec2Output:
  """Attributes:
    last_hidden_state: `[batch, frames, hidden]` float32 context network output.
    extract_features: `[batch, frames, conv_dim]` float32 LayerNorm-ed conv features (the quantizer input).
    frame_mask: `[batch, frames]` bool, True for frames inside each row's length.
    feature_penalty: `[]` float32 mean squared conv feature (fairseq's features_pen, before the LayerNorm).
    logits: `[batch, frames, vocab]` float32 CTC logits (CTC model only).
  """

  last_hidden_state: jax.Array
  extract_features: jax.Array
  frame_mask: jax.Array
  feature_penalty: jax.Array
  logits: Optional[jax.Array] = None


@flax.struct.dataclass
class PretrainOutput:
  """Attributes:
    projected_states: `[batch, max_masked, final_dim]` final_proj of the context at masked frames.
    projected_quantized_states: `[batch, max_masked, final_dim]` project_q of the quantized targets.
    quantizer: QuantizerOutput over the masked frames (codes, perplexities).
    valid: `[batch, max_masked]` bool validity of the masked slots.
    encoder: the Wav2Vec2Output of the (masked) forward pass.
  """

  projected_states: jax.Array
  projected_quantized_states: jax.Array
  quantizer: QuantizerOutput
  valid: jax.Array
  encoder: Wav2Vec2Output


class Wav2Vec2Model(nn.Module):
  """Feature encoder, projection, masking with a learned embedding, and the transformer."""

  config: ModelConfig

  @nn.compact
  def __call__(self, waveform, attention_mask=None, mask_time_indices=None, deterministic: bool = True):
    """Encodes raw audio.

    Args:
      waveform: `[batch, samples]` float32 16 kHz audio (at least 400 samples).
      attention_mask: optional `[batch, samples]` int, 1 = real sample, 0 = padding (as transformers).
      mask_time_indices: optional `[batch, frames]` bool frames to replace with the mask embedding. When absent,
        training (deterministic=False) draws SpecAugment time masks from the "mask" RNG stream if
        `mask_time_prob > 0`.
      deterministic: eval mode (no dropout, layerdrop, or random masking).
    Returns:
      Wav2Vec2Output.
    """
    cfg = self.config
    features = FeatureEncoder(cfg, name="feature_extractor")(waveform)
    batch, frames, _ = features.shape
    if attention_mask is None:
      frame_mask = jnp.ones((batch, frames), bool)
    else:
      frame_mask = masking.frame_mask_from_attention_mask(attention_mask, frames, cfg.conv_kernel, cfg.conv_stride)
    if cfg.feature_grad_mult == 0.0:
      features = jax.lax.stop_gradient(features)
    elif cfg.feature_grad_mult != 1.0:
      features = layers.scale_gradient(features, cfg.feature_grad_mult)
    feature_penalty = jnp.mean(jnp.square(features.astype(jnp.float32)))
    hidden, normed = FeatureProjection(cfg, name="feature_projection")(features, deterministic)

    if cfg.uses_mask_embedding:
      mask_embedding = self.param("masked_spec_embed", layers.partitioned(layers.uniform01, ("embed",)),
                                  (cfg.hidden_size,), cfg.weight_dtype)
      if mask_time_indices is None and not deterministic and cfg.mask_time_prob > 0:
        mask_time_indices = masking.compute_span_mask(
            self.make_rng("mask"), jnp.sum(frame_mask, axis=-1), frames, cfg.mask_time_prob, cfg.mask_time_length,
            cfg.mask_time_min_masks)
      if mask_time_indices is not None:
        hidden = jnp.where(mask_time_indices[..., None], mask_embedding.astype(hidden.dtype), hidden)
      if not deterministic and cfg.mask_channel_prob > 0:
        channels = jnp.full((batch,), cfg.hidden_size, jnp.int32)
        channel_mask = masking.compute_span_mask(
            self.make_rng("mask"), channels, cfg.hidden_size, cfg.mask_channel_prob, cfg.mask_channel_length,
            cfg.mask_channel_min_masks, one_draw=True)
        hidden = jnp.where(channel_mask[:, None, :], 0, hidden)
    elif mask_time_indices is not None:
      raise ValueError("mask_time_indices given but the model has no mask embedding "
                       "(config.mask_time_prob and mask_channel_prob are both 0)")

    context = Encoder(cfg, deterministic, name="encoder")(hidden, frame_mask)
    return Wav2Vec2Output(last_hidden_state=context, extract_features=normed, frame_mask=frame_mask,
                          feature_penalty=feature_penalty)


def _gather_frames(x, positions):
  """x `[batch, frames, dim]`, positions `[batch, slots]` -> `[batch, slots, dim]`."""
  return jnp.take_along_axis(x, positions[..., None], axis=1)


class Wav2Vec2ForPreTraining(nn.Module):
  """The encoder plus the Gumbel quantizer, project_q and final_proj (`project_hid`) heads."""

  config: ModelConfig

  def setup(self):
    cfg = self.config
    self.wav2vec2 = Wav2Vec2Model(cfg)
    self.quantizer = GumbelQuantizer(cfg)
    self.dropout_features = nn.Dropout(cfg.dropout_features)
    # transformers resets these two to torch.nn.Linear's default init.
    hid_kernel, hid_bias = layers.torch_linear_init(cfg.hidden_size)
    self.project_hid = layers.dense(cfg, cfg.final_dim, ("embed", "final_dim"), "project_hid", hid_kernel, hid_bias,
                                    dtype=jnp.float32)
    q_kernel, q_bias = layers.torch_linear_init(cfg.codevector_dim)
    self.project_q = layers.dense(cfg, cfg.final_dim, ("codevector_dim", "final_dim"), "project_q", q_kernel, q_bias,
                                  dtype=jnp.float32)

  def __call__(self, waveform, attention_mask=None, mask_time_indices=None, deterministic: bool = True):
    """The encoder's forward pass (see Wav2Vec2Model); returns Wav2Vec2Output.

    `model.init(key, waveform)` through this method creates every parameter, the heads' included.
    """
    out = self.wav2vec2(waveform, attention_mask, mask_time_indices, deterministic)
    if self.is_initializing():  # create the quantizer and head parameters too
      slots = out.extract_features[:, :1]
      quantized = self.quantizer(slots, jnp.ones(slots.shape[:2], bool), 2.0, True)
      self.project_q(quantized.quantized)
      self.project_hid(out.last_hidden_state[:, :1])
    return out

  def pretrain(self, waveform, attention_mask, masked: masking.MaskedFrames, gumbel_temperature=2.0,
               deterministic: bool = True) -> PretrainOutput:
    """Masked forward pass with quantized targets at the masked frames.

    Args:
      waveform: `[batch, samples]` float32.
      attention_mask: `[batch, samples]` int or None.
      masked: MaskedFrames from `masking.compute_time_mask` (same count per row).
      gumbel_temperature: scalar; used when deterministic=False ("gumbel" RNG stream).
      deterministic: eval mode (no dropout, argmax quantizer).
    Returns:
      PretrainOutput; feed it to `losses.pretraining_loss`.
    """
    out = self.wav2vec2(waveform, attention_mask, masked.mask, deterministic)
    targets = self.dropout_features(_gather_frames(out.extract_features, masked.positions),
                                    deterministic=deterministic)
    quantized = self.quantizer(targets, masked.valid, gumbel_temperature, deterministic)
    projected_q = self.project_q(quantized.quantized)
    projected = self.project_hid(_gather_frames(out.last_hidden_state, masked.positions))
    return PretrainOutput(projected_states=projected, projected_quantized_states=projected_q, quantizer=quantized,
                          valid=masked.valid, encoder=out)


class Wav2Vec2ForCTC(nn.Module):
  """The encoder plus dropout and a linear CTC head (`lm_head`, blank = id 0)."""

  config: ModelConfig

  @nn.compact
  def __call__(self, waveform, attention_mask=None, deterministic: bool = True) -> Wav2Vec2Output:
    """Returns Wav2Vec2Output with `logits` `[batch, frames, vocab]` float32."""
    cfg = self.config
    out = Wav2Vec2Model(cfg, name="wav2vec2")(waveform, attention_mask, None, deterministic)
    hidden = nn.Dropout(cfg.final_dropout)(out.last_hidden_state, deterministic=deterministic)
    logits = layers.dense(cfg, cfg.vocab_size, ("embed", "vocab"), "lm_head", dtype=jnp.float32)(hidden)
    return out.replace(logits=nn.with_logical_constraint(logits, ("batch", "frames", "vocab")))


MODEL_CLASSES = {
    "Wav2Vec2Model": Wav2Vec2Model,
    "Wav2Vec2ForPreTraining": Wav2Vec2ForPreTraining,
    "Wav2Vec2ForCTC": Wav2Vec2ForCTC,
}

