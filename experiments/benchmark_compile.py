r"""Compile time and step time of the training step with the layers unrolled and scanned, in one run.

  python experiments/benchmark_compile.py --variant=base,large --kind=pretrain
  python experiments/benchmark_compile.py --variant=base --layouts=unrolled,scan,scan:unroll=2,scan:remat=dots

A layout is how the transformer layers are built: `unrolled` (one copy of the layer per layer in the program) or
`scan` (`nn.scan`: one copy run in a loop), with options after colons: `unroll=N` (`ModelConfig.scan_unroll`: N
layers per loop iteration) and `remat=full|dots` (`ModelConfig.remat_policy`), e.g. `scan:unroll=2:remat=dots`. The step is `benchmark.py`'s real one (forward,
loss, backward, AdamW on a 1-device mesh, donated state) on the same random batch.

For each variant the unrolled step is built first and stays live; every other layout is then built, lowered and
compiled (timed, with the persistent compilation cache off), and its steps alternate with the unrolled ones, so
each ratio compares two steps under the same machine load. One JSON line per layout: `lower_s` (tracing to
StableHLO), `compile_s` (XLA), median ms per step and its ratio to the unrolled step measured beside it, the
compiled module's kernel count (fusions and other top-level ops of the entry computation and loop bodies), how
many of them are the optimiser update, and the number of parameter leaves.
"""

import collections
import dataclasses
import json
import os
import re
import statistics
import sys
import time

import jax
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# pylint: disable=g-import-not-at-top,wrong-import-position
import benchmark  # noqa: E402
import profile_step  # noqa: E402
from experiments import host_memory as host_memory_lib  # noqa: E402
from wav2vec_jax.training import partitioning  # noqa: E402

flags.DEFINE_list("layouts", ["unrolled", "scan", "scan:unroll=2", "scan:remat=dots"],
                  "Layer layouts; the first must be `unrolled` (the baseline every other one runs beside).")

