"""CTC decoders. Greedy (best path): argmax per frame on the device, then collapse repeats and drop blanks.

Used by the trainer's validation and by evaluation; every decoder returns label ids per utterance, which
`data_pipelines.vocab.Vocab.decode` turns into text.
"""

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
