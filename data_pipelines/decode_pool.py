"""Decoding batches in worker processes, for hosts where one Python process's GIL caps the input pipeline.

The tf.data pipeline decodes each planned batch in `rows.load_rows`, called from `tf.numpy_function` on tf.data's
threads. FLAC decoding and resampling release the GIL, but normalisation in numpy, row assembly and the crop
generators hold it, so one process stops scaling at about three cores (README, Speed: Input). With
`InputConfig.decode_processes` the same `load_rows` runs in a pool of worker processes instead; tf.data's threads
only hand each job to a worker and wait for its arrays.

Batches are identical to the threads' (every crop is seeded by its global row, not by who decodes it). Each worker
receives the checked index, the bucket shapes and the settings once, when it starts; a job then carries only its
position and rows. The waveform and mask (the bulk of a batch) come back through shared memory: the parent keeps a
few slots, each the size of the largest batch, and a job writes into the slot it was given, which the parent copies
out and frees. Pickling them through the pool's pipe instead cost ~38 ms per BASE batch (5 MB of waveform), more than
half the ~67 ms of decoding. A bad file in `on_error="raise"` mode comes back as the same `AudioInputError`, naming
the file.

Workers are spawned (a fresh interpreter each: never a fork of a process running TensorFlow's or JAX's threads, and
no "forkserver" either: that server stays in the training process's group, and a launcher's SIGTERM to the group
ended it, which the pool takes for the death of every worker). They leave the process group and ignore SIGINT, so a
Ctrl-C or a launcher's SIGTERM to the group reaches only the training process, which saves its checkpoint with its
input still running and then stops them (`close`); and they end by themselves when the training process ends
however it ends (a SIGKILL runs no cleanup, and would leave them waiting forever on the pool's queues). As for any
`multiprocessing` program, they import the launching script's module first: a script must start its work under
`if __name__ == "__main__":` (absl's `app.run` scripts do), or each worker would run it again.
"""

import concurrent.futures
import multiprocessing
import os
import pickle
import queue
import select
import signal
import threading
import time
import weakref
from multiprocessing import shared_memory

import numpy as np

from data_pipelines import rows as rows_lib
from data_pipelines.batching import BucketSpec
from data_pipelines.checks import CheckedIndex
from data_pipelines.errors import DataConfigError
from data_pipelines.input_config import InputConfig

# What every job of this worker process needs, set once by `_start_worker`, and the shared-memory slots it has
# attached. Lives only in worker processes: a process pool's initializer has no other place to leave per-process
# state for the jobs that follow.
_WORKER: dict = {}


def _exit_with(parent: int) -> None:
  """Ends this worker when process `parent` ends, however it ends. A SIGKILLed parent (an out-of-memory kill, a
  preemption's hard stop) closes nothing the workers wait on: the pool's queues are open in every worker too."""
  if os.name != "posix":
    return  # Windows' os.kill(pid, 0) would end the parent, not probe it
  try:
    fd = os.pidfd_open(parent)  # Linux >= 5.3: readable once the process has exited
  except (AttributeError, OSError):
    fd = None
  while True:
    if fd is not None:
      select.select([fd], [], [])
      os._exit(1)  # pylint: disable=protected-access
    try:
      os.kill(parent, 0)
    except ProcessLookupError:
      os._exit(1)  # pylint: disable=protected-access
    except PermissionError:
      pass
    time.sleep(1.0)


def _start_worker(environ: dict[str, str], payload: bytes, started, parent: int) -> None:
  # The pool's environment as it is now (credentials, endpoints), whatever the process started with.
  os.environ.clear()
  os.environ.update(environ)
  os.environ["CUDA_VISIBLE_DEVICES"] = ""  # a worker that imports TensorFlow (TFDS records) takes no GPU memory
  # A Ctrl-C, or a launcher's SIGTERM to the process group, is for the training process: it saves a checkpoint and
  # stops, and needs its workers until then; it stops them itself (`close`, or its exit). So the workers leave the
  # group, and ignore SIGINT. (SIGTERM to a worker itself still ends it: the pool uses that on a broken pool.)
  if hasattr(os, "setpgrp"):
    os.setpgrp()
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  threading.Thread(target=_exit_with, args=(parent,), daemon=True, name="exit_with_parent").start()
  _WORKER["args"] = pickle.loads(payload)
  _WORKER["slots"] = {}
  _WORKER["started"] = started


def _started(_) -> int:
  """Runs in a worker: waits until every worker runs one of these (so each gets one), and returns its pid."""
  _WORKER["started"].wait(timeout=600)
  return os.getpid()


