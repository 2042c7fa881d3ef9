"""The CTC fine-tuning task (fairseq's `ctc` criterion with `sentence_avg: true`, zero-infinity, float32).

Parameter groups: the conv feature encoder never trains (fairseq `feature_grad_mult: 0.0`, transformers'
`freeze_feature_encoder()`); the rest of the wav2vec 2.0 trunk is held for the first `freeze_updates` (fairseq
`freeze_finetune_updates`: only the CTC head trains, and the trunk gets no gradient at all, so XLA drops its
backward pass) and trains from then on, with Adam moments and bias correction counted from its own first update.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp

from wav2vec_jax import losses
from wav2vec_jax.models.wav2vec2 import Wav2Vec2ForCTC
from wav2vec_jax.training import optim

_CONV_ENCODER = ("wav2vec2", "feature_extractor")
_TRUNK = ("wav2vec2",)


def _path_names(path) -> tuple[str, ...]:
  return tuple(str(getattr(entry, "key", getattr(entry, "name", entry))) for entry in path)


@dataclasses.dataclass(frozen=True)
class CTCTask:
  """CTC fine-tuning of a Wav2Vec2ForCTC. Hashable (closed over by the jitted step, never traced)."""

  model: Wav2Vec2ForCTC
  freeze_updates: int = 0  # updates during which only the CTC head trains (fairseq freeze_finetune_updates)

  name = "ctc"
  input_mode = "finetune"  # padded batches with labels
  groups = ("frozen", "trunk", "head")  # optimiser groups of parameter_labels
  flop_kind = "ctc"
  batch_keys = ("waveform", "attention_mask", "labels", "label_lengths")

  def phase(self, step: int) -> str:
    """"frozen" (head only) before `freeze_updates` applied updates (the loop passes the batches processed less the
    updates skipped for a non-finite loss, as fairseq counts `num_updates`), "train" after; each phase is its own
    compiled step."""
    return "frozen" if step < self.freeze_updates else "train"

  def parameter_labels(self, params):
    """Optimiser groups: "frozen" (conv encoder), "trunk" (the rest of `wav2vec2`), "head" (`lm_head`)."""
    def label(path, _):
      names = _path_names(path)
      if names[:len(_CONV_ENCODER)] == _CONV_ENCODER:
        return optim.FROZEN
      return "trunk" if names[:len(_TRUNK)] == _TRUNK else "head"

    return jax.tree_util.tree_map_with_path(label, params)

  def held(self, phase: str) -> tuple[str, ...]:
    """Groups paused in `phase`: the trunk while frozen."""
    return ("trunk",) if phase == "frozen" else ()

  def loss(self, params, batch: dict, key, step):
    """Summed CTC loss of one (micro)batch.

    Args:
      params: Wav2Vec2ForCTC params.
      batch: {"waveform": `[batch, samples]` float32, "attention_mask": `[batch, samples]` int32, "labels":
        `[batch, max_labels]` int32 (0-padded), "label_lengths": `[batch]` int32 (0: an empty row, ignored)}.
      key: PRNG key (dropout, SpecAugment masks).
      step: `[]` int32 update step (unused).
    Returns:
      (loss_sum `[]` float32 nats, aux): `sample_size` = sentences with labels, `finite` = all logits finite
      (zero-infinity would hide a NaN input), and sums for `metrics`.
    """
    del step
    k_dropout, k_mask = jax.random.split(key)
    outputs = self.model.apply({"params": params}, batch["waveform"], batch["attention_mask"], deterministic=False,
                               rngs={"dropout": k_dropout, "mask": k_mask})
    loss_sum, per_sentence = losses.ctc_loss(outputs.logits, outputs.frame_mask, batch["labels"],
                                             batch["label_lengths"])
    has_labels = batch["label_lengths"] > 0
    aux = {"sample_size": jnp.sum(has_labels).astype(jnp.float32),
           "finite": jnp.all(jnp.isfinite(outputs.logits)),
           "tokens": jnp.sum(batch["label_lengths"]).astype(jnp.float32),
           "zeroed": jnp.sum((per_sentence == 0.0) & has_labels).astype(jnp.float32)}
    return loss_sum, aux

  def metrics(self, loss_sum, aux: dict, num_microbatches: int) -> dict:
    """`loss/ctc` (nats per sentence, the optimised value), `loss/ctc_per_token`, `ctc/zeroed_sentences`
    (impossible alignments: labels longer than the frames allow), `num_sentences`."""
    del num_microbatches
    return {"loss/ctc": loss_sum / jnp.maximum(aux["sample_size"], 1.0),
            "loss/ctc_per_token": loss_sum / jnp.maximum(aux["tokens"], 1.0),
            "ctc/zeroed_sentences": aux["zeroed"], "num_sentences": aux["sample_size"]}

  def health_warnings(self, metrics: dict, step: int) -> list[str]:
    """Non-finite metrics; sentences whose labels cannot fit their frames (counted, trained as zero loss); a
    validation where nearly every hypothesis is empty (blank-only output) after the freeze."""
    warnings = [f"non-finite metric {k}" for k, v in metrics.items() if not math.isfinite(v)]
    if metrics.get("ctc/zeroed_sentences", 0) > 0:
      warnings.append(f"step {step}: {int(metrics['ctc/zeroed_sentences'])} sentences have more labels than their "
                      "frames can align (zero loss, no gradient): check transcripts against audio lengths")
    if metrics.get("val/empty_share", 0.0) >= 0.9 and step > self.freeze_updates:
      warnings.append(f"step {step}: {metrics['val/empty_share']:.0%} of validation hypotheses are empty (the model "
                      "emits only blanks, WER 1.0): normal early in fine-tuning; if it persists, raise the learning "
                      "rate or train longer, and check that the labels match the audio (README, Troubleshooting)")
    return warnings
