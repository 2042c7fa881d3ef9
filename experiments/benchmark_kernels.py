r"""Single kernels of the training step against their alternatives, forward and backward, interleaved in one process.

  python experiments/benchmark_kernels.py
  python experiments/benchmark_kernels.py --shapes=4x12799x32,8x400x768 --repeats=30 --matmuls=800x768x3072

For each shape `[batch, time, channels]` it times, alternately, the forward pass and the VJP (forward + backward) of
  - `layers.Norm(axis=-1)` (the model's LayerNorm) against `nn.LayerNorm(use_fast_variance=False)`;
  - `layers.Norm(axis=1)` (GroupNorm with one group per channel: conv block 0 of BASE) against `nn.GroupNorm`;
  - `layers.gelu` (erf) against `jax.nn.gelu(approximate=False)` (erfc);
for each `--matmuls` entry `MxKxN` the three float32 products of a dense layer (forward `x @ w`, input gradient
`g @ w.T`, weight gradient `x.T @ g`) through XLA against torch on the same CPU threads (skipped without torch);
and for each `--pos_convs` entry `batch x frames x hidden` the positional conv (kernel 128, 16 groups, as BASE and
LARGE) through each `pos_conv_impl` ("fft": an FFT product; "conv": one dense conv per group), forward and VJP, on
whatever device JAX has, interleaved with torch's grouped Conv1d forward + backward where JAX runs on the CPU (the
measurement behind `pos_conv_impl="auto"`: FFT for CPU training, the conv for CPU forward passes and elsewhere).
Prints one JSON line per case: median milliseconds of both sides and their ratio (theirs over ours: > 1 means ours
is faster); for norms and GELU also the largest difference of outputs and input gradients, for matmuls GFLOP/s.
Default shapes: conv block 0 of the tiny model at the benchmark batch (`4x12799x32`), BASE's layers (`8x400x768`),
the feature projection's norm of BASE (`4x3199x512`); default matmul: a BASE feed-forward layer on 4 x 4 s.
"""

import json
import os
import statistics
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from wav2vec_jax.models import layers, transformer  # noqa: E402  pylint: disable=wrong-import-position

flags.DEFINE_list("shapes", ["4x12799x32", "8x400x768", "4x3199x512"], "Shapes batch x time x channels.")
flags.DEFINE_list("matmuls", ["800x768x3072"], "Matmul shapes M x K x N against torch (empty: none).")
flags.DEFINE_list("pos_convs", ["4x200x768"], "Positional conv shapes batch x frames x hidden (empty: none).")
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


def _time_call(fn, times: list[float]):
  start = time.perf_counter()
  jax.block_until_ready(fn())
  times.append((time.perf_counter() - start) * 1e3)


def _interleaved(calls: dict, repeats: int) -> dict:
  """Median ms of each zero-argument call in `calls`, timed in turn `repeats` times after one untimed call each."""
  for fn in calls.values():
    jax.block_until_ready(fn())
  times = {key: [] for key in calls}
  for _ in range(repeats):
    for key, fn in calls.items():
      _time_call(fn, times[key])
  return {key: statistics.median(value) for key, value in times.items()}


def measure_norms(shape: tuple[int, int, int], repeats: int):
  """Yields one dict per norm/GELU case of `shape` `[batch, time, channels]` (float32)."""
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  x = 2.0 * jax.random.normal(keys[0], shape) + 0.3
  cotangent = jax.random.normal(keys[1], shape)
  scale = 1.0 + 0.1 * jax.random.normal(keys[2], shape[-1:])
  bias = 0.1 * jax.random.normal(keys[3], shape[-1:])
  args = (x, scale, bias)
  for name, ours, theirs in _pairs(shape[-1]):
    calls, out = {}, {}
    for side, fn in (("ours", ours), ("theirs", theirs)):
      forward = jax.jit(fn)
      vjp = jax.jit(lambda x, s, b, fn=fn: jax.vjp(fn, x, s, b)[1](cotangent))
      calls[side, "fwd"] = lambda forward=forward: forward(*args)
      calls[side, "vjp"] = lambda vjp=vjp: vjp(*args)
      out[side] = (forward(*args), vjp(*args))
    med = _interleaved(calls, repeats)
    yield {
        "case": name, "shape": list(shape),
        "ours_fwd_ms": round(med["ours", "fwd"], 3), "theirs_fwd_ms": round(med["theirs", "fwd"], 3),
        "fwd_theirs_over_ours": round(med["theirs", "fwd"] / med["ours", "fwd"], 2),
        "ours_vjp_ms": round(med["ours", "vjp"], 3), "theirs_vjp_ms": round(med["theirs", "vjp"], 3),
        "vjp_theirs_over_ours": round(med["theirs", "vjp"] / med["ours", "vjp"], 2),
        "max_abs_diff_out": float(jnp.abs(out["ours"][0] - out["theirs"][0]).max()),
        "max_abs_diff_grad_x": float(jnp.abs(out["ours"][1][0] - out["theirs"][1][0]).max()),
    }


