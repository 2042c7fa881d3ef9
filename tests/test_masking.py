"""Span masks and negative sampling: fairseq's statistics, static shapes, padding never selected."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wav2vec_jax.models import masking
from wav2vec_jax.models import get_variant

CFG = get_variant("base")


def test_conv_output_lengths_formula():
  # L_out = floor((L_in - k) / s) + 1 folded over the 7 layers (transformers' _get_feat_extract_output_lengths).
  for samples, frames in [(400, 1), (399, 0), (16000, 49), (240000, 749), (250000, 781), (719, 1), (720, 2)]:
    assert masking.conv_output_lengths(samples, CFG.conv_kernel, CFG.conv_stride) == frames
  lengths = masking.conv_output_lengths(jnp.array([0, 400, 16000]), CFG.conv_kernel, CFG.conv_stride)
  np.testing.assert_array_equal(lengths, [0, 1, 49])


def test_mask_statistics_on_15s_utterances():
  """mask_prob 0.65 and span 10 on 15 s clips: about 49% of frames masked, in runs of about 14.7 frames."""
  frames = masking.conv_output_lengths(15 * 16000, CFG.conv_kernel, CFG.conv_stride)
  lengths = jnp.full((256,), frames)
  mask = masking.compute_span_mask(jax.random.PRNGKey(0), lengths, frames, 0.65, 10, 2, same_count=False)
  fraction, run = masking.mask_statistics(mask, jnp.ones_like(mask))
  assert 0.47 < float(fraction) < 0.50
  assert 13.5 < float(run) < 16.0
  # With fairseq's same-count subsampling (batch of 8) the share drops only slightly.
  same = masking.compute_span_mask(jax.random.PRNGKey(1), lengths[:8], frames, 0.65, 10, 2, same_count=True)
  counts = np.asarray(same.sum(-1))
  assert (counts == counts[0]).all() and 0.43 < counts[0] / frames < 0.50
  # min_masks is a floor: at p=0.01 almost no row would get a span, yet each gets two (more than one span).
  sparse = masking.compute_span_mask(jax.random.PRNGKey(2), jnp.array([100, 40]), 100, 0.01, 10, 2, False)
  assert (np.asarray(sparse).sum(-1) > 10).all()


def test_the_span_count_is_rounded_once_per_batch_without_padding_and_per_row_with_it():
  # fairseq passes no padding mask for an unpadded batch (cropped pre-training) and rounds mask_prob * length / span
  # once for all rows; with padding, once per row. Span 1 makes the count of starts the masked count exactly:
  # 0.25 x 10 = 2.5 spans rounds to 2 or 3.
  for k in range(4):
    key = jax.random.PRNGKey(k)
    full = np.asarray(masking.compute_span_mask(key, jnp.full((64,), 10), 10, 0.25, 1, 0, same_count=False))
    assert len(set(full.sum(-1))) == 1 and full.sum(-1)[0] in (2, 3)
  padded = [np.asarray(masking.compute_span_mask(jax.random.PRNGKey(k), jnp.array([10] * 63 + [9]), 10, 0.25, 1,
                                                 0, same_count=False)).sum(-1) for k in range(4)]
  assert all(set(c) <= {2, 3} for c in padded) and any(len(set(c[:63])) == 2 for c in padded)


def test_time_mask_same_count_and_respects_padding():
  frame_mask = jnp.arange(100)[None, :] < jnp.array([100, 60, 0, 35])[:, None]
  masked = jax.jit(masking.compute_time_mask, static_argnums=(2, 3, 4))(
      jax.random.PRNGKey(0), frame_mask, 0.65, 10, 2)
  mask, valid, positions = np.asarray(masked.mask), np.asarray(masked.valid), np.asarray(masked.positions)
  count = int(masked.count)
  assert not (mask & ~np.asarray(frame_mask)).any()  # padding is never masked
  np.testing.assert_array_equal(mask.sum(-1), [count, count, 0, count])
  np.testing.assert_array_equal(valid.sum(-1), [count, count, 0, count])
  assert positions.shape[1] == masking.max_masked_frames(100, 0.65, 10, 2) >= count
  for b in (0, 1, 3):  # slots list exactly the masked frames, ascending
    np.testing.assert_array_equal(positions[b, :count], np.flatnonzero(mask[b]))


def test_negatives_come_from_other_masked_frames_of_the_same_row():
  frame_mask = jnp.arange(200)[None, :] < jnp.array([200, 150])[:, None]
  masked = masking.compute_time_mask(jax.random.PRNGKey(0), frame_mask, 0.65, 10, 2)
  negatives = np.asarray(masking.sample_negatives(jax.random.PRNGKey(1), masked.count, masked.valid, 100))
  count = int(masked.count)
  valid_slots = negatives[:, :count]
  assert valid_slots.min() >= 0 and valid_slots.max() < count  # only masked frames, never padding slots
  own = np.arange(count)[None, :, None]
  assert not (valid_slots == own).any()  # the positive is excluded
  # Uniform over the other count-1 slots: every slot is drawn, with roughly equal frequency.
  hist = np.bincount(valid_slots.reshape(-1), minlength=count)
  expected = valid_slots.size / count
  assert hist.min() > 0.7 * expected and hist.max() < 1.3 * expected


@pytest.mark.parametrize("size,prob,span", [(768, 0.5, 64), (32, 0.1, 10)])
def test_channel_mask_shapes(size, prob, span):
  rows, lengths = 64, jnp.full((64,), size)
  spans = np.asarray(masking.compute_span_mask(jax.random.PRNGKey(0), lengths, size, prob, span, 0,
                                               same_count=False))
  assert spans.shape == (rows, size) and spans.dtype == np.bool_
  # Whole spans of `span` channels (shorter runs would mean the span length is ignored), at most
  # ceil(prob * size / span) of them per row, placed independently per row.
  for row in spans[spans.any(axis=1)]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(np.int8), [0]])))
    assert (edges[1::2] - edges[::2]).min() >= span
  assert spans.sum(axis=1).max() <= int(np.ceil(prob * size / span)) * span
  assert spans.any() and len({row.tobytes() for row in spans}) > 8  # rows are drawn independently
  # As the model draws channel masks (fairseq without a padding mask): one span count for the batch, every row
  # then subsampled to the smallest masked count; some batches get spans (a per-row count would let one row that
  # rounds down to zero spans unmask the whole batch, nearly always at 0.1 x 32 / 10).
  masks = [np.asarray(masking.compute_span_mask(jax.random.PRNGKey(k), lengths, size, prob, span, 0, one_draw=True))
           for k in range(8)]
  assert all(len(set(m.sum(axis=1))) == 1 for m in masks)
  assert sum(m.any() for m in masks) >= 2