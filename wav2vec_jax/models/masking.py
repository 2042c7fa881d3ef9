"""Frame lengths, span masks and negative sampling, all with static shapes and explicit keys.

Semantics follow fairseq's `compute_mask_indices` (require_same_masks=True) and `sample_negatives`:
  * per row, `num = max(min_masks, floor(mask_prob * length / span + u))` span starts, u ~ U[0, 1), drawn without
    replacement; spans overlap, so on 15 s clips with p=0.65, span=10 about 49% of frames end masked;
  * every non-empty row is then subsampled at random to the batch's smallest masked count M, so the contrastive
    loss sees the same number of masked frames per utterance;
  * negatives: K indices per masked frame, uniform with replacement over the other M-1 masked frames of the same
    utterance (draw from [0, M-1) and add one where >= own index).
Masked frames are gathered into a static `[batch, max_masked]` index array (`max_masked` is an upper bound computed
from the static frame count) with a validity mask, so the model never needs data-dependent shapes.
"""

import flax.struct
import jax
import jax.numpy as jnp


def conv_output_lengths(lengths, kernels, strides):
  """Frames produced by the conv stack: `L_out = floor((L_in - kernel) / stride) + 1` per layer, clamped at 0.

  Args:
    lengths: int array (any shape) or Python int, input samples.
    kernels, strides: per-layer kernel widths and strides.
  Returns:
    Same type and shape as `lengths`: output frames (0 for inputs shorter than the receptive field).
  """
  for kernel, stride in zip(kernels, strides):
    lengths = (lengths - kernel) // stride + 1
  if isinstance(lengths, int):
    return max(lengths, 0)
  return jnp.maximum(lengths, 0)


def frame_mask_from_attention_mask(attention_mask, num_frames, kernels, strides):
  """Frame-level validity from a sample-level attention mask, as transformers computes it.

  Args:
    attention_mask: `[batch, samples]` int/bool, 1 = real sample. Its row sum is taken as the length.
    num_frames: static number of frames of the conv output.
  Returns:
    `[batch, frames]` bool, True for frames inside each row's length.
  """
  lengths = conv_output_lengths(jnp.sum(attention_mask.astype(jnp.int32), axis=-1), kernels, strides)
  return jnp.arange(num_frames)[None, :] < lengths[:, None]


def max_masked_frames(num_frames: int, mask_prob: float, span: int, min_masks: int) -> int:
  """Static upper bound on the masked count of one row (spans may overlap, so the true count is lower)."""
  max_starts = max(min_masks, int(mask_prob * num_frames / span + 1))
  return max(1, min(num_frames, max_starts * span))


def _ranks(scores):
  """Rank of every entry along the last axis (0 = smallest); ties broken by position."""
  return jnp.argsort(jnp.argsort(scores, axis=-1, stable=True), axis=-1, stable=True)


def compute_span_mask(key, lengths, size: int, mask_prob: float, span: int, min_masks: int = 0,
                      same_count: bool = True, one_draw: bool = False):
  """Random span mask over the last axis, fairseq's `compute_mask_indices` with static shapes.

  Args:
    key: PRNG key.
    lengths: `[batch]` int32 valid length per row (frames for time masks, `size` for channel masks).
    size: static length of the masked axis.
    mask_prob: expected share of span starts (times span) per valid position.
    span: span length.
    min_masks: minimum number of spans per row.
    same_count: subsample every non-empty row to the smallest masked count of the batch.
    one_draw: always one random rounding of the span count for the whole batch (channel masks). Otherwise, as
      fairseq's GPU path: one draw when no row is padded (every length is `size`: fairseq then passes no padding
      mask, as for cropped pre-training batches), one per row when some are (and with `same_count` a single row that
      rounds down to no span leaves the whole batch unmasked).
  Returns:
    `[batch, size]` bool mask; False at positions >= length.
  """
  if span < 1:
    raise ValueError(f"mask span length must be >= 1, got {span}")
  batch = lengths.shape[0]
  k_round, k_start, k_keep = jax.random.split(key, 3)
  lengths = lengths.astype(jnp.int32)
  u = jax.random.uniform(k_round, (1,) if one_draw else (batch,))
  if not one_draw:
    u = jnp.where(jnp.all(lengths == size), u[0], u)
  num = jnp.floor(mask_prob * lengths / span + u).astype(jnp.int32)
  num = jnp.maximum(num, min_masks)
  # Span starts come from [0, length - span) or, for short rows, fairseq's fallback [0, num + 1).
  start_range = jnp.where(lengths - span <= num, num + 1, lengths - span)
  pos = jnp.arange(size)[None, :]
  scores = jnp.where(pos < start_range[:, None], jax.random.uniform(k_start, (batch, size)), 2.0)
  starts = (_ranks(scores) < num[:, None]).astype(jnp.int32)
  # A position is covered when a start lies in (pos - span, pos]: difference of a running sum.
  csum = jnp.cumsum(starts, axis=-1)
  shifted = jnp.pad(csum, ((0, 0), (span, 0)))[:, :size]
  mask = ((csum - shifted) > 0) & (pos < lengths[:, None])
  if same_count:
    counts = jnp.sum(mask, axis=-1)
    nonempty = lengths > 0
    target = jnp.min(jnp.where(nonempty, counts, size))
    keep_scores = jnp.where(mask, jax.random.uniform(k_keep, (batch, size)), 2.0)
    mask = mask & (_ranks(keep_scores) < target)
  return mask


