"""Bad-input errors and the counters that report skipped input.

Every problem with an input file becomes an `AudioInputError` that names the file and the kind of problem. The
pipeline's `on_error` switch decides what happens to it: "skip" (count it, log it, carry on) or "raise" (stop).
"""

import collections
import threading
from typing import Mapping

from absl import logging

ON_ERROR_CHOICES = ("skip", "raise")

# The kinds of bad input, used as counter names ("skipped/<kind>").
KINDS = (
    "unreadable",  # not an audio file, corrupt header, unknown format
    "empty_file",  # zero bytes on disk
    "decode_error",  # header fine, body truncated or corrupt
    "too_short",  # zero-length, or shorter than the conv encoder's 400-sample receptive field
    "sample_rate",  # sample rate differs from the target and resampling is disabled
    "multichannel",  # more than one channel and mono mixdown is disabled
    "missing_transcript",  # labelled data without a transcript (or a transcript without audio)
    "empty_transcript",  # labelled data whose transcript has no characters (CTC needs at least one label)
    "out_of_vocabulary",  # transcript characters outside the CTC vocabulary
)

# Log at most this many messages per kind; the counters carry the totals.
_MAX_LOGGED_PER_KIND = 20


class DataConfigError(ValueError):
  """A data setting (`config.data.*`) that does not fit the data; the message names the field and the fix."""


class AudioInputError(ValueError):
  """A bad input file or utterance. `str(error)` names the file and the problem.

  Attributes:
    kind: one of `KINDS`.
    source: the file path (or dataset record) at fault.
    detail: what is wrong with it.
  """

  def __init__(self, kind: str, source: str, detail: str):
    if kind not in KINDS:
      raise ValueError(f"unknown bad-input kind {kind!r}; expected one of {KINDS}")
    super().__init__(f"{source}: {kind}: {detail}")
    self.kind = kind
    self.source = source
    self.detail = detail

  def __reduce__(self):  # keeps the error picklable across process boundaries
    return (AudioInputError, (self.kind, self.source, self.detail))


class Counters:
  """Thread-safe named integer counters (decode threads add to them concurrently)."""

  def __init__(self, initial: Mapping[str, int] | None = None):
    self._lock = threading.Lock()
    self._counts = collections.Counter(dict(initial or {}))

  def add(self, name: str, value: int = 1) -> None:
    """Adds `value` to counter `name`."""
    with self._lock:
      self._counts[name] += int(value)

  def get(self, name: str) -> int:
    """Returns the value of counter `name` (0 if never added to)."""
    with self._lock:
      return self._counts.get(name, 0)

  def as_dict(self) -> dict[str, int]:
    """Returns a sorted plain-dict snapshot of all counters."""
    with self._lock:
      return dict(sorted(self._counts.items()))

  def update(self, other: Mapping[str, int]) -> None:
    """Adds every counter of `other` to this one."""
    with self._lock:
      self._counts.update(dict(other))


def check_on_error(on_error: str) -> str:
  """Validates an `on_error` switch value ("skip" or "raise") and returns it."""
  if on_error not in ON_ERROR_CHOICES:
    raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
  return on_error


def handle(error: AudioInputError, on_error: str, counters: Counters) -> None:
  """Applies the bad-input policy to `error`.

  Args:
    error: the problem found.
    on_error: "raise" re-raises `error`; "skip" counts it under `skipped/<kind>` and logs it.
    counters: where skips are counted.

  Raises:
    AudioInputError: `error` itself, when `on_error == "raise"`.
  """
  if check_on_error(on_error) == "raise":
    raise error
  name = f"skipped/{error.kind}"
  counters.add(name)
  if counters.get(name) <= _MAX_LOGGED_PER_KIND:
    logging.warning("Skipping bad input: %s", error)
