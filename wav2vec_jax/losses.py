"""Losses: contrastive (InfoNCE over K distractors), codebook diversity, feature penalty, and CTC.

Scaling follows fairseq's `Wav2vecCriterion`: the contrastive term is a *sum* of cross-entropies over masked
frames; the diversity term `(G*V - prob_perplexity) / (G*V)` and the feature penalty are multiplied by the number
of masked frames (the sample size) before weighting, so all three scale alike. The logged loss is the total divided
by the masked count and by ln 2 (bits per masked frame).
"""

import math

import flax.struct
import jax
import jax.numpy as jnp
import optax

from wav2vec_jax.models.config import ModelConfig

# fairseq fills distractors identical to the positive with -2**30 (finite in fp16/bf16/fp32, unlike -inf).
NEG_IS_POS_LOGIT = -(2.0**30)


def cosine_similarity_matrix(predictions, targets, eps: float = 1e-8):
  """All-pairs cosine similarity within each row, as torch.cosine_similarity (each norm clamped at eps).

  Args:
    predictions: `[batch, slots, dim]`.
    targets: `[batch, slots, dim]`.
  Returns:
    `[batch, slots, slots]` float32, entry (j, i) = cos(predictions[j], targets[i]).
  """
  p = predictions.astype(jnp.float32)
  t = targets.astype(jnp.float32)
  p = p / jnp.maximum(jnp.linalg.norm(p, axis=-1, keepdims=True), eps)
  t = t / jnp.maximum(jnp.linalg.norm(t, axis=-1, keepdims=True), eps)
  return jnp.einsum("bjd,bid->bji", p, t, precision=jax.lax.Precision.HIGHEST)


def contrastive_logits(projected_states, projected_quantized, codes, negatives, logit_temperature: float):
  """Logits of the positive (index 0) and K distractors for every masked slot.

  The similarity matrix between a row's masked predictions and targets is computed once and gathered, which is
  cheaper than materialising `[batch, slots, K, dim]` distractor vectors.

  Args:
    projected_states: `[batch, slots, final_dim]` predictions c_t.
    projected_quantized: `[batch, slots, final_dim]` targets q_t.
    codes: `[batch, slots, groups]` int32 quantizer codes; a distractor with the positive's codes is the positive.
    negatives: `[batch, slots, K]` int32 slot indices of the distractors.
    logit_temperature: kappa.
  Returns:
    `[batch, slots, 1 + K]` float32 logits.
  """
  sims = cosine_similarity_matrix(projected_states, projected_quantized) / logit_temperature
  positive = jnp.diagonal(sims, axis1=1, axis2=2)[..., None]
  negative = jnp.take_along_axis(sims, negatives, axis=2)
  negative_codes = jax.vmap(lambda c, idx: c[idx])(codes, negatives)  # [batch, slots, K, groups]
  neg_is_pos = jnp.all(negative_codes == codes[:, :, None, :], axis=-1)
  negative = jnp.where(neg_is_pos, NEG_IS_POS_LOGIT, negative)
  return jnp.concatenate([positive, negative], axis=-1)


@flax.struct.dataclass
class PretrainLoss:
  """Attributes (float32 scalars): total loss (sum scale) and its parts, and the sample size."""

  loss: jax.Array
  contrastive: jax.Array
  diversity: jax.Array
  feature_penalty: jax.Array
  num_masked: jax.Array


