"""Hides the packages a lent GPU machine's image lacks, so that `tests/test_accelerator_check.py` runs the prepared
check as it will run there (`PYTHONPATH=tests/gpu_image`; the image's package list as read on 2026-11-17 holds jax,
flax, optax, orbax-checkpoint, absl-py, torch, transformers, pytest, but none of these).

A hidden package is not found at all (`importlib.util.find_spec` gives None, as for a package that is not installed,
which is how transformers decides what it may import), rather than found and failing to import.
"""

import sys

ABSENT = {"tensorflow", "tensorflow_datasets", "ml_collections", "librosa", "soundfile", "soxr", "espeakng_loader",
          "jiwer", "kenlm", "pyctcdecode", "faker", "gcsfs", "gcp_storage_emulator", "nbclient", "nbformat"}


class _Hiding:
  """`importlib.machinery.PathFinder` that does not find the ABSENT packages."""

  def __init__(self, inner):
    self.inner = inner

  def find_spec(self, name, path=None, target=None):
    return None if name.split(".")[0] in ABSENT else self.inner.find_spec(name, path, target)

  def __getattr__(self, attr):
    return getattr(self.inner, attr)


sys.meta_path[:] = [_Hiding(f) if getattr(f, "__name__", "") == "PathFinder" else f for f in sys.meta_path]
