"""Bucketed batching (fixed shapes, waste, epoch plans) and multilingual sampling, pure numpy."""

import itertools

import numpy as np
import pytest

from data_pipelines import batching, sampling


def _brute_force_cost(x, k, crop):
  best = np.inf
  for bounds in itertools.combinations(sorted(set(x.tolist())), k):
    b = np.asarray(bounds)
    if crop and b[0] != x.min() or not crop and b[-1] != x.max():
      continue
    spec = batching.BucketSpec(tuple(bounds), (1,) * k, crop)
    ids = spec.assign(x)
    best = min(best, np.abs(x - b[ids]).sum())
  return best


@pytest.mark.parametrize("crop", [True, False])
def test_choose_lengths_is_optimal_on_small_inputs(crop):
  rng = np.random.default_rng(0)
  for _ in range(5):
    x = rng.integers(400, 2000, size=12)
    for k in (1, 2, 3):
      lengths = batching.choose_lengths(x, k, crop=crop)
      assert len(lengths) <= k
      spec = batching.BucketSpec(lengths, (1,) * len(lengths), crop)
      ids = spec.assign(x)
      assert (ids >= 0).all()  # every clip has a bucket
      cost = np.abs(x - np.asarray(lengths)[ids]).sum()
      assert cost == min(_brute_force_cost(x, j, crop) for j in range(1, k + 1))


def test_make_buckets_shapes_budget_and_labels():
  rng = np.random.default_rng(1)
  x = rng.integers(32_000, 400_000, size=5000)
  spec = batching.make_buckets(x, crop=True, batch_budget=1_400_000 * 8, num_buckets=8, max_sample_size=250_000,
                               batch_multiple=8)
  assert len(spec.shapes) == 8 and spec.lengths[-1] == 250_000 and spec.lengths[0] == x.min()
  assert all(b % 8 == 0 and b * s <= 1_400_000 * 8 for b, s in spec.shapes)
  w = batching.waste(spec, x)
  assert w["padding"] == 0 and w["cropped"] < 0.06 and w["unbucketed"] == 0
  labels = x // 1000
  spec = batching.make_buckets(x, crop=False, batch_budget=3_200_000, num_buckets=12, max_batch_size=10,
                               label_lengths=labels, label_multiple=8)
  assert max(spec.batch_sizes) <= 10 and spec.lengths[-1] == x.max()
  ids = spec.assign(x)
  for k in range(len(spec.lengths)):
    assert spec.label_lengths[k] % 8 == 0 and spec.label_lengths[k] >= labels[ids == k].max()
  fewer = batching.make_buckets(x, crop=False, batch_budget=3_200_000, num_buckets=4)
  assert batching.waste(spec, x)["padding"] < min(0.07, batching.waste(fewer, x)["padding"])
  explicit = batching.make_buckets(x, crop=False, batch_budget=10**6, lengths=(300_000, 100_000))
  assert explicit.lengths == (100_000, 300_000) and (explicit.assign(x) == -1).sum() == (x > 300_000).sum()


def test_plan_epoch_covers_items_with_fixed_shapes():
  x = np.random.default_rng(2).integers(1000, 10_000, size=500)
  spec = batching.make_buckets(x, crop=False, batch_budget=40_000, num_buckets=4)
  ids = spec.assign(x)
  items = np.arange(x.size)
  plan = batching.plan_epoch(items, ids, spec, rng=np.random.default_rng(0), drop_remainder=False)
  seen = np.concatenate(plan.rows)
  assert sorted(seen[seen >= 0].tolist()) == items.tolist()  # each item exactly once
  for bucket, rows in zip(plan.buckets, plan.rows):
    assert rows.size == spec.batch_sizes[bucket]
    assert (x[rows[rows >= 0]] <= spec.lengths[bucket]).all()
  dropped = batching.plan_epoch(items, ids, spec, rng=np.random.default_rng(0), drop_remainder=True)
  assert all((r >= 0).all() for r in dropped.rows) and len(dropped) < len(plan)
  again = batching.plan_epoch(items, ids, spec, rng=np.random.default_rng(0), drop_remainder=False)
  assert all(np.array_equal(a, b) for a, b in zip(plan.rows, again.rows))  # seeded → deterministic
  ordered = batching.plan_epoch(items, ids, spec, rng=None, drop_remainder=False)
  assert ordered.buckets.tolist() == sorted(ordered.buckets.tolist())


def test_language_probabilities_formula():
  sizes = {"en": 900.0, "fr": 90.0, "sw": 10.0}
  p = sampling.language_probabilities(sizes, alpha=0.5)
  q = np.sqrt(np.array([0.9, 0.09, 0.01]))
  np.testing.assert_allclose(list(p.values()), q / q.sum())
  assert sampling.language_probabilities(sizes, alpha=1.0) == pytest.approx({"en": 0.9, "fr": 0.09, "sw": 0.01})
  assert sampling.language_probabilities(sizes, alpha=0.0) == pytest.approx({k: 1 / 3 for k in sizes})
  assert sampling.language_sizes(["b", "a", "b"]) == {"a": 1.0, "b": 2.0}
  assert sampling.language_sizes(["b", "a", "b"], np.array([1, 5, 2]), "samples") == {"a": 5.0, "b": 3.0}


def test_sample_epoch_frequencies_match_probabilities():
  language_ids = np.repeat([0, 1, 2], [600, 60, 6])
  sizes = {"a": 600.0, "b": 60.0, "c": 6.0}
  probs = list(sampling.language_probabilities(sizes, 0.5).values())
  rng = np.random.default_rng(0)
  epochs = [sampling.sample_epoch(language_ids, probs, rng) for _ in range(20)]
  for items in epochs:
    share = np.bincount(language_ids[items], minlength=3) / items.size
    np.testing.assert_allclose(share, probs, atol=2 / items.size)  # exact up to rounding
  # Upsampled languages repeat every utterance (whole copies, ±1); subsampled ones never repeat in an epoch.
  for items in epochs:
    counts = np.bincount(items, minlength=666)
    assert counts[:600].max() == 1 and counts[660:].max() - counts[660:].min() <= 1
