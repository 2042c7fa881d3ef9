"""Budget-of-samples batching over length buckets, with a small fixed set of batch shapes.

fairseq groups length-sorted utterances until a budget of samples (`max_tokens`) is reached and, in pre-training,
crops every batch to its shortest utterance, so there is no padding. On an accelerator every new shape is a new
compile, so here each bucket k has one fixed shape `[batch_sizes[k], lengths[k]]`:

* crop mode (pre-training): bucket k holds clips of at least `lengths[k]` samples (clipped to `max_sample_size`),
  each randomly cropped to exactly `lengths[k]`: no padding, like fairseq, at the price of a little cropped audio;
* pad mode (fine-tuning): bucket k holds clips of at most `lengths[k]` samples, zero-padded up to it.

Bucket lengths are chosen from the data by dynamic programming to minimise the cropped (or padded) samples, and
`batch_sizes[k] = budget // lengths[k]`, rounded down to a multiple of the data-parallel width. Epoch plans are
computed from lengths alone (numpy, no decoding), which is what makes the iterator position cheap to restore.
"""

import dataclasses

import numpy as np

_NUM_CANDIDATES = 512  # bucket boundaries are chosen among this many length quantiles


@dataclasses.dataclass(frozen=True)
class BucketSpec:
  """The fixed batch shapes.

  Attributes:
    lengths: samples per row, one per bucket, ascending.
    batch_sizes: rows per global batch, one per bucket.
    crop: True: bucket k takes clips ≥ lengths[k], cropped down; False: clips ≤ lengths[k], padded up.
    max_sample_size: crop mode clips longer clips to this first (None: no limit).
    label_lengths: label slots per row, one per bucket (fine-tuning), or None.
  """

  lengths: tuple[int, ...]
  batch_sizes: tuple[int, ...]
  crop: bool
  max_sample_size: int | None = None
  label_lengths: tuple[int, ...] | None = None

  @property
  def shapes(self) -> tuple[tuple[int, int], ...]:
    """`(batch_size, samples)` of each bucket."""
    return tuple(zip(self.batch_sizes, self.lengths))

  def effective(self, num_samples: np.ndarray) -> np.ndarray:
    """`[N]` int64 lengths after the `max_sample_size` clip (crop mode only)."""
    num_samples = np.asarray(num_samples, np.int64)
    if self.crop and self.max_sample_size is not None:
      return np.minimum(num_samples, self.max_sample_size)
    return num_samples

  def assign(self, num_samples: np.ndarray) -> np.ndarray:
    """Bucket of each clip.

    Args:
      num_samples: `[N]` integer lengths.

    Returns:
      `[N]` int64 bucket ids, -1 for clips no bucket takes (shorter than the smallest crop length, or longer than
      the largest pad length).
    """
    lengths = np.asarray(self.lengths, np.int64)
    eff = self.effective(num_samples)
    if self.crop:
      return np.searchsorted(lengths, eff, side="right") - 1
    ids = np.searchsorted(lengths, eff, side="left")
    return np.where(ids >= len(lengths), -1, ids)


def choose_lengths(num_samples: np.ndarray, num_buckets: int, *, crop: bool) -> tuple[int, ...]:
  """Bucket lengths that minimise cropped (crop mode) or padded (pad mode) samples.

  Args:
    num_samples: `[N]` integer clip lengths (already clipped to max_sample_size in crop mode).
    num_buckets: the most buckets (shapes) allowed.
    crop: crop mode (lengths are lower bounds) or pad mode (upper bounds).

  Returns:
    Ascending lengths, at most `num_buckets`; in crop mode the first is the shortest clip, in pad mode the last is
    the longest, so every clip has a bucket.
  """
  x = np.sort(np.asarray(num_samples, np.int64))
  if x.size == 0:
    raise ValueError("no clips to bucket")
  if not crop:  # padding up to a segment's max is cropping down to its min, on negated lengths
    return tuple(sorted(-v for v in choose_lengths(-x, num_buckets, crop=True)))
  cand = np.unique(np.quantile(x, np.linspace(0, 1, _NUM_CANDIDATES + 1), method="lower")).astype(np.int64)
  prefix = np.concatenate([[0], np.cumsum(x, dtype=np.float64)])
  below = np.searchsorted(x, cand, side="left")  # clips shorter than each candidate
  ends = np.concatenate([below, [x.size]])  # segment i..j covers x[below[i]:ends[j]]
  count = ends[None, :] - below[:, None]
  cost = (prefix[ends][None, :] - prefix[below][:, None]) - count * cand[:, None].astype(np.float64)
  c = cand.size
  cost[np.arange(c)[:, None] >= np.arange(c + 1)[None, :]] = np.inf  # segments must be non-empty ranges i < j
  best = np.full(c + 1, np.inf)
  best[0] = 0.0
  back = []
  results = []
  for _ in range(max(1, num_buckets)):
    total = best[:c, None] + cost
    back.append(total.argmin(axis=0))
    best = total.min(axis=0)
    best[0] = np.inf
    results.append(best[c])
  k = int(np.argmin(results))  # fewest buckets among equally good solutions
  starts, j = [], c
  for step in range(k, -1, -1):
    i = int(back[step][j])
    starts.append(int(cand[i]))
    j = i
  return tuple(sorted(starts))


