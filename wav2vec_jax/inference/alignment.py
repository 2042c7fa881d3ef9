"""CTC forced alignment: the Viterbi best path constrained to a transcript, batched, on the device.

The trellis runs over the usual extended label sequence `blank, y1, blank, y2, ..., yL, blank` (S = 2L + 1
states): state s at frame t comes from s (stay), s - 1 (advance) or s - 2 (skip a blank; only between two different
labels, so equal neighbours need a blank between them). Backpointers are those offsets, stored as int8.

Long recordings. A full trellis of backpointers is frames x states bytes (30 min = 90,000 frames x 50,001 states =
4.5 GB). With `block_frames=K` the search is checkpointed instead, and stays exact: a first pass over the frames
keeps only the Viterbi scores entering each block of K frames (`[frames / K, batch, states]` float32); the second
pass walks the blocks from last to first, recomputes one block's int8 backpointers from its checkpoint and traces
the path back through it. Memory is O(states x (frames / K + K)) (K = 2 sqrt(frames) balances the two: 30 min ->
~60 MB), time about twice one forward pass, and the result equals the full trellis' bit for bit (the same float32
additions and maxima, in the same order). Time stays O(frames x states), i.e. quadratic in the duration: 30 min with a
25,000-label transcript takes 30-50 s on 2 CPU cores and ~450 MB of memory in all (`experiments/benchmark_align.py`);
split multi-hour recordings first.

Time convention: one CTC frame per 320 samples of 16 kHz audio, so frame t spans [0.02 t, 0.02 (t + 1)) seconds
(`FRAME_SECONDS`; the first frame's 400-sample receptive field is ignored, as Hugging Face's word offsets do). A
segment covering frames [a, b) starts at 0.02 a and ends at 0.02 b. Segment scores are the mean per-frame
probability of the path's token over the segment's frames.

Text outside the vocabulary never fails: each run of unknown characters becomes one wildcard ("star") label whose
log-prob column is, per frame, the best non-blank token's (as torchaudio's and NeMo's aligners); the words holding
one are flagged `oov` (`encode_transcript`).
"""

import dataclasses
import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from wav2vec_jax.inference.alignment_text import (  # noqa: F401  (re-exported: the alignment API in one place)
    FRAME_SECONDS, Alignment, AlignmentError, Segment, Transcript, encode_transcript, segments)

_NEG_INF = -np.inf


@dataclasses.dataclass(frozen=True)
class ViterbiPath:
  """The best constrained CTC path of each row (device or host arrays).

  Attributes:
    states: `[batch, frames]` int32 extended-sequence state per frame (even = blank, 2j + 1 = label j); -1 on
      padded frames.
    label_index: `[batch, frames]` int32 index j into the target sequence of the label emitted at that frame, -1 on
      blank and padded frames.
    tokens: `[batch, frames]` int32 token id of the path (the blank on blank frames), -1 on padded frames.
    frame_log_probs: `[batch, frames]` float32 log-prob of the path's token at each frame, 0 on padded frames.
    score: `[batch]` float32 total log-prob of the path; -inf where the row cannot be aligned.
  """

  states: jax.Array
  label_index: jax.Array
  tokens: jax.Array
  frame_log_probs: jax.Array
  score: jax.Array


jax.tree_util.register_dataclass(ViterbiPath, data_fields=[f.name for f in dataclasses.fields(ViterbiPath)],
                                 meta_fields=[])


def required_frames(targets: np.ndarray) -> int:
  """Fewest frames that can hold a label sequence: one per label, plus a blank between equal neighbours.

  Args:
    targets: `[labels]` int label ids.
  Returns:
    labels + number of adjacent equal pairs.
  """
  targets = np.asarray(targets).reshape(-1)
  return int(targets.size + np.count_nonzero(targets[1:] == targets[:-1]))


