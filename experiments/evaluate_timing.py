r"""Word timing accuracy and long-audio consistency of a CTC checkpoint on the generated corpus.

  python experiments/evaluate_timing.py --checkpoint=/tmp/wav2vec_jax/finetune/best --split=test

1. Forced alignment: each utterance of the split aligned to its transcript; word start and end times against
   eSpeak NG's ground-truth word timings (the corpus' `.alignment.json` files). Median and 95th percentile of the
   absolute errors.
2. Long audio: utterances of the split concatenated into one file of `--long_minutes`, transcribed in windows
   (`--chunk_s`) and whole; CER between the two texts and against the reference, and the differences between the
   word times of the reference force-aligned on each.
Prints one JSON object.
"""

import json
import os
import sys

import jiwer
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from data_pipelines import audio, sources  # noqa: E402  pylint: disable=g-import-not-at-top
from data_pipelines.corpus import alignments  # noqa: E402  pylint: disable=g-import-not-at-top
from wav2vec_jax.inference import alignment  # noqa: E402  pylint: disable=g-import-not-at-top
from wav2vec_jax.inference.recognizer import Recognizer  # noqa: E402  pylint: disable=g-import-not-at-top

def define_flags():
  """The entry point's flags (defined only when run as a script, so tests can import this module)."""
  flags.DEFINE_string("checkpoint", None, "CTC checkpoint (e.g. <finetune workdir>/best).")
  flags.DEFINE_string("corpus", "", "Generated corpus folder (default: the cached default corpus).")
  flags.DEFINE_string("split", "test", "Held-out split.")
  flags.DEFINE_float("long_minutes", 3.0, "Length of the concatenated long file (0: skip).")
  flags.DEFINE_float("chunk_s", 20.0, "Window seconds for the long file.")
  flags.DEFINE_float("context_s", 3.0, "Context seconds each side of a window.")


def _percentiles(errors) -> dict:
  errors = np.abs(np.asarray(errors, np.float64))
  return {"median_ms": round(float(np.median(errors)) * 1000, 1), "p95_ms": round(float(np.percentile(errors, 95)) * 1000, 1),
          "words": int(errors.size)}


def alignment_errors(recognizer: Recognizer, corpus: str, split: str) -> dict:
  """Forced-alignment word times against eSpeak NG's, over the split's aligned utterances.

  Returns:
    {"start": {"median_ms", "p95_ms", "words"}, "end": {...}, "utterances": int}.
  """
  truth = alignments.read_word_alignments(corpus, split)
  index = sources.librispeech_folder(corpus, split)
  rows = [i for i, utt in enumerate(index.ids) if utt in truth]
  ids = [index.ids[i] for i in rows]
  log_probs = recognizer.log_probs_batch([audio.load_waveform(index.reader.paths[i]) for i in rows])
  aligned = alignment.align_batch(log_probs, [index.transcripts[i] for i in rows], recognizer.vocab, names=ids)
  starts, ends = [], []
  for utt, result in zip(ids, aligned):
    reference = truth[utt]
    if [w.label for w in result.words] != [w.word for w in reference]:
      raise ValueError(f"{utt}: aligned words {[w.label for w in result.words]} differ from the timed transcript")
    starts += [a.start - r.start for a, r in zip(result.words, reference)]
    ends += [a.end - r.end for a, r in zip(result.words, reference)]
  count = len(ids)
  return {"start": _percentiles(starts), "end": _percentiles(ends), "utterances": count}


def long_audio_consistency(recognizer: Recognizer, whole: Recognizer, corpus: str, split: str, minutes: float) -> dict:
  """Windowed vs whole-file transcription of the split's utterances concatenated to `minutes` of audio.

  Args:
    recognizer: windowed (its chunk_s shorter than the file); whole: the same model with one window.
  Returns:
    {"seconds", "windows", "cer_between", "cer_windowed_vs_reference", "cer_whole_vs_reference", "words",
    "windowed_words", "aligned_words", "start_diff", "end_diff"} (diffs in ms:
    median, p95, max over the words both transcripts have at the same place).
  """
  index = sources.librispeech_folder(corpus, split)
  pieces, texts, total = [], [], 0
  for i in range(len(index.ids)):
    if total >= minutes * 60 * 16000:
      break
    pieces.append(audio.load_waveform(index.reader.paths[i]))
    texts.append(index.transcripts[i])
    total += pieces[-1].size
  waveform, reference = np.concatenate(pieces), " ".join(" ".join(texts).split())
  duration = waveform.size / 16000
  windowed_lp, whole_lp = recognizer.log_probs(waveform), whole.log_probs(waveform)
  chunked, full = recognizer.decode(windowed_lp, duration), whole.decode(whole_lp, duration)
  # Word times of the reference text force-aligned to both (the weak tiny model's greedy words are too unstable
  # to pair up; the alignment is constrained by the text).
  by_windows, by_whole = alignment.align_batch([windowed_lp, whole_lp], [reference] * 2, recognizer.vocab,
                                               names=["windowed", "whole"])
  start_diff = [a.start - b.start for a, b in zip(by_windows.words, by_whole.words)]
  end_diff = [a.end - b.end for a, b in zip(by_windows.words, by_whole.words)]

  def stats(diffs):
    d = np.abs(np.asarray(diffs or [0.0]))
    return {"median_ms": round(float(np.median(d)) * 1000, 1), "p95_ms": round(float(np.percentile(d, 95)) * 1000, 1),
            "max_ms": round(float(d.max()) * 1000, 1)}

  frames = recognizer.num_frames(waveform.size)
  from wav2vec_jax.inference.recognizer import window_plan  # pylint: disable=g-import-not-at-top
  return {"seconds": round(waveform.size / 16000, 1),
          "windows": len(window_plan(frames, recognizer.window_frames, recognizer.context_frames)),
          "cer_between": float(jiwer.cer(full.text or "-", chunked.text or "-")),
          "cer_windowed_vs_reference": float(jiwer.cer(reference, chunked.text or "-")),
          "cer_whole_vs_reference": float(jiwer.cer(reference, full.text or "-")),
          "words": len(full.words), "windowed_words": len(chunked.words),
          "aligned_words": len(start_diff), "start_diff": stats(start_diff), "end_diff": stats(end_diff)}


def evaluate(checkpoint: str, corpus: str, split: str, long_minutes: float, chunk_s: float, context_s: float) -> dict:
  """Both measurements for one checkpoint; see the module docstring."""
  if not corpus:
    from data_pipelines.corpus import cache  # pylint: disable=g-import-not-at-top
    corpus = os.fspath(cache.ensure_default_corpus())
  windowed = Recognizer.from_pretrained(checkpoint, chunk_s=chunk_s, context_s=context_s)
  result = {"checkpoint": checkpoint, "split": split, "alignment": alignment_errors(windowed, corpus, split)}
  if long_minutes > 0:
    whole = Recognizer(windowed.model, {"params": windowed.params}, windowed.vocab, normalize=windowed.normalize,
                       chunk_s=long_minutes * 60 + 60)
    result["long_audio"] = long_audio_consistency(windowed, whole, corpus, split, long_minutes)
  return result


def main(argv):
  del argv
  f = flags.FLAGS
  print(json.dumps(evaluate(f.checkpoint, f.corpus, f.split, f.long_minutes, f.chunk_s, f.context_s)))


if __name__ == "__main__":
  define_flags()
  flags.mark_flag_as_required("checkpoint")
  app.run(main)
