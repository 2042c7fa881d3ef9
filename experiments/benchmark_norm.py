r"""The model's norms and GELU against flax's / jax's own, forward and backward, interleaved in one process.

  python experiments/benchmark_norm.py
  python experiments/benchmark_norm.py --shapes=4x12799x32,8x400x768 --repeats=30

For each shape `[batch, time, channels]` it times, alternately, the forward pass and the VJP (forward + backward) of
  - `layers.Norm(axis=-1)` (the model's LayerNorm) against `nn.LayerNorm(use_fast_variance=False)`;
  - `layers.Norm(axis=1)` (GroupNorm with one group per channel: conv block 0 of BASE) against `nn.GroupNorm`;
  - `layers.gelu` (erf) against `jax.nn.gelu(approximate=False)` (erfc);
each pair on the same input, and prints one JSON line per case: median milliseconds of both sides, their ratio
(flax or jax over ours) and the largest difference of outputs and input gradients.
Defaults: block 0 of the tiny model at the benchmark batch (`4x12799x32`), BASE's layers (`8x400x768`), the
feature projection's norm of BASE (`4x3199x512`).
"""

import json
import os
import statistics
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from wav2vec_jax.models import layers  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_list("shapes", ["4x12799x32", "8x400x768", "4x3199x512"], "Shapes batch x time x channels.")
flags.DEFINE_integer("repeats", 20, "Timed calls of each side (alternating).")


def _pairs(channels: int):
  """(name, ours, theirs): functions of (x, scale, bias) -> float32 `[batch, time, channels]`."""

  def with_params(module):
    return lambda x, scale, bias: module.apply({"params": {"scale": scale, "bias": bias}}, x)

  flax_group = nn.GroupNorm(num_groups=channels, epsilon=1e-5, use_fast_variance=False, dtype=jnp.float32)
  return [
      ("layer_norm", with_params(layers.Norm(axis=-1)),
       with_params(nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, dtype=jnp.float32))),
      ("group_norm", with_params(layers.Norm(axis=1)), with_params(flax_group)),
      ("gelu", lambda x, scale, bias: layers.gelu(x), lambda x, scale, bias: jax.nn.gelu(x, approximate=False)),
  ]


def _time_call(fn, args, times: list[float]):
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  times.append((time.perf_counter() - start) * 1e3)


def measure(shape: tuple[int, int, int], repeats: int):
  """Yields one dict per case of `shape`: medians (ms) of ours and theirs, forward and VJP, and the differences."""
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  x = 2.0 * jax.random.normal(keys[0], shape) + 0.3
  cotangent = jax.random.normal(keys[1], shape)
  scale = 1.0 + 0.1 * jax.random.normal(keys[2], shape[-1:])
  bias = 0.1 * jax.random.normal(keys[3], shape[-1:])
  args = (x, scale, bias)
  for name, ours, theirs in _pairs(shape[-1]):
    compiled = {}
    for side, fn in (("ours", ours), ("theirs", theirs)):
      forward = jax.jit(fn)
      vjp = jax.jit(lambda x, s, b, fn=fn: jax.vjp(fn, x, s, b)[1](cotangent))
      compiled[side] = (forward, vjp)
    out = {side: (forward(*args), vjp(*args)) for side, (forward, vjp) in compiled.items()}
    times = {(side, part): [] for side in compiled for part in ("fwd", "vjp")}
    for _ in range(repeats):
      for side, (forward, vjp) in compiled.items():
        _time_call(forward, args, times[side, "fwd"])
        _time_call(vjp, args, times[side, "vjp"])
    med = {key: statistics.median(value) for key, value in times.items()}
    yield {
        "case": name, "shape": list(shape),
        "ours_fwd_ms": round(med["ours", "fwd"], 3), "theirs_fwd_ms": round(med["theirs", "fwd"], 3),
        "fwd_theirs_over_ours": round(med["theirs", "fwd"] / med["ours", "fwd"], 2),
        "ours_vjp_ms": round(med["ours", "vjp"], 3), "theirs_vjp_ms": round(med["theirs", "vjp"], 3),
        "vjp_theirs_over_ours": round(med["theirs", "vjp"] / med["ours", "vjp"], 2),
        "max_abs_diff_out": float(jnp.abs(out["ours"][0] - out["theirs"][0]).max()),
        "max_abs_diff_grad_x": float(jnp.abs(out["ours"][1][0] - out["theirs"][1][0]).max()),
    }


def main(argv):
  del argv
  for spec in flags.FLAGS.shapes:
    shape = tuple(int(n) for n in spec.split("x"))
    if len(shape) != 3:
      raise app.UsageError(f"--shapes entry {spec!r}: expected batch x time x channels, e.g. 4x12799x32")
    for line in measure(shape, flags.FLAGS.repeats):
      print(json.dumps(line), flush=True)


if __name__ == "__main__":
  app.run(main)
