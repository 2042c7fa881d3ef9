"""Validation of a CTC model in the loop: greedy-decoded WER and CER (jiwer) and the CTC loss on a held-out split."""

import jax
import numpy as np

from data_pipelines.vocab import Vocab
from wav2vec_jax import losses
from wav2vec_jax.inference import decoding, scoring


def _eval_fn(model):
  def apply(params, batch):
    out = model.apply({"params": params}, batch["waveform"], batch["attention_mask"])
    _, per_sentence = losses.ctc_loss(out.logits, out.frame_mask, batch["labels"], batch["label_lengths"])
    path, _ = decoding.greedy_path(out.logits, out.frame_mask)
    return path, per_sentence

  return apply


class CTCValidator:
  """Runs one pass over the eval iterator (rebuilt from its start every call) and scores it.

  Each batch shape compiles once; the model runs in eval mode (no dropout, no masking).
  """

  def __init__(self, model, data, vocab: Vocab, to_global):
    """Args: model: Wav2Vec2ForCTC. data: eval `InputIterator` (one epoch, unshuffled). vocab: the labels' vocab.
    to_global: `(local batch dict) -> global jax arrays`, the loop's host-to-mesh function."""
    self.model, self.data, self.vocab, self.to_global = model, data, vocab, to_global
    self._start = data.get_state()
    self._apply = jax.jit(_eval_fn(model))
    self.references = data.data.index.transcripts

  def __call__(self, params) -> dict[str, float]:
    """Returns `val/wer`, `val/cer`, `val/loss_ctc` (nats per sentence) and `val/utterances`."""
    self.data.set_state(self._start)
    refs, hyps, loss_sum, sentences = [], [], 0.0, 0
    for local in self.data:
      batch = self.to_global({k: local[k] for k in ("waveform", "attention_mask", "labels", "label_lengths",
                                                     "utterance")})
      path, per_sentence = self._apply(params, batch)
      path, per_sentence, utterance = (_fetch(x) for x in (path, per_sentence, batch["utterance"]))
      for row, item in enumerate(utterance):
        if item < 0:  # an empty row filling the last batch
          continue
        hyps.append(self.vocab.decode(decoding.collapse(path[row])))
        refs.append(self.references[item])
        loss_sum += float(per_sentence[row])
        sentences += 1
    rates = scoring.error_rates(refs, hyps)
    return {"val/wer": rates["wer"], "val/cer": rates["cer"], "val/loss_ctc": loss_sum / max(sentences, 1),
            "val/utterances": float(sentences)}


def _fetch(x) -> np.ndarray:
  """A global array on every host (all rows, also those of other processes)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))
