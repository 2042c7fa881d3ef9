"""Test set-up: 8 fake CPU devices for sharding tests, no accelerator, no network."""

import os

# Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: end-to-end tests (run in CI, sized small)")
  config.addinivalue_line("markers", "accelerator: needs a GPU/TPU; skipped on CPU-only machines")
