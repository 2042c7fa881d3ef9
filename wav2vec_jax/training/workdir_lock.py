"""A lease on a workdir, so that two runs never train into the same checkpoints and metrics.

`<workdir>/lock.json` holds the owner's host, pid, start time and a heartbeat (renewed while it trains). A second
run stops with a clear error while the owner is alive; a lease whose process is gone (same host) or whose heartbeat
is older than `stale_after` seconds (another host) is taken over with a warning. Process 0 of a multi-host run
holds the lease and every process learns its verdict, so all of them stop or go on together.
"""

import json
import os
import socket
import time

import jax
import numpy as np
from absl import logging

from data_pipelines import storage

LOCK_FILE = "lock.json"


class WorkdirLockedError(RuntimeError):
  """Another live run holds the workdir."""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by someone else
    return True
  return True


class WorkdirLock:
  """Acquire on start, `heartbeat()` while training, `release()` at the end (a context manager too)."""

  def __init__(self, workdir: str, stale_after: float = 600.0, heartbeat_every: float = 60.0):
    self.path = storage.join(workdir, LOCK_FILE)
    self.stale_after, self.heartbeat_every = stale_after, heartbeat_every
    self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    self._last_beat = 0.0
    self._held = False

  def _holder_problem(self) -> str | None:
    """Why the current lease (if any) blocks us; None when it is free, ours or stale."""
    if not storage.Path(self.path).exists():
      return None
    try:
      other = json.loads(storage.Path(self.path).read_text())
    except (OSError, ValueError):
      logging.warning("workdir lock %s is unreadable; taking it over", self.path)
      return None
    same_host = other.get("host") == self.owner["host"]
    if same_host and other.get("pid") == self.owner["pid"]:
      return None
    age = time.time() - float(other.get("heartbeat", other.get("started", 0)))
    if (same_host and not _alive(int(other.get("pid", -1)))) or (not same_host and age > self.stale_after):
      logging.warning("taking over a stale workdir lock of host %s pid %s (last heartbeat %.0f s ago)",
                      other.get("host"), other.get("pid"), age)
      return None
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(other.get("started", 0))))
    return (f"{storage.Path(self.path).parent} is in use by another run (host {other.get('host')}, pid "
            f"{other.get('pid')}, started {started}, heartbeat {age:.0f} s ago). Stop that run or use another "
            f"--workdir; if it is gone (e.g. its machine was lost), delete {self.path}.")

  def acquire(self) -> "WorkdirLock":
    """Takes the lease or raises WorkdirLockedError (on every process of the run)."""
    problem = None
    if jax.process_index() == 0:
      problem = self._holder_problem()
      if problem is None:
        self._write()
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      ok = multihost_utils.broadcast_one_to_all(np.int32(problem is None))
      if not int(ok):
        problem = problem or "the workdir is in use by another run (see process 0's log)"
    if problem:
      raise WorkdirLockedError(problem)
    self._held = True
    return self

  def _write(self) -> None:
    self._last_beat = time.time()
    storage.write_text(self.path, json.dumps(dict(self.owner, heartbeat=self._last_beat)))

  def heartbeat(self) -> None:
    """Renews the lease (at most every `heartbeat_every` seconds; cheap to call every step)."""
    if self._held and jax.process_index() == 0 and time.time() - self._last_beat > self.heartbeat_every:
      self._write()

  def release(self) -> None:
    if self._held and jax.process_index() == 0 and self._holder_problem() is None:
      storage.Path(self.path).unlink(missing_ok=True)
    self._held = False

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
