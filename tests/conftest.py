"""Test set-up: 8 fake CPU devices for sharding tests, no accelerator, no network."""

import os
import tempfile

# XLA:CPU's LLVM at -O0: the suite's programs are small and run a few steps, so compiling dominates; -O0 compiles
# ~1.7x faster and runs ~2x slower (same results). The tests that train for real ask for optimised code
# (`e2e.launch(..., optimize=True)`).
FAST_COMPILE = "--xla_backend_optimization_level=0"
# Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {FAST_COMPILE}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The many small runs of the loop compile the same steps again and again: a persistent cache shared by the test
# processes (and the entry points they launch) compiles each once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "wav2vec_jax_tests_xla"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

from wav2vec_jax.training import runtime  # noqa: E402  (after the environment above: it imports jax)

# As every entry point does: freed host memory stays in the heap for the next step (XLA:CPU's buffers are otherwise
# mapped, faulted in and unmapped at every call).
runtime.reuse_freed_host_memory()


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: end-to-end tests (run in CI, sized small)")
  config.addinivalue_line("markers", "accelerator: needs a GPU/TPU; skipped on CPU-only machines")


def pytest_collection_modifyitems(config, items):
  """The slow end-to-end tests first, the main job's first of all: with `-n 3 --dist worksteal` (the README's
  command) they start at once and overlap the rest, and a worker that runs dry takes queued tests from a busy one
  instead of idling while one worker ends the run alone (1118 s -> 815 s on 2 cores)."""
  del config
  items.sort(key=lambda item: (item.get_closest_marker("slow") is None, "main_job" not in item.name))