def _slot_arrays(buf, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
  """The waveform (float32) and mask (int32) `[B, S]` views of a slot's buffer."""
  n = shape[0] * shape[1]
  return (np.ndarray(shape, np.float32, buffer=buf, offset=0), np.ndarray(shape, np.int32, buffer=buf, offset=4 * n))


def _decode(slot: str, epoch: int, step: int, bucket: int, rows: np.ndarray, row_offset: int):
  """Runs in a worker: decodes one batch, writes its waveform and mask into shared-memory `slot`, and returns the
  rest of `rows.load_rows`'s arrays."""
  data, language_ids, spec, config, crop = _WORKER["args"]
  wave, mask, *rest = rows_lib.load_rows(data, language_ids, spec, config, epoch=epoch, step=step, bucket=bucket,
                                         rows=rows, row_offset=row_offset, crop=crop)
  if slot not in _WORKER["slots"]:
    _WORKER["slots"][slot] = shared_memory.SharedMemory(slot)
  out_wave, out_mask = _slot_arrays(_WORKER["slots"][slot].buf, wave.shape)
  out_wave[...], out_mask[...] = wave, mask
  del out_wave, out_mask  # no view may outlive the job (closing a segment with views raises BufferError)
  return wave.shape, rest


class DecodeWorkerError(RuntimeError):
  """A decode worker process died (killed for memory, or crashed in an audio decoder); the pool is unusable."""


class DecodePool:
  """`processes` worker processes that decode planned batches with `rows.load_rows`.

  Args:
    processes: worker processes (≥ 1).
    data: the checked index (sent to each worker once; its reader must be picklable).
    language_ids: `[N]` int language id of each item.
    spec: the bucket shapes.
    config: the pipeline settings.
    crop: pre-training crops (True) or fine-tuning padding (False).
    max_batch_samples: the largest `rows × samples` of a batch this pool decodes (sizes the shared-memory slots).
    slots: batches in flight at once (default: two per process, so a worker never waits for the parent's copy).

  Raises:
    DataConfigError: the index cannot be sent to another process (e.g. a reader holding an open handle), or the
      slots do not fit the shared-memory file system (a container's /dev/shm).
  """

  def __init__(self, processes: int, data: CheckedIndex, language_ids: np.ndarray, spec: BucketSpec,
               config: InputConfig, crop: bool, *, max_batch_samples: int, slots: int | None = None):
    if processes < 1:
      raise ValueError(f"a decode pool needs at least one process, got {processes}")
    slots = slots or 2 * processes
    slot_bytes = 8 * max_batch_samples  # float32 waveform + int32 mask
    _check_shared_memory(slots * slot_bytes, config.decode_processes, processes)
    try:
      payload = pickle.dumps((data, language_ids, spec, config, crop), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:  # pickling raises TypeError, AttributeError or PicklingError, by what it meets
      raise DataConfigError(
          f"data.input.decode_processes={config.decode_processes} sends the index to worker processes, but its "
          f"reader cannot be pickled ({e}). Set data.input.decode_processes=0 to decode in this process's "
          "threads.") from e
    self.worker_pids: list[int] = []  # filled once every worker has started
    self._slots = [shared_memory.SharedMemory(create=True, size=slot_bytes) for _ in range(slots)]
    # Freed by `close`, or at exit if a caller never closes (else the resource tracker warns of leaked segments).
    self._free_slots = weakref.finalize(self, _unlink, self._slots)
    self._free: queue.SimpleQueue = queue.SimpleQueue()
    for k in range(slots):
      self._free.put(k)
    context = multiprocessing.get_context("spawn")
    self._pool = concurrent.futures.ProcessPoolExecutor(
        processes, mp_context=context, initializer=_start_worker,
        initargs=(dict(os.environ), payload, context.Barrier(processes), os.getpid()))
    # Wait until every worker has started (and left the process group): a signal to the group during start-up would
    # otherwise kill one that has not yet.
    try:
      self.worker_pids = sorted(self._pool.map(_started, range(processes)))
    except concurrent.futures.process.BrokenProcessPool as e:
      self.close()
      raise DecodeWorkerError("a decode worker process died while starting; set data.input.decode_processes=0 to "
                              "decode in threads, and see its error above") from e

  def load(self, epoch: int, step: int, bucket: int, rows: np.ndarray, row_offset: int):
    """Decodes one batch in a worker and waits for it: the arrays `rows.load_rows` returns, in its order.

    Raises:
      AudioInputError: a bad file, with `on_error="raise"` (raised in the worker, re-raised here).
      DecodeWorkerError: a worker process died; the pool is unusable.
    """
    k = self._free.get()
    try:
      shape, rest = self._pool.submit(_decode, self._slots[k].name, epoch, step, bucket, rows, row_offset).result()
      wave, mask = _slot_arrays(self._slots[k].buf, shape)
      out = (rows_lib.aligned_empty(shape, np.float32), rows_lib.aligned_empty(shape, np.int32), *rest)
      np.copyto(out[0], wave)
      np.copyto(out[1], mask)
      del wave, mask
      return out
    except concurrent.futures.process.BrokenProcessPool as e:
      raise DecodeWorkerError(f"a decode worker process died while decoding batch {step} of epoch {epoch} (killed for "
                              "memory, or a crash in an audio decoder); lower data.input.decode_processes or set it "
                              "to 0 to decode in threads") from e
    finally:
      self._free.put(k)

  def close(self) -> None:
    """Cancels queued jobs, lets running ones finish, waits for the workers to exit and frees the shared memory."""
    self._pool.shutdown(wait=True, cancel_futures=True)
    self._free_slots()


def _unlink(slots: list[shared_memory.SharedMemory]) -> None:
  for slot in slots:
    slot.close()
    slot.unlink()


def _check_shared_memory(needed: int, setting: int, processes: int, path: str = "/dev/shm") -> None:
  """Raises DataConfigError when `needed` bytes of slots do not fit the shared-memory file system (where it has one:
  Linux). Docker gives containers 64 MB by default; writing past it kills a worker with SIGBUS, not an error.
  `setting` is the config's `decode_processes` (-1 included), `processes` the workers it resolved to."""
  try:
    stat = os.statvfs(path)
  except OSError:
    return
  free = stat.f_bavail * stat.f_frsize
  if needed > free:
    raise DataConfigError(
        f"data.input.decode_processes={setting} ({processes} worker processes) needs {needed / 2**20:.1f} MiB of "
        f"shared memory for its batches, and {path} has {free / 2**20:.1f} MiB free. Give the container more "
        "(docker run --shm-size=1g), lower data.input.batch_budget or decode_processes, or set decode_processes=0 to "
        "decode in threads.")
