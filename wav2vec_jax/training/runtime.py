"""Process-level set-up shared by the entry points: multi-host initialisation, TensorFlow's device view, the host
allocator, and how an entry point stops on bad input."""

import ctypes
import logging as py_logging
import os
import sys

import jax
from absl import logging


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1,
               cpu_collectives: bool = False) -> None:
  """Joins a multi-process JAX cluster when asked to (flags) or when the environment says so (TPU pods, SLURM).

  Args:
    coordinator_address: "host:port" of process 0; empty means single process unless the environment sets up
      a cluster (Cloud TPU slices and SLURM are detected by `jax.distributed.initialize()` itself).
    num_processes, process_id: with coordinator_address, the cluster size and this process's rank.
    cpu_collectives: use gloo for cross-process collectives on CPU (several CPU processes on one machine).
  """
  if cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if coordinator_address:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  elif os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("SLURM_JOB_ID") or os.environ.get(
      "JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize()
  logging.info("process %d of %d; %d local / %d global devices (%s)", jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count(), jax.devices()[0].platform)


def enable_compilation_cache(path: str, min_compile_seconds: float = 1.0) -> None:
  """Persists compiled XLA programs under `path` (a local folder or a gs:// path); "" leaves the cache off.

  A relaunch (after preemption, or the next run of the same config) then loads the train step instead of compiling
  it: LARGE with scan over layers on a 2-core CPU, 9.2 s of XLA compilation becomes 0.5 s.
  """
  if not path:
    return
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
  logging.info("persistent compilation cache: %s", path)


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_REUSE = ((_M_MMAP_MAX, 0),  # no allocation gets a mapping of its own: all come from the heap and go back to it
          (_M_TRIM_THRESHOLD, 2**31 - 1),  # the heap's free top stays mapped (up to 2 GB) ...
          (_M_TOP_PAD, 64 << 20))  # ... and grows 64 MB at a time


def reuse_freed_host_memory() -> bool:
  """Makes glibc's malloc keep freed memory for the next allocation instead of handing it back to the kernel.

  XLA:CPU allocates a step's buffers afresh at every call. glibc serves each allocation over its mmap threshold
  (128 KB, raised up to 32 MB as the process frees mapped chunks) with a new mapping and unmaps it on free, so every
  step faults in, and the kernel zeroes, the same pages again: the `tiny` pre-training step at the demo's batch took
  ~27,000 page faults and ~50 ms of kernel time per step (getrusage around 20 steps, 2 cores). Serving everything
  from the heap and never trimming it (what tcmalloc does) made the demo's pre-training loop 1.6x faster and the
  isolated step 1.2x (README, Speed: `experiments/benchmark.py --host_memory=glibc|reuse`). The cost: the process
  keeps its peak heap until it exits, a peak that training and evaluation reach again at every step anyway.

  Process-wide and not undone (glibc's own thresholds cannot be restored); every entry point calls it first
  (`start_entry_point`). Returns whether it applied: False where the C library is not glibc (macOS, musl), which is
  left as it is.
  """
  if not sys.platform.startswith("linux"):
    return False
  try:
    mallopt = ctypes.CDLL("libc.so.6").mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
  return all(mallopt(param, value) == 1 for param, value in _REUSE)


def hide_accelerators_from_tensorflow() -> None:
  """TensorFlow (tf.data, TFDS) must not take GPU/TPU memory that JAX needs."""
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    tf.config.set_visible_devices([], "GPU")
    tf.config.set_visible_devices([], "TPU")
  except (ImportError, RuntimeError, ValueError):
    pass


# Library warnings that describe expected states, not problems: Orbax reading a training checkpoint's parameters
# without the step-level metadata file (init_from a workdir), and Orbax finding the temporary folder of a save that
# a kill interrupted (it is replaced).
_BENIGN_LIBRARY_WARNINGS = ("Metadata file does not exist", "Attempted to create temporary directory")


class _DropLibraryInfo(py_logging.Filter):
  """Keeps INFO lines of this project; libraries (Orbax logs every save step by step) only from WARNING up, less
  the benign warnings above."""

  def filter(self, record):
    noisy = any(part in record.pathname for part in ("/orbax/", "/jax/_src/", "/tensorflow/"))
    if not noisy:
      return True
    if record.levelno < py_logging.WARNING:
      return False
    return record.levelno > py_logging.WARNING or not str(record.msg).startswith(_BENIGN_LIBRARY_WARNINGS)


class _ConsoleFormatter(py_logging.Formatter):
  """`I 06:23:46 message`: level letter and wall time, without absl's date, thread id and source line (kept for
  warnings and errors, where they help)."""

  def __init__(self):
    super().__init__(datefmt="%H:%M:%S")

  def format(self, record):
    where = "" if record.levelno < py_logging.WARNING else f" {record.filename}:{record.lineno}]"
    text = f"{record.levelname[0]} {self.formatTime(record, self.datefmt)}{where} {record.getMessage()}"
    if record.exc_info:
      text += "\n" + self.formatException(record.exc_info)
    return text


def quiet_library_logs() -> None:
  """A clean console for an entry point (call once, first thing in `main`): this project's INFO lines in a short
  format, libraries' (Orbax, JAX, TensorFlow) only from WARNING up, and none of TensorFlow's C++ start-up notices
  (oneDNN, "All log messages before absl::InitializeLog()"), which are printed when TensorFlow loads; every entry
  point loads it later than this."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TF's C++ INFO lines; its warnings and errors still show
  # TensorFlow only reads and batches data here (the model runs in JAX); without its oneDNN kernels it prints no
  # "oneDNN custom operations are on" notice, which TF_CPP_MIN_LOG_LEVEL does not silence.
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
  handler = logging.get_absl_handler()
  handler.addFilter(_DropLibraryInfo())  # on the handler: records that propagate from library loggers pass here
  handler.python_handler.setFormatter(_ConsoleFormatter())


def stop_on(errors: tuple[type[BaseException], ...], fn, *args):
  """Runs `fn(*args)`; an error of the `errors` kinds (whose message names the file or field, the cause and the fix)
  ends the process with that one line, `stopped: <Error>: <message>`, and exit status 1 instead of a traceback (the
  traceback is logged at debug level)."""
  try:
    return fn(*args)
  except errors as e:
    logging.debug("traceback", exc_info=True)
    logging.error("stopped: %s: %s", type(e).__name__, e)
    sys.exit(1)


def start_entry_point(compilation_cache_dir: str = "", *, tensorflow: bool = True) -> None:
  """What every entry point does first in `main`: a clean console (`quiet_library_logs`), freed host memory kept for
  reuse (`reuse_freed_host_memory`), TensorFlow kept off the accelerators (`tensorflow`: the entry point reads data
  through tf.data; False skips importing TF, ~3 s), and the persistent compilation cache at `compilation_cache_dir`
  ("" leaves it off)."""
  quiet_library_logs()
  reuse_freed_host_memory()
  if tensorflow:
    hide_accelerators_from_tensorflow()
  enable_compilation_cache(compilation_cache_dir)
