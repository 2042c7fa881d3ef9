"""CTC decoders. Greedy (best path): argmax per frame on the device, then collapse repeats and drop blanks.

Used by the trainer's validation and by evaluation; every decoder returns label ids per utterance, which
`data_pipelines.vocab.Vocab.decode` turns into text.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


def greedy_path(logits, frame_mask):
  """Best path per frame.

  Args:
    logits: `[batch, frames, vocab]` float32 (or bf16) CTC scores.
    frame_mask: `[batch, frames]` bool, True for real frames.
  Returns:
    (path `[batch, frames]` int32 argmax ids, -1 at padded frames; lengths `[batch]` int32 real frames).
  """
  path = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  return jnp.where(frame_mask, path, -1), jnp.sum(frame_mask, axis=-1).astype(jnp.int32)


def collapse(path: np.ndarray, blank_id: int = 0) -> np.ndarray:
  """CTC collapse of one path: merge runs of the same id, then drop blanks (and padding, -1).

  Args:
    path: `[frames]` int ids.
  Returns:
    `[labels]` int32 ids.
  """
  path = np.asarray(path).reshape(-1)
  if path.size == 0:
    return path.astype(np.int32)
  keep = np.ones(path.shape, bool)
  keep[1:] = path[1:] != path[:-1]
  out = path[keep]
  return out[(out != blank_id) & (out >= 0)].astype(np.int32)


def greedy_decode(logits, frame_mask, blank_id: int = 0) -> list[np.ndarray]:
  """Greedy CTC decoding of a batch.

  Args:
    logits: `[batch, frames, vocab]` CTC scores (device or numpy).
    frame_mask: `[batch, frames]` bool.
    blank_id: the blank (0 in this project's vocabularies).
  Returns:
    One `[labels]` int32 array of ids per row.
  """
  path, _ = jax.device_get(_greedy_path_jit(logits, frame_mask))
  return [collapse(row, blank_id) for row in np.asarray(path)]


_greedy_path_jit = jax.jit(greedy_path)


@dataclasses.dataclass(frozen=True)
class Word:
  """One decoded word with its time span.

  Attributes:
    text: the word.
    start: start in seconds (start of its first character's first frame).
    end: end in seconds (end of its last character's last frame).
    confidence: mean probability of the word's characters over their frames, in [0, 1] (nan if unknown).
  """

  text: str
  start: float
  end: float
  confidence: float = float("nan")


def token_runs(path: np.ndarray, blank_id: int = 0) -> list[tuple[int, int, int]]:
  """Non-blank runs of a frame path: what CTC collapsing keeps, with where each kept token sits.

  Args:
    path: `[frames]` int ids (-1 = padding, treated as blank).
  Returns:
    (token id, first frame, end frame exclusive) per collapsed token, in order.
  """
  path = np.asarray(path).reshape(-1)
  runs = []
  start = 0
  for t in range(1, path.size + 1):
    if t == path.size or path[t] != path[start]:
      if path[start] != blank_id and path[start] >= 0:
        runs.append((int(path[start]), start, t))
      start = t
  return runs


def words_from_runs(runs, tokens, word_delimiter: str, seconds_per_frame: float,
                    frame_probs: np.ndarray | None = None, skip=()) -> list[Word]:
  """Groups collapsed tokens into words at the word delimiter.

  Args:
    runs: `token_runs` output.
    tokens: id -> symbol (`Vocab.tokens`).
    word_delimiter: the boundary symbol (`|`); special tokens in `skip` are dropped.
    seconds_per_frame: frame hop in seconds (0.02 for the standard conv stack at 16 kHz).
    frame_probs: optional `[frames]` float32 probability of each frame's chosen token, for confidences.
  Returns:
    Word per run of non-delimiter tokens.
  """
  words, current = [], []

  def flush():
    if current:
      text = "".join(tokens[i] for i, _, _ in current)
      first, last = current[0][1], current[-1][2]
      conf = (float(np.mean(np.concatenate([frame_probs[s:e] for _, s, e in current])))
              if frame_probs is not None else float("nan"))
      words.append(Word(text, first * seconds_per_frame, last * seconds_per_frame, conf))
      current.clear()

  for run in runs:
    symbol = tokens[run[0]]
    if symbol == word_delimiter or symbol.isspace():
      flush()
    elif symbol not in skip:
      current.append(run)
  flush()
  return words