def check_alignable(lengths, targets, target_lengths, *, vocab_size: int | None = None, blank_id: int = 0,
                    names: Sequence[str] | None = None) -> None:
  """Raises AlignmentError for a row whose transcript cannot fit its frames, or whose labels are invalid.

  Args:
    lengths: `[batch]` int frames per row.
    targets: `[batch, labels]` int padded label ids.
    target_lengths: `[batch]` int labels per row.
    vocab_size: number of log-prob columns, to check label ids (optional).
    blank_id: the CTC blank, which cannot be a target label.
    names: utterance ids for the messages (default: "row i").
  """
  lengths, targets, target_lengths = (np.asarray(x) for x in (lengths, targets, target_lengths))
  for row in range(targets.shape[0]):
    name = names[row] if names is not None else f"row {row}"
    labels = targets[row, :int(target_lengths[row])]
    if target_lengths[row] > targets.shape[1] or target_lengths[row] < 0:
      raise AlignmentError(f"{name}: target length {int(target_lengths[row])} outside the padded targets' "
                           f"{targets.shape[1]} columns")
    bad = labels[(labels == blank_id) | (labels < 0) | ((labels >= vocab_size) if vocab_size else False)]
    if bad.size:
      raise AlignmentError(f"{name}: label id {int(bad[0])} is the blank or outside the {vocab_size}-column "
                           "vocabulary; targets hold label ids without blanks")
    need = required_frames(labels)
    if need > int(lengths[row]):
      raise AlignmentError(
          f"{name}: transcript of {labels.size} labels ({need - labels.size} repeated pairs needing a blank "
          f"between) needs at least {need} frames ({need * FRAME_SECONDS:.2f} s) but the audio has "
          f"{int(lengths[row])} frames ({int(lengths[row]) * FRAME_SECONDS:.2f} s): the transcript is too long "
          "for the audio or belongs to another file")


def extended_states(targets, blank_id: int = 0):
  """The extended label sequence and where skipping a blank is allowed.

  Args:
    targets: `[batch, labels]` int32 label ids.
    blank_id: the CTC blank.
  Returns:
    (ext `[batch, 2 * labels + 1]` int32 token id per state; skip `[batch, 2 * labels + 1]` bool, True where state
    s may be entered from s - 2).
  """
  batch, labels = targets.shape
  ext = jnp.full((batch, 2 * labels + 1), blank_id, jnp.int32).at[:, 1::2].set(targets.astype(jnp.int32))
  prev = jnp.pad(ext, ((0, 0), (2, 0)), constant_values=blank_id)[:, :-2]
  return ext, (ext != blank_id) & (ext != prev)


def _step(alpha, inputs, ext, skip):
  """One Viterbi frame: `[batch, states]` scores in, scores and int8 backpointer offsets out."""
  log_probs_t, live = inputs  # [batch, vocab], [batch] bool (False on padded frames)
  neg = jnp.full_like(alpha[:, :1], _NEG_INF)
  stay, advance = alpha, jnp.concatenate([neg, alpha[:, :-1]], axis=1)
  jump = jnp.where(skip, jnp.concatenate([neg, neg, alpha[:, :-2]], axis=1), _NEG_INF)
  best = jnp.maximum(stay, jnp.maximum(advance, jump))
  offset = jnp.where(stay >= best, 0, jnp.where(advance >= best, 1, 2)).astype(jnp.int8)  # ties: stay first
  emitted = best + jnp.take_along_axis(log_probs_t, ext, axis=1)
  live = live[:, None]
  return jnp.where(live, emitted, alpha), jnp.where(live, offset, jnp.int8(0))


def _forward(alpha, log_probs, live, ext, skip):
  """Scores after a run of frames (`log_probs` `[frames, batch, vocab]`, `live` `[frames, batch]`), no pointers."""
  return jax.lax.scan(lambda a, x: (_step(a, x, ext, skip)[0], None), alpha, (log_probs, live))[0]


def _trace_block(alpha_in, log_probs, live, ext, skip, state_out, final, target_lengths):
  """Recomputes one block's backpointers from its entering scores and traces the path back through it.

  Args:
    alpha_in: `[batch, states]` scores entering the block.
    log_probs, live: the block's `[frames, batch, vocab]` log-probs and `[frames, batch]` real-frame flags.
    state_out: `[batch]` int32 state at the block's last frame (ignored where `final`).
    final: scalar bool, True for the recording's last block, whose end state is chosen from its scores here.
    target_lengths: `[batch]` int32 labels per row.
  Returns:
    (state `[batch]` at the frame before the block, states `[frames, batch]` int32, score `[batch]` float32).
  """
  alpha_out, pointers = jax.lax.scan(lambda a, x: _step(a, x, ext, skip), alpha_in, (log_probs, live))
  last = 2 * target_lengths  # final blank; the last label is last - 1
  rows = jnp.arange(alpha_out.shape[0])
  end_blank, end_label = alpha_out[rows, last], jnp.where(last > 0, alpha_out[rows, jnp.maximum(last - 1, 0)], _NEG_INF)
  start = jnp.where(final, jnp.where(end_blank >= end_label, last, last - 1), state_out).astype(jnp.int32)

  def back(state, pointers_t):
    return state - pointers_t[rows, state].astype(jnp.int32), state

  before, states = jax.lax.scan(back, start, pointers, reverse=True)
  return before, states, jnp.maximum(end_blank, end_label)


