"""WER and CER of a CTC model over an input iterator: the trainer's validation and `experiments/evaluate.py` run
this one code path (same decoding, same text normalisation), so evaluating a saved checkpoint reproduces the
validation WER it was selected by."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines.vocab import Vocab
from wav2vec_jax import losses
from wav2vec_jax.inference import decoding, scoring

BATCH_KEYS = ("waveform", "attention_mask", "labels", "label_lengths", "utterance")


@dataclasses.dataclass
class Evaluation:
  """Attributes:
    metrics: {"wer", "cer", "loss_ctc" (nats per sentence), "utterances", "empty_share" (share of utterances whose
      hypothesis is empty: a model that still emits only blanks scores 1.0), "not_scored" (utterances of the split
      left out of the rates: see `not_scored`)} floats.
    rows: per utterance, in input order: {"id", "reference", "hypothesis", "loss_ctc"}.
    not_scored: {reason: count} of the split's utterances not in `rows`, by the input pipeline's counter names
      (`skipped/unreadable`, `skipped/too_short`, `skipped/empty_transcript`, `skipped/out_of_vocabulary` where the
      vocabulary has no `<unk>`, `skipped/decode_error`, `filtered/*`); empty when every utterance was scored.
  """

  metrics: dict[str, float]
  rows: list[dict]
  not_scored: dict[str, int] = dataclasses.field(default_factory=dict)


def _eval_fn(model, with_log_probs: bool):
  def apply(params, batch):
    out = model.apply({"params": params}, batch["waveform"], batch["attention_mask"])
    _, per_sentence = losses.ctc_loss(out.logits, out.frame_mask, batch["labels"], batch["label_lengths"])
    path, lengths = decoding.greedy_path(out.logits, out.frame_mask)
    if not with_log_probs:
      return path, per_sentence
    return path, per_sentence, jax.nn.log_softmax(out.logits.astype(jnp.float32), axis=-1), lengths

  return apply


@dataclasses.dataclass
class Scored:
  """The model's side of an evaluation, kept to decode it in several ways (e.g. a grid of LM weights).

  Attributes:
    ids, references: per utterance, in input order (references normalised).
    log_probs: per utterance `[frames_i, vocab]` float32 log-probabilities of its real frames.
    losses: per utterance CTC loss (nats per sentence).
  """

  ids: list[str]
  references: list[str]
  log_probs: list[np.ndarray]
  losses: list[float]
  not_scored: dict[str, int] = dataclasses.field(default_factory=dict)

  def decode(self, decoder, options=None) -> Evaluation:
    """WER/CER with `decoder` (a `beam.BeamSearchDecoder`, with `options` for this call) over the kept log-probs."""
    hypotheses = [h[0].text if h else "" for h in decoder.decode_batch(self.log_probs, options=options)]
    return _evaluation(self.ids, self.references, hypotheses, self.losses, self.not_scored)


def _evaluation(ids, references, hypotheses, losses_, not_scored=None) -> Evaluation:
  not_scored = not_scored or {}
  rows = [{"id": i, "reference": r, "hypothesis": h, "loss_ctc": l}
          for i, r, h, l in zip(ids, references, hypotheses, losses_)]
  rates = scoring.error_rates(references, hypotheses)
  metrics = {"wer": rates["wer"], "cer": rates["cer"], "loss_ctc": float(np.mean(losses_)),
             "utterances": float(len(rows)), "empty_share": float(np.mean([not h.strip() for h in hypotheses])),
             "not_scored": float(sum(not_scored.values()))}
  return Evaluation(metrics, rows, dict(not_scored))


class Evaluator:
  """One pass over an eval `InputIterator` (rewound to its start every call), greedy-decoded and scored.

  Each batch shape compiles once; the model runs in eval mode (no dropout, no masking).
  """

  def __init__(self, model, data, vocab: Vocab, to_global):
    """Args:
      model: Wav2Vec2ForCTC.
      data: `InputIterator` in fine-tuning mode, one epoch, unshuffled, `drop_remainder=False`.
      vocab: the labels' vocabulary.
      to_global: `(local batch dict of numpy arrays) -> dict of global jax arrays` on the run's mesh.
    """
    self.model, self.data, self.vocab, self.to_global = model, data, vocab, to_global
    self._start = data.get_state()
    self._apply = {keep: jax.jit(_eval_fn(model, keep)) for keep in (False, True)}

  def _batches(self, params, with_log_probs: bool, progress: bool):
    """Per utterance: (id, reference, greedy hypothesis, loss, `[frames, vocab]` log-probs or None)."""
    self.data.set_state(self._start)
    index = self.data.data.index
    batches = self.data
    if progress:
      import tqdm  # pylint: disable=g-import-not-at-top
      batches = tqdm.tqdm(batches, desc="evaluating", unit="batch")
    for local in batches:
      batch = self.to_global({k: local[k] for k in BATCH_KEYS})
      out = [_fetch(x) for x in self._apply[with_log_probs](params, batch)]
      path, per_sentence, utterance = out[0], out[1], _fetch(batch["utterance"])
      for row, item in enumerate(utterance):
        if item < 0:  # an empty row filling the last batch
          continue
        log_probs = out[2][row, :out[3][row]] if with_log_probs else None
        yield (index.ids[item], scoring.normalize_text(index.transcripts[item]),
               self.vocab.decode(decoding.collapse(path[row])), float(per_sentence[row]), log_probs)

  def __call__(self, params, decoder=None, *, progress: bool = False) -> Evaluation:
    """Scores `params` (the model's params tree, sharded or not): greedy, or with `decoder` (a
    `beam.BeamSearchDecoder`)."""
    if decoder is not None:
      return self.score(params, progress=progress).decode(decoder)
    ids, refs, hyps, losses_, _ = self._columns(params, False, progress)
    return _evaluation(ids, refs, hyps, losses_, self._not_scored(len(ids)))

  def score(self, params, *, progress: bool = False) -> Scored:
    """One pass keeping every utterance's log-probs, to decode them with several decoders (`Scored.decode`)."""
    ids, refs, _, losses_, log_probs = self._columns(params, True, progress)
    return Scored(ids, refs, log_probs, losses_, self._not_scored(len(ids)))

  def _columns(self, params, with_log_probs, progress):
    rows = list(self._batches(params, with_log_probs, progress))
    if not rows:
      raise ValueError("the evaluation data has no utterances: check the split and its source")
    return [list(column) for column in zip(*rows)]

  def _not_scored(self, scored: int) -> dict[str, int]:
    """{reason: count} of the split's utterances a pass of `scored` rows (all hosts') left out: those the checks
    and filters dropped before batching, and those whose audio failed to decode during the pass."""
    counts = self.data.counters()
    out = {k: v for k, v in counts.items()
           if v and k.startswith(("skipped/", "filtered/")) and k != "skipped/decode_error"}
    unread = len(self.data.data.index) - counts.get("filtered/no_bucket", 0) - scored
    if unread:
      out["skipped/decode_error"] = unread
    return out


def _fetch(x) -> np.ndarray:
  """A global array on every host (all rows, also those of other processes)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))
