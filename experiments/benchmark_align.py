r"""Forced-alignment benchmark: a synthetic long recording, its wall time and peak memory.

  python experiments/benchmark_align.py                      # 30 min, ~25,000 labels
  python experiments/benchmark_align.py --minutes=5 --labels=4000
Makes `[frames, vocab]` log-probs in which a known frame labelling is each frame's strict argmax (the path token is
1 to 3 nats above every other token), so that labelling is the best of all CTC paths and the forced alignment must
return it exactly; aligns it twice (the first run compiles) and prints one JSON line: frames, labels, seconds per
run, real-time factor, whether the path was recovered, and the process's peak resident memory (getrusage maxrss).
"""

import json
import os
import resource
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import numpy as np  # noqa: E402  pylint: disable=g-import-not-at-top

from data_pipelines.vocab import Vocab  # noqa: E402  pylint: disable=g-import-not-at-top
from wav2vec_jax.inference import alignment  # noqa: E402  pylint: disable=g-import-not-at-top

flags.DEFINE_float("minutes", 30.0, "Recording length (50 frames per second).")
flags.DEFINE_integer("labels", 25_000, "Approximate transcript length in labels (letters and word boundaries).")
flags.DEFINE_integer("seed", 0, "Random seed.")

LETTERS = "ETAOINSHRDLCUMWFGYPBVKJXQZ'"


def synthetic_recording(frames: int, labels: int, rng: np.random.Generator):
  """(transcript, vocab, log_probs `[frames, vocab]` float32, path `[frames]` int64 token per frame)."""
  words, count = [], 0
  while count < labels:
    word = "".join(rng.choice(list(LETTERS[:-1]), size=int(rng.integers(1, 9))))
    words.append(word)
    count += len(word) + 1
  text = " ".join(words)
  vocab = Vocab.from_transcripts([text, LETTERS])
  ids = vocab.encode(text)
  repeats = np.r_[False, ids[1:] == ids[:-1]]
  spare = frames - ids.size - int(repeats.sum())
  if spare < 0:
    raise ValueError(f"{ids.size} labels do not fit {frames} frames")
  # Each label gets 1 frame plus a share of the spare ones; the blank run before it 1 frame if it repeats its
  # predecessor; the spare frames go to labels and blanks at random.
  extra = rng.multinomial(spare, np.full(2 * ids.size + 1, 1.0 / (2 * ids.size + 1)))
  label_frames = 1 + extra[1::2]
  blank_frames = np.r_[repeats, False].astype(int) + extra[0::2]
  tokens = np.ravel(np.c_[np.zeros_like(ids), ids])  # blank, label, blank, label, ...
  path = np.concatenate([np.repeat(tokens, np.ravel(np.c_[blank_frames[:-1], label_frames])),
                         np.zeros(blank_frames[-1], np.int64)])
  logits = rng.normal(size=(frames, vocab.size)).astype(np.float32)
  rows = np.arange(frames)
  others = logits.copy()
  others[rows, path] = -np.inf
  logits[rows, path] = others.max(axis=1) + rng.uniform(1.0, 3.0, size=frames).astype(np.float32)
  logits -= logits.max(axis=1, keepdims=True)
  log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
  return text, vocab, log_probs.astype(np.float32), path


def main(argv):
  del argv
  f = flags.FLAGS
  frames = int(round(f.minutes * 60 / alignment.FRAME_SECONDS))
  text, vocab, log_probs, path = synthetic_recording(frames, f.labels, np.random.default_rng(f.seed))
  labels = vocab.encode(text).size
  times = []
  for _ in range(2):
    start = time.perf_counter()
    result = alignment.align(log_probs, text, vocab, name="synthetic")
    times.append(time.perf_counter() - start)
  aligned = np.zeros(frames, np.int64)
  for char in result.chars:
    aligned[char.start_frame:char.end_frame] = vocab.token_to_id(char.label)
  letters = np.where(np.isin(path, [vocab.token_to_id(vocab.word_delimiter)]), 0, path)  # chars omit "|"
  print(json.dumps({
      "audio_minutes": f.minutes, "frames": frames, "labels": labels, "words": len(result.words),
      "block_frames": alignment.auto_block_frames(frames, 2 * labels + 1),
      "seconds_first_run": round(times[0], 2), "seconds_second_run": round(times[1], 2),
      "real_time_factor": round(times[1] / (f.minutes * 60), 5), "cpus": len(os.sched_getaffinity(0)),
      "path_recovered": bool(np.array_equal(aligned, letters)),
      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


if __name__ == "__main__":
  app.run(main)
