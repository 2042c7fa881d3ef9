"""Helpers for tests that compare input pipelines batch by batch."""

import numpy as np


def take(it, n: int) -> list[dict[str, np.ndarray]]:
  """The next `n` batches of iterator `it`."""
  return [next(it) for _ in range(n)]


def assert_same(a: list[dict[str, np.ndarray]], b: list[dict[str, np.ndarray]]) -> None:
  """Asserts two lists of batches are the same, batch by batch: the same fields, and arrays equal bit for bit."""
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)
