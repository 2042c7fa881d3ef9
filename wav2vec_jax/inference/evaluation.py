"""WER and CER of a CTC model over an input iterator: the trainer's validation and `experiments/evaluate.py` run
this one code path (same decoding, same text normalisation), so evaluating a saved checkpoint reproduces the
validation WER it was selected by."""

import dataclasses

import jax
import numpy as np

from data_pipelines.vocab import Vocab
from wav2vec_jax import losses
from wav2vec_jax.inference import decoding, scoring

BATCH_KEYS = ("waveform", "attention_mask", "labels", "label_lengths", "utterance")


@dataclasses.dataclass
class Evaluation:
  """Attributes:
    metrics: {"wer", "cer", "loss_ctc" (nats per sentence), "utterances"} floats.
    rows: per utterance, in input order: {"id", "reference", "hypothesis", "loss_ctc"}.
  """

  metrics: dict[str, float]
  rows: list[dict]


def _eval_fn(model):
  def apply(params, batch):
    out = model.apply({"params": params}, batch["waveform"], batch["attention_mask"])
    _, per_sentence = losses.ctc_loss(out.logits, out.frame_mask, batch["labels"], batch["label_lengths"])
    path, _ = decoding.greedy_path(out.logits, out.frame_mask)
    return path, per_sentence

  return apply


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
    self._apply = jax.jit(_eval_fn(model))

  def __call__(self, params) -> Evaluation:
    """Scores `params` (the model's params tree, sharded or not)."""
    self.data.set_state(self._start)
    index = self.data.data.index
    rows = []
    for local in self.data:
      batch = self.to_global({k: local[k] for k in BATCH_KEYS})
      path, per_sentence = self._apply(params, batch)
      path, per_sentence, utterance = (_fetch(x) for x in (path, per_sentence, batch["utterance"]))
      for row, item in enumerate(utterance):
        if item < 0:  # an empty row filling the last batch
          continue
        rows.append({"id": index.ids[item], "reference": scoring.normalize_text(index.transcripts[item]),
                     "hypothesis": self.vocab.decode(decoding.collapse(path[row])),
                     "loss_ctc": float(per_sentence[row])})
    rates = scoring.error_rates([r["reference"] for r in rows], [r["hypothesis"] for r in rows])
    metrics = {"wer": rates["wer"], "cer": rates["cer"],
               "loss_ctc": float(np.mean([r["loss_ctc"] for r in rows])), "utterances": float(len(rows))}
    return Evaluation(metrics, rows)


def _fetch(x) -> np.ndarray:
  """A global array on every host (all rows, also those of other processes)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))