def make_buckets(
    num_samples: np.ndarray,
    *,
    crop: bool,
    batch_budget: int,
    num_buckets: int = 8,
    lengths: tuple[int, ...] = (),
    max_sample_size: int | None = None,
    batch_multiple: int = 1,
    max_batch_size: int | None = None,
    label_lengths: np.ndarray | None = None,
    label_multiple: int = 8,
) -> BucketSpec:
  """Chooses the batch shapes for a dataset.

  Args:
    num_samples: `[N]` integer clip lengths at the target rate.
    crop: crop mode (pre-training) or pad mode (fine-tuning).
    batch_budget: samples per global batch (fairseq `max_tokens` × data-parallel devices).
    num_buckets: the most shapes (ignored if `lengths` is given).
    lengths: explicit bucket lengths instead of the data-driven choice.
    max_sample_size: crop mode clips longer clips to this.
    batch_multiple: every batch size is a multiple of this (data-parallel devices, and the process count).
    max_batch_size: cap on rows per batch (fairseq `max_sentences`), None for none.
    label_lengths: `[N]` label counts (fine-tuning) to size the label slots of each bucket.
    label_multiple: label slots are rounded up to a multiple of this.

  Returns:
    The `BucketSpec`.
  """
  num_samples = np.asarray(num_samples, np.int64)
  spec = BucketSpec((), (), crop, max_sample_size)
  lengths = tuple(sorted(int(v) for v in lengths)) or choose_lengths(spec.effective(num_samples), num_buckets, crop=crop)
  sizes = []
  for length in lengths:
    size = batch_budget // length
    if max_batch_size is not None:
      size = min(size, max_batch_size)
    sizes.append(max(batch_multiple, size // batch_multiple * batch_multiple))
  spec = BucketSpec(tuple(int(v) for v in lengths), tuple(sizes), crop, max_sample_size)
  if label_lengths is not None:
    ids = spec.assign(num_samples)
    slots = []
    for k in range(len(lengths)):
      longest = int(np.max(label_lengths[ids == k], initial=0))
      slots.append(max(label_multiple, -(-longest // label_multiple) * label_multiple))
    spec = dataclasses.replace(spec, label_lengths=tuple(slots))
  return spec


@dataclasses.dataclass(frozen=True)
class EpochPlan:
  """The batches of one epoch, in order.

  Attributes:
    buckets: `[num_batches]` int64 bucket (shape) of each batch.
    rows: per batch, `[batch_sizes[bucket]]` int64 item ids (-1 marks an empty row in a padded last batch).
  """

  buckets: np.ndarray
  rows: tuple[np.ndarray, ...]

  def __len__(self) -> int:
    return len(self.rows)


def plan_epoch(items: np.ndarray, bucket_ids: np.ndarray, spec: BucketSpec, *, rng: np.random.Generator | None,
               drop_remainder: bool = True) -> EpochPlan:
  """Groups an epoch's items into fixed-shape batches.

  Args:
    items: `[M]` int item ids of this epoch (repeats allowed, e.g. after multilingual resampling).
    bucket_ids: `[M]` int bucket of each item (-1: left out).
    spec: the shapes.
    rng: shuffles items within buckets and the order of batches; None keeps input order, batches bucket by bucket
      (evaluation).
    drop_remainder: drop each bucket's last partial batch (training) or fill it with empty rows (-1, evaluation).

  Returns:
    The `EpochPlan`.
  """
  items, bucket_ids = np.asarray(items, np.int64), np.asarray(bucket_ids, np.int64)
  if rng is not None:
    perm = rng.permutation(items.size)
    items, bucket_ids = items[perm], bucket_ids[perm]
  buckets, rows = [], []
  for k, size in enumerate(spec.batch_sizes):
    members = items[bucket_ids == k]
    full = members.size // size
    for b in range(full):
      buckets.append(k)
      rows.append(members[b * size:(b + 1) * size])
    if members.size % size and not drop_remainder:
      buckets.append(k)
      rows.append(np.concatenate([members[full * size:], np.full(size - members.size % size, -1, np.int64)]))
  order = rng.permutation(len(rows)) if rng is not None else np.arange(len(rows))
  return EpochPlan(np.asarray(buckets, np.int64)[order], tuple(rows[i] for i in order))


def waste(spec: BucketSpec, num_samples: np.ndarray) -> dict[str, float]:
  """Expected share of samples lost to the fixed shapes, over all clips.

  Args:
    spec: the shapes.
    num_samples: `[N]` clip lengths.

  Returns:
    `padding`: padded share of the batch tensors (pad mode); `cropped`: share of usable audio (after the
    `max_sample_size` clip) discarded by cropping to the bucket length (crop mode); `unbucketed`: share of clips
    no bucket takes.
  """
  eff = spec.effective(num_samples)
  ids = spec.assign(num_samples)
  ok = ids >= 0
  slot = np.asarray(spec.lengths, np.int64)[ids[ok]]
  used = np.minimum(eff[ok], slot)
  return {
      "padding": float(1 - used.sum() / max(slot.sum(), 1)),
      "cropped": float(1 - used.sum() / max(eff[ok].sum(), 1)),
      "unbucketed": float(1 - ok.mean()) if ok.size else 0.0,
  }