def pretraining_loss(config: ModelConfig, outputs, negatives):
  """fairseq's wav2vec 2.0 criterion.

  Args:
    config: model config (logit temperature, loss weights, codebook size).
    outputs: `PretrainOutput` of `Wav2Vec2ForPreTraining.pretrain`.
    negatives: `[batch, slots, K]` int32 from `masking.sample_negatives`.
  Returns:
    (PretrainLoss, metrics) where metrics is a flat dict of float32 scalars: `loss/bits` (total / masked / ln 2),
    `loss/contrastive`, `loss/diversity`, `loss/feature_penalty` (each per masked frame, in nats, unweighted),
    `accuracy`, `codebook/prob_perplexity`, `codebook/code_perplexity`, `num_masked`.
  """
  valid = outputs.valid.astype(jnp.float32)
  num_masked = jnp.sum(valid)
  logits = contrastive_logits(outputs.projected_states, outputs.projected_quantized_states, outputs.quantizer.codes,
                              negatives, config.logit_temperature)
  cross_entropy = jax.nn.logsumexp(logits, axis=-1) - logits[..., 0]
  contrastive = jnp.sum(cross_entropy * valid)
  num_vars = config.num_codevectors
  diversity = (num_vars - outputs.quantizer.prob_perplexity) / num_vars * num_masked
  feature_penalty = outputs.encoder.feature_penalty * num_masked
  total = (contrastive + config.diversity_loss_weight * diversity + config.feature_pen_weight * feature_penalty)

  # fairseq's accuracy: argmax at the positive, not counting rows whose logits are all equal (argmax == argmin).
  is_max = jnp.argmax(logits, axis=-1) == 0
  is_min = jnp.argmin(logits, axis=-1) == 0
  correct = jnp.sum((is_max & ~is_min) * valid)
  denom = jnp.maximum(num_masked, 1.0)
  metrics = {
      "loss/bits": total / denom / math.log(2),
      "loss/contrastive": contrastive / denom,
      "loss/diversity": diversity / denom,
      "loss/feature_penalty": outputs.encoder.feature_penalty,
      "accuracy": correct / denom,
      "codebook/prob_perplexity": outputs.quantizer.prob_perplexity,
      "codebook/code_perplexity": outputs.quantizer.code_perplexity,
      "num_masked": num_masked,
  }
  loss = PretrainLoss(loss=total, contrastive=contrastive, diversity=diversity, feature_penalty=feature_penalty,
                      num_masked=num_masked)
  return loss, metrics


def chance_level_bits(num_negatives: int) -> float:
  """Contrastive loss of a model that cannot tell the positive from K distractors: log2(K + 1) bits."""
  return math.log2(num_negatives + 1)


def ctc_loss(logits, frame_mask, labels, label_lengths, blank_id: int = 0):
  """Connectionist temporal classification loss with zero-infinity semantics, in float32.

  A sentence whose labels cannot be aligned to its frames (fewer valid frames than labels plus repeated
  neighbours, which need a blank in between) has infinite loss; such losses, and any non-finite one, become 0 with
  a zero gradient, as transformers' `ctc_zero_infinity=True` and fairseq's `zero_infinity: true`.

  Reductions of the returned per-sentence losses (all in nats):
    * transformers "mean": `mean(per_sentence / max(label_lengths, 1))` (each sentence divided by its target
      length, then averaged over the batch);
    * fairseq's CTC criterion: `loss_sum / sample_size`, where the sample size is the number of sentences when
      `sentence_avg` is set (the wav2vec 2.0 fine-tuning recipes) and the number of target tokens otherwise.

  Args:
    logits: `[batch, frames, vocab]` unnormalised scores (cast to float32; log-softmax is taken here).
    frame_mask: `[batch, frames]` bool, True for frames inside each row's length.
    labels: `[batch, max_labels]` int32 target ids, right-padded (padding ids are ignored; 0 by convention).
    label_lengths: `[batch]` int32 number of real labels per row.
    blank_id: id of the CTC blank (0 in this project's vocabularies).
  Returns:
    (loss_sum, per_sentence): `[]` float32 sum over the batch and `[batch]` float32 negative log-likelihoods.
  """

  logits = logits.astype(jnp.float32)
  labels = labels.astype(jnp.int32)
  label_lengths = label_lengths.astype(jnp.int32)
  positions = jnp.arange(labels.shape[1])[None, :]
  label_valid = positions < label_lengths[:, None]
  per_sentence = optax.ctc_loss(logits, 1.0 - frame_mask.astype(jnp.float32), labels,
                                1.0 - label_valid.astype(jnp.float32), blank_id=blank_id)
  # optax approximates log(0) by a finite epsilon, so an impossible alignment is large but finite: detect it.
  repeats = jnp.sum((labels[:, 1:] == labels[:, :-1]) & label_valid[:, 1:], axis=-1)
  feasible = label_lengths + repeats <= jnp.sum(frame_mask.astype(jnp.int32), axis=-1)
  per_sentence = jnp.where(feasible & jnp.isfinite(per_sentence), per_sentence, 0.0)
  return jnp.sum(per_sentence), per_sentence
