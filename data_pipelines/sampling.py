"""Multilingual (XLSR) sampling: languages drawn with p_l ∝ (n_l / N)^α.

XLSR (arXiv 2006.13979 §3.1) samples pre-training batches from a multinomial over languages with
p_l ∝ (n_l / N)^α, α = 0.5, which upsamples low-resource languages. As fairseq's ResamplingDataset does, each epoch
here is a resampled list of utterances in which language l takes a share p_l of the epoch's size: whole copies of
the language's utterances plus a random subset without replacement (lower variance than i.i.d. draws). Sizes n_l
count utterances (fairseq's `len(dataset)`) or, with `size_by="samples"`, audio length (the paper's hours).
"""

from typing import Mapping, Sequence

import numpy as np


def language_probabilities(sizes: Mapping[str, float], alpha: float = 0.5) -> dict[str, float]:
  """p_l ∝ (n_l / N)^α.

  Args:
    sizes: n_l per language (utterances or samples), all > 0.
    alpha: 1 keeps the natural distribution, 0 samples languages uniformly.

  Returns:
    {language: p_l}, summing to 1, in the order of `sizes`.
  """
  if not sizes:
    raise ValueError("no languages")
  n = np.asarray(list(sizes.values()), np.float64)
  if np.any(n <= 0):
    raise ValueError(f"every language needs data, got sizes {dict(sizes)}")
  p = (n / n.sum()) ** alpha
  return dict(zip(sizes, (p / p.sum()).tolist()))


def language_sizes(languages: Sequence[str], num_samples: np.ndarray | None = None,
                   size_by: str = "utterances") -> dict[str, float]:
  """n_l per language, in sorted language order.

  Args:
    languages: `[N]` language name of each utterance.
    num_samples: `[N]` lengths, needed for `size_by="samples"`.
    size_by: "utterances" or "samples".

  Returns:
    {language: n_l}.
  """
  names, inverse = np.unique(np.asarray(languages, dtype=object).astype(str), return_inverse=True)
  if size_by == "utterances":
    weights = np.ones(len(languages))
  elif size_by == "samples":
    weights = np.asarray(num_samples, np.float64)
  else:
    raise ValueError(f"size_by must be 'utterances' or 'samples', got {size_by!r}")
  totals = np.bincount(inverse.reshape(-1), weights=weights, minlength=len(names))
  return {str(k): float(v) for k, v in zip(names, totals)}


def sample_epoch(language_ids: np.ndarray, probabilities: Sequence[float], rng: np.random.Generator,
                 epoch_size: int | None = None) -> np.ndarray:
  """One epoch's utterances with language shares `probabilities`.

  Args:
    language_ids: `[N]` int language id of each utterance (0..L-1).
    probabilities: `[L]` p_l.
    rng: randomness of this epoch.
    epoch_size: utterances in the epoch (default N).

  Returns:
    `[≈epoch_size]` int64 utterance ids, language l appearing round(p_l · epoch_size) times, grouped by language
    (the batch planner shuffles).
  """
  language_ids = np.asarray(language_ids, np.int64)
  epoch_size = language_ids.size if epoch_size is None else epoch_size
  out = []
  for lang, p in enumerate(probabilities):
    members = np.flatnonzero(language_ids == lang)
    want = int(round(p * epoch_size))
    if members.size == 0 or want == 0:
      continue
    copies, rest = divmod(want, members.size)
    out.append(np.tile(members, copies))
    out.append(rng.choice(members, size=rest, replace=False))
  return np.concatenate(out) if out else np.zeros(0, np.int64)
