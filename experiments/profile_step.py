r"""Where one training step spends its time: XLA op times from a profiler trace, grouped by model part.

  python experiments/profile_step.py --variant=base --kind=pretrain
  python experiments/profile_step.py --variant=tiny --kind=ctc --top=30 --pos_conv_impl=conv

The case flags are `benchmark.py`'s (--variant, --kind, --batch, --samples, --dtype, --scan_layers, --remat,
--pos_conv_impl).

Runs the real step of `experiments/benchmark.py` (same batch, same jit) a few times under `jax.profiler.trace`
and sums each XLA operation's time, attributing it to the model part named in its HLO metadata
(`feature_extractor`, `pos_conv_embed`, `encoder/layers`, `quantizer`, the optimiser update, ...). Prints one JSON
line per part (ms per step, share of the traced total) and the slowest operations.

On CPU the op events come from `--xla_cpu_enable_xprof_traceme` (set here before JAX starts). Caveats: XLA:CPU
runs independent ops concurrently, so the traced total can exceed the wall time; work that a library runs on its
own threads (Eigen convolutions) is under-counted. Use it to find where to look, and `benchmark.py` to measure.
"""

import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true").strip()

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # noqa: E402
from absl import app, flags  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchmark  # noqa: E402
from experiments import host_memory as host_memory_lib  # noqa: E402
from wav2vec_jax.training import partitioning  # noqa: E402

flags.DEFINE_integer("trace_steps", 2, "Traced steps (after one untraced warm-up step).")
flags.DEFINE_integer("top", 15, "Slowest operations to list.")

# Model parts, matched in this order against an op's `op_name` metadata.
PARTS = ("feature_extractor", "feature_projection", "pos_conv_embed", "encoder/layers", "encoder", "quantizer",
         "project_", "masked_spec_embed", "cond/branch", "optax", "lm_head")
_RUNTIME_EVENTS = ("$", "Thunk", "Pjit", "Common", "SlinkyThreadPool")


def op_metadata(hlo_text: str) -> dict[str, str]:
  """Maps each instruction name of a compiled HLO module to its `op_name` metadata ("" when absent)."""
  names = {}
  for line in hlo_text.splitlines():
    match = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = ", line)
    if match and match.group(1) not in names:
      op = re.search(r'op_name="([^"]*)"', line)
      names[match.group(1)] = op.group(1) if op else ""
  return names


def part_of(op_name: str) -> str:
  """The model part an op belongs to ("optimizer" for the update, "other" when unknown)."""
  for part in PARTS:
    if part in op_name:
      return "optimizer" if part in ("cond/branch", "optax") else part.rstrip("_/")
  return "other" if op_name else "unattributed"


def op_times(trace_dir: str, steps: int) -> dict[str, float]:
  """Milliseconds per step of every XLA op event in the Perfetto trace written under `trace_dir`."""
  path = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)[0]
  with gzip.open(path) as f:
    events = json.load(f)["traceEvents"]
  times = collections.Counter()
  for event in events:
    if event.get("ph") == "X" and not event["name"].startswith(_RUNTIME_EVENTS):
      times[event["name"]] += event.get("dur", 0) / 1e3 / steps
  return times


def profile_case(case: benchmark.Case, steps: int, top: int, emit=print, host_memory: str = "") -> dict[str, float]:
  """Traces `steps` steps of a case; emits JSON lines (summary with `host_memory`, the allocator setting in
  effect; parts; slowest ops); returns ms per part."""
  cfg = benchmark.model_config(case)
  batch = benchmark.make_batch(cfg, case, 0)
  jitted, state, batch_shardings, mesh, rules = benchmark.build_jax_step(cfg, case, 0)
  rng = jax.random.PRNGKey(1)
  with partitioning.activate(mesh, rules):
    device_batch = jax.device_put(batch, batch_shardings)
    compiled = jitted.lower(state, device_batch, rng).compile()
    metadata = op_metadata(compiled.as_text())
    state, _ = compiled(state, device_batch, rng)
    jax.block_until_ready(state)
    with tempfile.TemporaryDirectory() as trace_dir:
      start = time.perf_counter()
      with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        for _ in range(steps):
          state, metrics = compiled(state, device_batch, rng)
          jax.block_until_ready((state, metrics))
      wall_ms = (time.perf_counter() - start) * 1e3 / steps
      times = op_times(trace_dir, steps)

  parts = collections.Counter()
  for name, ms in times.items():
    parts[part_of(metadata.get(name, ""))] += ms
  total = sum(parts.values())
  emit(json.dumps({"variant": case.variant, "kind": case.kind, "wall_ms_per_step": round(wall_ms, 1),
                   "traced_ms_per_step": round(total, 1), "ops": len(times), "host_memory": host_memory}))
  for part, ms in parts.most_common():
    emit(json.dumps({"part": part, "ms": round(ms, 1), "share": round(ms / max(total, 1e-9), 3)}))
  for name, ms in times.most_common(top):
    emit(json.dumps({"op": name, "ms": round(ms, 2), "op_name": metadata.get(name, "")[-100:]}))
  return dict(parts)


def main(argv):
  del argv
  host_memory = host_memory_lib.apply_from_flags()  # as the entry points run
  for case in benchmark.cases_from_flags():
    profile_case(case, flags.FLAGS.trace_steps, flags.FLAGS.top, emit=lambda line: print(line, flush=True),
                 host_memory=host_memory)


if __name__ == "__main__":
  app.run(main)
