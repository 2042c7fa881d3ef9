"""The pre-training task: masked contrastive prediction of quantized targets (fairseq's `Wav2vecCriterion`).

A task is what the one training loop (`training/loop.py`) and step (`training/step.py`) need to know about an
objective: its model, the batch keys and input mode, `loss(params, batch, key, step) -> (loss_sum, aux)` with the
sample size the summed gradient is divided by (masked frames here), how accumulated sums become metrics, which
parameters train, and health checks.
"""

import dataclasses

import jax
import jax.numpy as jnp

from wav2vec_jax import losses
from wav2vec_jax.models import masking
from wav2vec_jax.models.wav2vec2 import Wav2Vec2ForPreTraining
from wav2vec_jax.training import metrics as metrics_lib
from wav2vec_jax.training import optim


@dataclasses.dataclass(frozen=True)
class PretrainingTask:
  """wav2vec 2.0 pre-training. Hashable (closed over by the jitted step, never traced)."""

  model: Wav2Vec2ForPreTraining
  warn_at_chance_after: int = 1000  # updates before a loss at chance counts as stuck

  name = "pretrain"
  input_mode = "pretrain"  # crop to the bucket length, no padding, no labels
  groups = ("trained",)  # optimiser groups of parameter_labels
  flop_kind = "pretrain"
  batch_keys = ("waveform", "attention_mask")

  def phase(self, step: int) -> str:
    """The step variant to run at a 0-based update (one for pre-training: everything trains)."""
    del step
    return "train"

  def parameter_labels(self, params):
    """Optimiser groups (see `optim.adam`): one group, everything trains."""
    return jax.tree_util.tree_map(lambda _: "trained", params)

  def held(self, phase: str) -> tuple[str, ...]:
    """Groups paused in `phase`: none."""
    del phase
    return ()

  def loss(self, params, batch: dict, key, step):
    """Summed loss of one (micro)batch.

    Args:
      params: the model's params.
      batch: {"waveform": `[batch, samples]` float32, "attention_mask": `[batch, samples]` int32}.
      key: PRNG key of this microbatch (split into mask, negatives, dropout, gumbel).
      step: `[]` int32 applied updates so far (Gumbel temperature; skipped updates do not count).
    Returns:
      (loss_sum `[]` float32, aux): aux holds `sample_size` (masked frames), `finite` (bool) and additive sums
      for `metrics`.
    """
    cfg = self.model.config
    k_mask, k_neg, k_drop, k_gumbel = jax.random.split(key, 4)
    waveform, attention_mask = batch["waveform"], batch["attention_mask"]
    frames = masking.conv_output_lengths(waveform.shape[1], cfg.conv_kernel, cfg.conv_stride)
    frame_mask = masking.frame_mask_from_attention_mask(attention_mask, frames, cfg.conv_kernel, cfg.conv_stride)
    masked = masking.compute_time_mask(k_mask, frame_mask, cfg.mask_time_prob, cfg.mask_time_length,
                                       cfg.mask_time_min_masks)
    negatives = masking.sample_negatives(k_neg, masked.count, masked.valid, cfg.num_negatives)
    temperature = optim.gumbel_temperature(step, *cfg.gumbel_temperature)
    outputs = self.model.apply({"params": params}, waveform, attention_mask, masked, temperature, False,
                               method="pretrain", rngs={"dropout": k_drop, "gumbel": k_gumbel})
    loss, m = losses.pretraining_loss(cfg, outputs, negatives)
    n = loss.num_masked
    aux = {"sample_size": n, "finite": jnp.isfinite(loss.loss),
           "contrastive": loss.contrastive, "diversity": loss.diversity, "correct": m["accuracy"] * n,
           "feature_penalty": m["loss/feature_penalty"], "prob_perplexity": m["codebook/prob_perplexity"],
           "code_perplexity": m["codebook/code_perplexity"], "gumbel_temperature": temperature}
    return loss.loss, aux

  def metrics(self, loss_sum, aux: dict, num_microbatches: int) -> dict:
    """Flat metrics from the accumulated loss and aux sums (per masked frame, nats; `loss/bits` in bits)."""
    n = jnp.maximum(aux["sample_size"], 1.0)
    mean = lambda name: aux[name] / num_microbatches  # noqa: E731  per-microbatch values, averaged
    return {"loss/bits": loss_sum / n / jnp.log(2.0), "loss/contrastive": aux["contrastive"] / n,
            "loss/diversity": aux["diversity"] / n, "loss/feature_penalty": mean("feature_penalty"),
            "accuracy": aux["correct"] / n, "codebook/prob_perplexity": mean("prob_perplexity"),
            "codebook/code_perplexity": mean("code_perplexity"), "num_masked": aux["sample_size"],
            "gumbel_temperature": mean("gumbel_temperature")}

  def health_warnings(self, metrics: dict, step: int) -> list[str]:
    """Stuck at chance, codebook collapse, non-finite metrics (see `metrics.health_warnings`)."""
    cfg = self.model.config
    return metrics_lib.health_warnings(metrics, cfg.num_negatives, step=step, warmup_steps=self.warn_at_chance_after,
                                       num_groups=cfg.num_codevector_groups)