def measure_matmuls(m: int, k: int, n: int, repeats: int):
  """Yields one dict per product of a dense layer `[m, k] @ [k, n]` (float32): XLA against torch."""
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
  rng = np.random.default_rng(0)
  x, w, g = (rng.normal(size=shape).astype(np.float32) for shape in ((m, k), (k, n), (m, n)))
  jx, jw, jg = (jnp.asarray(a) for a in (x, w, g))
  tx, tw, tg = (torch.from_numpy(a) for a in (x, w, g))
  products = {
      "forward x @ w": (jax.jit(lambda a, b: a @ b), (jx, jw), lambda: tx @ tw),
      "input grad g @ w.T": (jax.jit(lambda a, b: a @ b.T), (jg, jw), lambda: tg @ tw.T),
      "weight grad x.T @ g": (jax.jit(lambda a, b: a.T @ b), (jx, jg), lambda: tx.T @ tg),
  }
  gflop = 2 * m * k * n / 1e9
  for name, (fn, args, theirs) in products.items():
    med = _interleaved({"ours": lambda fn=fn, args=args: fn(*args), "theirs": theirs}, repeats)
    yield {"case": f"matmul {name}", "shape": [m, k, n], "ours_ms": round(med["ours"], 2),
           "torch_ms": round(med["theirs"], 2), "theirs_over_ours": round(med["theirs"] / med["ours"], 2),
           "ours_gflop_s": round(gflop / med["ours"] * 1e3, 1), "torch_gflop_s": round(gflop / med["theirs"] * 1e3, 1)}


def measure_pos_conv(batch: int, frames: int, hidden: int, repeats: int, kernel: int = 128, groups: int = 16):
  """One dict: ms of the positional conv per impl, forward and VJP (float32), and torch's where JAX is on CPU."""
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(keys[0], (batch, frames, hidden))
  w = 0.02 * jax.random.normal(keys[1], (kernel, hidden // groups, hidden))
  cotangent = jax.random.normal(keys[2], x.shape)
  calls, outputs = {}, {}
  for impl in ("fft", "conv"):
    fn = lambda x, w, impl=impl: transformer.grouped_conv_same(x, w, groups, impl)
    forward, vjp = jax.jit(fn), jax.jit(lambda x, w, fn=fn: jax.vjp(fn, x, w)[1](cotangent))
    calls[impl, "fwd"] = lambda forward=forward: forward(x, w)
    calls[impl, "vjp"] = lambda vjp=vjp: vjp(x, w)
    outputs[impl] = forward(x, w)
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    torch = None
  if torch is not None and jax.default_backend() == "cpu":  # torch's figure is a CPU one: only beside XLA:CPU
    conv = torch.nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2, groups=groups)
    inputs = torch.randn(batch, hidden, frames, requires_grad=True)

    def torch_step():
      y = conv(inputs)
      y.backward(torch.ones_like(y))

    calls["torch_cpu", "fwd_bwd"] = torch_step
  med = _interleaved(calls, repeats)
  return {"case": "pos_conv", "shape": [batch, frames, hidden], "backend": jax.default_backend(),
          **{f"{impl}_{part}_ms": round(ms, 2) for (impl, part), ms in med.items()},
          "max_abs_diff_fft_vs_conv": float(jnp.abs(outputs["fft"] - outputs["conv"]).max())}


def _dims(spec: str, count: int, example: str) -> tuple[int, ...]:
  dims = tuple(int(d) for d in spec.split("x"))
  if len(dims) != count:
    raise app.UsageError(f"shape {spec!r}: expected {count} sizes separated by 'x', e.g. {example}")
  return dims


def main(argv):
  del argv
  f = flags.FLAGS
  for spec in f.shapes:
    for line in measure_norms(_dims(spec, 3, "4x12799x32"), f.repeats):
      print(json.dumps(line), flush=True)
  for spec in f.pos_convs:
    print(json.dumps(measure_pos_conv(*_dims(spec, 3, "4x200x768"), f.repeats)), flush=True)
  try:
    import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    print(json.dumps({"case": "matmul", "skipped": "torch is not installed (pip install -e '.[test]')"}))
    return
  for spec in f.matmuls:
    for line in measure_matmuls(*_dims(spec, 3, "800x768x3072"), f.repeats):
      print(json.dumps(line), flush=True)


if __name__ == "__main__":
  app.run(main)