_OPS = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = \S+ (\w[\w\-]*)\(")  # (instruction name, opcode)
_UNCOUNTED = ("parameter", "constant", "get-tuple-element", "tuple", "bitcast")


@dataclasses.dataclass(frozen=True)
class Layout:
  """How the layers are built: scanned or not, layers per scan iteration, remat policy."""

  name: str
  scan_layers: bool
  scan_unroll: int = 1
  remat: str = "none"


def parse_layout(text: str) -> Layout:
  """`unrolled`, `scan`, `scan:unroll=2`, `scan:unroll=2:remat=dots`, `unrolled:remat=full`, ... -> Layout."""
  kind, *options = text.split(":")
  if kind not in ("unrolled", "scan"):
    raise ValueError(f"--layouts: {text!r} must start with 'unrolled' or 'scan'")
  fields = {}
  for option in options:
    key, _, value = option.partition("=")
    if key not in ("unroll", "remat"):
      raise ValueError(f"--layouts: {text!r} has option {key!r}; options are unroll=N and remat=full|dots")
    fields["scan_unroll" if key == "unroll" else "remat"] = int(value) if key == "unroll" else value
  return Layout(text, kind == "scan", **fields)


def kernel_counts(hlo_text: str) -> dict[str, int]:
  """Kernels of a compiled module: top-level ops of every non-fused computation (the entry and loop bodies), and
  how many of them belong to the optimiser update (by their `op_name` metadata)."""
  metadata = profile_step.op_metadata(hlo_text)
  counts = collections.Counter()
  fused = False
  for line in hlo_text.splitlines():
    if line and not line.startswith(" "):  # a computation header: fused computations hold no kernels of their own
      fused = "fused_computation" in line or line.lstrip("%").startswith("fused")
      continue
    match = _OPS.match(line)
    if fused or not match or match.group(2) in _UNCOUNTED:
      continue
    counts["kernels"] += 1
    if profile_step.part_of(metadata.get(match.group(1), "")) == "optimizer":
      counts["optimizer_kernels"] += 1
  return dict(counts)


class Built:
  """One layout's compiled step, its live state and its timings."""

  def __init__(self, case: benchmark.Case, seed: int):
    cfg = benchmark.model_config(case)
    self.case = case
    jitted, self.state, batch_shardings, self.mesh, self.rules = benchmark.build_jax_step(cfg, case, seed)
    self.rng = jax.random.PRNGKey(seed + 1)
    with partitioning.activate(self.mesh, self.rules):
      self.batch = jax.device_put(benchmark.make_batch(cfg, case, seed), batch_shardings)
      start = time.perf_counter()
      lowered = jitted.lower(self.state, self.batch, self.rng)
      self.lower_s = time.perf_counter() - start
      start = time.perf_counter()
      self.compiled = lowered.compile()
      self.compile_s = time.perf_counter() - start
    self.kernels = kernel_counts(self.compiled.as_text())
    self.leaves = len(jax.tree_util.tree_leaves(self.state.params))
    self.times = []
    self.step(record=False)  # the first run (allocation) is not timed

  def step(self, record: bool = True):
    start = time.perf_counter()
    self.state, metrics = self.compiled(self.state, self.batch, self.rng)
    jax.block_until_ready((self.state, metrics))
    if record:
      self.times.append(time.perf_counter() - start)
    return metrics


def interleave(runs: list[Built], steps: int, warmup: int):
  """Runs every build's step in turn, `warmup` untimed then `steps` timed rounds."""
  for _ in range(warmup):
    for run in runs:
      run.step(record=False)
  for _ in range(steps):
    for run in runs:
      run.step()


def result(run: Built, layout: Layout, baseline: Built | None, host_memory: str = "") -> dict:
  """The JSON fields of one layout (`host_memory`: the allocator setting in effect)."""
  ms = statistics.median(run.times) * 1e3
  out = {"variant": run.case.variant, "kind": run.case.kind, "layout": layout.name, "batch": run.case.batch,
         "samples": run.case.samples, "dtype": run.case.dtype, "lower_s": round(run.lower_s, 2),
         "compile_s": round(run.compile_s, 2), "step_ms": round(ms, 1), "steps": len(run.times),
         "param_leaves": run.leaves, **run.kernels, "host_memory": host_memory}
  if baseline is not None:
    base_ms = statistics.median(baseline.times[-len(run.times):]) * 1e3
    out.update({"unrolled_step_ms": round(base_ms, 1), "step_over_unrolled": round(ms / base_ms, 3)})
  return out


def benchmark_variant(variant: str, kind: str, layouts: list[Layout], *, batch: int, samples: int, dtype: str,
                      steps: int, warmup: int, seed: int = 0, host_memory: str = "", emit=print) -> list[dict]:
  """Every layout of one (variant, kind), each beside the unrolled baseline (the first layout); `host_memory`
  (the allocator setting in effect) is reported in every line."""
  if not layouts or layouts[0].scan_layers:
    raise ValueError("the first layout must be unrolled: it is the baseline every other layout runs beside")

  def case(layout: Layout) -> benchmark.Case:
    return benchmark.Case(variant, kind, batch, samples, dtype, layout.scan_layers, layout.remat,
                          scan_unroll=layout.scan_unroll)

  baseline = Built(case(layouts[0]), seed)
  interleave([baseline], steps, warmup)
  results = [result(baseline, layouts[0], None, host_memory)]
  emit(json.dumps(results[-1]))
  for layout in layouts[1:]:
    run = Built(case(layout), seed)
    interleave([baseline, run], steps, warmup)
    results.append(result(run, layout, baseline, host_memory))
    emit(json.dumps(results[-1]))
    del run
  return results


def main(argv):
  del argv
  f = flags.FLAGS
  host_memory = host_memory_lib.apply_from_flags()  # as the entry points run
  jax.config.update("jax_enable_compilation_cache", False)  # compile time means XLA's, not a cache hit
  layouts = [parse_layout(text) for text in f.layouts]
  for variant in f.variant:
    for kind in f.kind:
      benchmark_variant(variant, kind, layouts, batch=f.batch, samples=f.samples, dtype=f.dtype, steps=f.steps,
                        warmup=f.warmup, seed=f.seed, host_memory=host_memory,
                        emit=lambda line: print(line, flush=True))


if __name__ == "__main__":
  app.run(main)