@functools.partial(jax.jit, static_argnames=("blank_id", "block_frames"))
def _viterbi(log_probs, lengths, targets, target_lengths, blank_id, block_frames):
  batch, frames, _ = log_probs.shape
  block = frames if block_frames is None else min(block_frames, frames)
  blocks = -(-frames // block)
  pad = blocks * block - frames
  lp = jnp.pad(log_probs.astype(jnp.float32), ((0, 0), (0, pad), (0, 0)))
  live = jnp.arange(blocks * block)[None, :] < lengths[:, None]
  # [blocks, block, batch, ...]: frames major for the scans.
  lp = jnp.transpose(lp, (1, 0, 2)).reshape(blocks, block, batch, -1)
  live = jnp.transpose(live).reshape(blocks, block, batch)
  ext, skip = extended_states(targets, blank_id)
  # The virtual frame before the first: only state 0 reachable, so frame 0 may start in state 0 or 1.
  alpha0 = jnp.full(ext.shape, _NEG_INF, jnp.float32).at[:, 0].set(0.0)

  def keep_entering(alpha, block_inputs):
    return _forward(alpha, *block_inputs, ext, skip), alpha

  last_in, entering = jax.lax.scan(keep_entering, alpha0, (lp[:-1], live[:-1]))  # pass 1: checkpoints only
  entering = jnp.concatenate([entering, last_in[None]], axis=0)  # [blocks, batch, states]

  def trace(carry, block_inputs):
    state_out, score = carry
    alpha_in, lp_b, live_b, final = block_inputs
    before, states, block_score = _trace_block(alpha_in, lp_b, live_b, ext, skip, state_out, final, target_lengths)
    return (before, jnp.where(final, block_score, score)), states

  is_final = jnp.arange(blocks) == blocks - 1
  init = (jnp.zeros((batch,), jnp.int32), jnp.zeros((batch,), jnp.float32))
  (_, score), states = jax.lax.scan(trace, init, (entering, lp, live, is_final), reverse=True)  # pass 2
  states = jnp.transpose(states.reshape(blocks * block, batch))[:, :frames]
  live = jnp.arange(frames)[None, :] < lengths[:, None]
  tokens = jnp.take_along_axis(ext, states, axis=1)
  frame_lp = jnp.take_along_axis(log_probs.astype(jnp.float32), tokens[..., None], axis=2)[..., 0]
  return ViterbiPath(states=jnp.where(live, states, -1),
                     label_index=jnp.where(live & (states % 2 == 1), states // 2, -1),
                     tokens=jnp.where(live, tokens, -1),
                     frame_log_probs=jnp.where(live, frame_lp, 0.0),
                     score=score)


def forced_align(log_probs, lengths, targets, target_lengths, *, blank_id: int = 0, block_frames: int | None = None,
                 names: Sequence[str] | None = None) -> ViterbiPath:
  """Viterbi CTC forced alignment of a batch: the most probable frame labelling that collapses to each target.

  A `lax.scan` over frames (and one back over them for the path), jitted once per shape. Called with concrete
  arrays it first checks every row (`check_alignable`); traced inside another jit there is no check, and a row
  that cannot be aligned comes back with score -inf (and a meaningless path).

  Args:
    log_probs: `[batch, frames, vocab]` float32 log-probabilities (log-softmax of the CTC logits).
    lengths: `[batch]` int32 real frames per row (a `[batch, frames]` bool frame mask works too).
    targets: `[batch, labels]` int32 label ids, no blanks, padded with anything (ignored past `target_lengths`).
    target_lengths: `[batch]` int32 labels per row.
    blank_id: the CTC blank (0 in this project's vocabularies).
    block_frames: None keeps all backpointers (`[frames, batch, 2 labels + 1]` int8); K checkpoints the search in
      blocks of K frames (exact; bounded memory for long recordings, see the module docstring).
    names: utterance ids for error messages.
  Returns:
    ViterbiPath (per-frame states, label indices, tokens and log-probs, and the path score per row).
  Raises:
    AlignmentError: a row whose transcript needs more frames than it has, or whose labels are invalid.
  """
  lengths = jnp.asarray(lengths)
  if lengths.ndim == 2:
    lengths = jnp.sum(lengths, axis=1)
  if not any(isinstance(x, jax.core.Tracer) for x in (lengths, targets, target_lengths)):
    check_alignable(np.asarray(lengths), np.asarray(targets), np.asarray(target_lengths),
                    vocab_size=log_probs.shape[-1], blank_id=blank_id, names=names)
  return _viterbi(log_probs, lengths.astype(jnp.int32), jnp.asarray(targets, jnp.int32),
                  jnp.asarray(target_lengths, jnp.int32), blank_id, block_frames)


def auto_block_frames(frames: int, states: int, batch: int = 1, max_trellis_bytes: int = 256 << 20) -> int | None:
  """None (full trellis) when its int8 backpointers fit `max_trellis_bytes`, else 2 sqrt(frames) frames per block."""
  if frames * states * batch <= max_trellis_bytes:
    return None
  return max(1, int(2 * math.sqrt(frames)))


# ---- Transcripts, segments, utterance-level alignment ----


def with_star_column(log_probs, blank_id: int = 0):
  """Appends the wildcard column: per frame, the best non-blank token's log-prob (as torchaudio's and NeMo's aligners).

  Args:
    log_probs: `[..., frames, vocab]` float32.
  Returns:
    `[..., frames, vocab + 1]` float32; column `vocab` is the star token that stands for out-of-vocabulary text.
  """
  log_probs = jnp.asarray(log_probs, jnp.float32)
  non_blank = jnp.where(jnp.arange(log_probs.shape[-1]) == blank_id, _NEG_INF, log_probs)
  return jnp.concatenate([log_probs, jnp.max(non_blank, axis=-1, keepdims=True)], axis=-1)


def align_batch(log_probs: Sequence[np.ndarray], transcripts: Sequence[str], vocab, *,
                names: Sequence[str] | None = None, max_trellis_bytes: int = 256 << 20) -> list[Alignment]:
  """Aligns transcripts to recordings' CTC log-probs in one batched Viterbi search.

  Args:
    log_probs: per recording, `[frames, vocab]` float32 log-probabilities (frames may differ).
    transcripts: the texts, same order (normalised and encoded by `encode_transcript`).
    vocab: the `Vocab` of the log-prob columns.
    names: utterance ids (default "utt0", "utt1", ...).
    max_trellis_bytes: above this the search is checkpointed in blocks (`auto_block_frames`): exact, less memory.
  Returns:
    One Alignment per recording.
  Raises:
    AlignmentError: a transcript that needs more frames than its recording has (named), or an empty one.
    ValueError: log-probs whose vocabulary dimension is not `vocab.size`.
  """
  names = list(names) if names is not None else [f"utt{i}" for i in range(len(log_probs))]
  if not len(log_probs) == len(transcripts) == len(names):
    raise ValueError(f"{len(log_probs)} recordings, {len(transcripts)} transcripts and {len(names)} names")
  for name, lp in zip(names, log_probs):
    if np.ndim(lp) != 2 or np.shape(lp)[1] != vocab.size:
      raise ValueError(f"{name}: log-probs of shape {np.shape(lp)}, expected [frames, {vocab.size}] for the "
                       "vocabulary; pass the vocabulary the model was trained with")
  encoded = [encode_transcript(t, vocab, name=n) for t, n in zip(transcripts, names)]
  lengths = np.asarray([np.shape(lp)[0] for lp in log_probs], np.int32)
  label_lengths = np.asarray([t.labels.size for t in encoded], np.int32)
  batch, frames, labels = len(log_probs), int(lengths.max()), int(label_lengths.max())
  padded = np.zeros((batch, frames, vocab.size), np.float32)
  targets = np.ones((batch, labels), np.int32)
  for row, (lp, t) in enumerate(zip(log_probs, encoded)):
    padded[row, :lp.shape[0]] = lp
    targets[row, :t.labels.size] = t.labels
  block = auto_block_frames(frames, 2 * labels + 1, batch, max_trellis_bytes)
  path = jax.device_get(forced_align(with_star_column(padded, vocab.blank_id), lengths, targets, label_lengths,
                                     blank_id=vocab.blank_id, block_frames=block, names=names))
  for row, name in enumerate(names):
    if not np.isfinite(path.score[row]):  # feasible by length, but the log-probs rule every path out (-inf entries)
      raise AlignmentError(f"{name}: no alignment has a finite log-probability ({lengths[row]} frames, "
                           f"{label_lengths[row]} labels): the log-probs hold -inf where the transcript needs a token")
  return [segments(path.label_index[row], path.frame_log_probs[row], t, utterance=name, log_prob=path.score[row],
                   num_frames=int(lengths[row])) for row, (t, name) in enumerate(zip(encoded, names))]


def align(log_probs: np.ndarray, transcript: str, vocab, *, name: str = "utterance",
          max_trellis_bytes: int = 256 << 20) -> Alignment:
  """Aligns one transcript to one recording's `[frames, vocab]` float32 CTC log-probs (see `align_batch`)."""
  return align_batch([log_probs], [transcript], vocab, names=[name], max_trellis_bytes=max_trellis_bytes)[0]