@flax.struct.dataclass
class MaskedFrames:
  """Masked time steps of a batch in a static layout.

  Attributes:
    mask: `[batch, frames]` bool, True where the frame is replaced by the mask embedding.
    positions: `[batch, max_masked]` int32, frame index of the j-th masked frame of each row (ascending);
      entries past the row's count point at arbitrary frames and are invalid.
    valid: `[batch, max_masked]` bool, True for the first `count` entries of non-empty rows.
    count: `[]` int32, masked frames per non-empty row (the same M for every such row).
  """

  mask: jax.Array
  positions: jax.Array
  valid: jax.Array
  count: jax.Array


def gather_masked_frames(mask, max_masked: int) -> MaskedFrames:
  """Packs a same-count mask `[batch, frames]` bool into a `MaskedFrames` with `max_masked` slots."""
  _, frames = mask.shape
  order = jnp.arange(frames)[None, :]
  positions = jnp.argsort(jnp.where(mask, order, order + frames), axis=-1)[:, :max_masked].astype(jnp.int32)
  counts = jnp.sum(mask, axis=-1)
  count = jnp.max(counts).astype(jnp.int32)
  valid = (jnp.arange(max_masked)[None, :] < counts[:, None])
  return MaskedFrames(mask=mask, positions=positions, valid=valid, count=count)


def compute_time_mask(key, frame_mask, mask_prob: float, span: int, min_masks: int) -> MaskedFrames:
  """Pre-training time mask: fairseq span masking with the same count per row, packed for the loss.

  Args:
    key: PRNG key.
    frame_mask: `[batch, frames]` bool frame validity.
  Returns:
    MaskedFrames with `max_masked = max_masked_frames(frames, ...)`.
  """
  frames = frame_mask.shape[1]
  lengths = jnp.sum(frame_mask.astype(jnp.int32), axis=-1)
  mask = compute_span_mask(key, lengths, frames, mask_prob, span, min_masks, same_count=True)
  return gather_masked_frames(mask, max_masked_frames(frames, mask_prob, span, min_masks))


def sample_negatives(key, count, valid, num_negatives: int):
  """Distractor indices: for each masked slot j, K draws from the other `count - 1` masked slots of its row.

  Args:
    key: PRNG key.
    count: `[]` int32, masked frames per row (M).
    valid: `[batch, max_masked]` bool validity of the slots.
    num_negatives: K.
  Returns:
    `[batch, max_masked, K]` int32 slot indices in [0, M), never equal to the own slot when M > 1.
  """
  batch, max_masked = valid.shape
  high = jnp.maximum(count - 1, 1).astype(jnp.float32)
  draws = jnp.floor(jax.random.uniform(key, (batch, max_masked, num_negatives)) * high).astype(jnp.int32)
  draws = jnp.minimum(draws, jnp.maximum(count - 2, 0))
  own = jnp.arange(max_masked, dtype=jnp.int32)[None, :, None]
  draws = draws + (draws >= own).astype(jnp.int32)
  return jnp.minimum(draws, max_masked - 1)


def mask_statistics(mask, frame_mask):
  """Share of valid frames masked and mean run length of masked spans (for checks against the paper).

  Args:
    mask, frame_mask: `[batch, frames]` bool.
  Returns:
    (masked_fraction, mean_run_length) as float32 scalars.
  """
  masked = jnp.sum(mask & frame_mask)
  starts = mask & ~jnp.pad(mask, ((0, 0), (1, 0)))[:, :-1]
  return masked / jnp.maximum(jnp.sum(frame_mask), 1), masked / jnp.maximum(jnp.sum(starts), 1)

