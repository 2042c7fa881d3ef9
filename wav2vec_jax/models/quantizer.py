"""Gumbel-softmax product quantizer (G groups x V entries), fairseq's `GumbelVectorQuantizer`."""

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from wav2vec_jax.models import layers
from wav2vec_jax.models.config import ModelConfig


@flax.struct.dataclass
class QuantizerOutput:
  """Attributes:
    quantized: `[batch, slots, codevector_dim]` concatenated codevectors (compute dtype).
    codes: `[batch, slots, groups]` int32 selected entry per group (equal codes <=> equal quantized vectors).
    prob_perplexity: `[]` float32, sum over groups of exp(entropy of the mean softmax over valid slots);
      differentiable, drives the diversity loss.
    code_perplexity: `[]` float32, the same from hard argmax counts (logging only).
  """

  quantized: jax.Array
  codes: jax.Array
  prob_perplexity: jax.Array
  code_perplexity: jax.Array


def _perplexity(probs, valid):
  """probs `[batch, slots, G, V]`, valid `[batch, slots]` -> sum_g exp(H(mean over valid slots)).

  The entropy is fairseq's and transformers' `-sum(p * log(p + 1e-7))`: an entry whose mean probability underflows
  to exactly 0 (every frame puts it ~100 logits below the best, as steady audio does at initialisation) keeps a
  finite gradient, where `xlogy`'s derivative at 0 is NaN and would skip every update."""
  weights = valid.astype(jnp.float32)[..., None, None]
  mean = jnp.sum(probs * weights, axis=(0, 1)) / jnp.maximum(jnp.sum(weights), 1.0)
  entropy = -jnp.sum(mean * jnp.log(mean + 1e-7), axis=-1)
  return jnp.sum(jnp.exp(entropy))


class GumbelQuantizer(nn.Module):
  """Linear(conv_dim -> G*V) logits; hard straight-through Gumbel softmax in training, argmax at eval."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x, valid, temperature, deterministic: bool = True) -> QuantizerOutput:
    """Quantizes feature vectors.

    Args:
      x: `[batch, slots, conv_dim]` float32 normed conv features (masked frames only in pre-training).
      valid: `[batch, slots]` bool; only valid slots enter the perplexities.
      temperature: scalar Gumbel temperature (annealed by the train step).
      deterministic: argmax selection (eval) instead of Gumbel sampling (uses the "gumbel" RNG stream).
    Returns:
      QuantizerOutput.
    """
    cfg = self.config
    groups, entries = cfg.num_codevector_groups, cfg.num_codevectors_per_group
    codevectors = self.param(
        "codevectors", layers.partitioned(layers.uniform01, ("codebook_groups", "codevectors", "codevector_dim")),
        (groups, entries, cfg.codevector_dim // groups), cfg.weight_dtype)
    # Logits and probabilities in float32: the softmax over 320 entries and its entropy need the range.
    logits = layers.dense(cfg, groups * entries, ("conv_out", "codebook"), "weight_proj",
                          kernel_init=nn.initializers.normal(1.0), dtype=jnp.float32)(x)
    logits = logits.reshape(*logits.shape[:-1], groups, entries)
    hard_codes = jnp.argmax(logits, axis=-1)
    hard = jax.nn.one_hot(hard_codes, entries, dtype=jnp.float32)
    prob_perplexity = _perplexity(jax.nn.softmax(logits, axis=-1), valid)
    code_perplexity = _perplexity(hard, valid)
    if deterministic:
      selection, codes = hard, hard_codes
    else:
      noise = jax.random.gumbel(self.make_rng("gumbel"), logits.shape, jnp.float32)
      soft = jax.nn.softmax((logits + noise) / temperature, axis=-1)
      codes = jnp.argmax(soft, axis=-1)
      # Straight-through: forward uses the hard one-hot, gradient flows through the soft sample.
      selection = jax.nn.one_hot(codes, entries, dtype=jnp.float32) + soft - jax.lax.stop_gradient(soft)
    quantized = jnp.einsum("bsgv,gvd->bsgd", selection.astype(cfg.compute_dtype),
                           codevectors.astype(cfg.compute_dtype))
    quantized = quantized.reshape(*quantized.shape[:2], -1)
    return QuantizerOutput(quantized=quantized, codes=codes.astype(jnp.int32), prob_perplexity=prob_perplexity,
                           code_perplexity=code_perplexity)
