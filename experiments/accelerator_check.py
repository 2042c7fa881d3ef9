r"""The prepared accelerator check: parity, then training-step benchmarks against transformers, one JSON line each.

  python experiments/accelerator_check.py                    # on whatever device JAX finds; <= 8 minutes on a GPU
  python experiments/accelerator_check.py --size=ci          # CPU-sized (tests/test_accelerator_check.py runs it)

On a lent GPU machine, from the repository root (its image has what this needs: jax, flax, optax, torch,
transformers, absl, pytest; the audio decoders, TensorFlow and ml_collections are not imported, which
tests/test_accelerator_check.py holds true by hiding them: tests/gpu_image):
  PYTHONUNBUFFERED=1 python3 experiments/accelerator_check.py 2>&1 | tee $OUT/check.jsonl

Stages, each reported as JSON lines; a failing stage is reported and the next one still runs:
  1. env        backend, device kind and count, jax / torch versions, whether torch sees the device.
  2. parity     pytest over the parity tests (`--parity_k`) on this device, once with
                JAX_DEFAULT_MATMUL_PRECISION=highest (true float32) and once with the backend's default (TF32 on a
                GPU, where the float32 bars may not hold: that is what the second run shows); the bfloat16 bound
                tests run in both; passed / failed counts and the failures' names.
  3. pos_conv   the positional conv through each `pos_conv_impl` (FFT product, one conv per group), forward and
                VJP at the benchmark cases' shapes (`benchmark_kernels.measure_pos_conv`): what "auto" should pick
                on this backend.
  4. benchmark  `benchmark.py`'s real train step for each case of `--size` (device: BASE and LARGE, pre-training
                and CTC, bfloat16, batches sized to fill a GPU's memory the way fairseq's recipes fill theirs; ci:
                the tiny model, small batches), interleaved with transformers' step on the same device with bf16
                autocast and `--torch_attention` (sdpa); MFU against the measured matmul peak and, for bfloat16 on
                a known device, against the datasheet peak. Cases that would start after `--budget_s` are skipped
                and reported as such.
  5. done       wall seconds.
"""

import json
import os
import subprocess
import sys
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "experiments"))

flags.DEFINE_enum("size", "auto", ["auto", "device", "ci"], "Case sizes (auto: device on a GPU/TPU, ci on CPU).")
flags.DEFINE_string("parity_k", "parity or bfloat16 or per_head", "pytest -k expression of the parity stage "
                    "(over tests/test_hf_parity.py and tests/test_model.py); empty: skip the stage.")
flags.DEFINE_list("precisions", ["highest", "default"], "JAX_DEFAULT_MATMUL_PRECISION of each parity run.")
flags.DEFINE_list("dtypes", [], "Compute dtypes of the benchmark cases (default: bfloat16 on a device, float32 "
                  "and bfloat16 at ci size).")
flags.DEFINE_float("budget_s", 480.0, "No benchmark case starts after this many seconds of the check.")
# benchmark.py's flags serve here too (--steps, --torch_attention, whose default here is sdpa).
import benchmark  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import benchmark_kernels  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

# (variant, kind, batch, samples, scan_layers, attention): fairseq fills a GPU with 1.4M (BASE) / 1.2M (LARGE)
# samples. LARGE has no attention dropout, so its pre-training also runs with the fused attention (cuDNN on a GPU).
CASES = {
    "device": [("base", "pretrain", 8, 175_000, False, "auto"), ("base", "ctc", 8, 175_000, False, "auto"),
               ("large", "pretrain", 8, 150_000, True, "auto"), ("large", "pretrain", 8, 150_000, True, "fused"),
               ("large", "ctc", 8, 150_000, True, "auto")],
    "ci": [("tiny", "pretrain", 2, 16_000, False, "auto"), ("tiny", "ctc", 2, 16_000, False, "fused")],
}


def emit(row: dict) -> None:
  print(json.dumps(row), flush=True)


def environment() -> dict:
  """Backend, devices and library versions."""
  import jax  # pylint: disable=g-import-not-at-top
  row = {"stage": "env", "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
         "devices": jax.device_count(), "jax": jax.__version__}
  try:
    import torch  # pylint: disable=g-import-not-at-top
    row.update({"torch": torch.__version__, "torch_cuda": torch.cuda.is_available()})
  except ImportError:
    row["torch"] = None
  return row


def pytest_counts(summary: str) -> dict[str, int]:
  """Passed / failed / skipped / error counts of pytest's last line, e.g. "2 failed, 5 passed, 1 error in 3.1s"."""
  counts = {word: 0 for word in ("passed", "failed", "skipped", "error")}
  for part in summary.replace("=", "").split(","):
    number, _, word = part.strip().partition(" ")
    for key in counts:
      if word.startswith(key) and number.isdigit():
        counts[key] = int(number)
  return counts


def parity(expression: str, backend: str, precisions: list[str]) -> list[dict]:
  """The parity tests on this device, once per default matmul precision (float32 at full precision, then the
  backend's default, TF32 on a GPU)."""
  rows = []
  for precision in precisions:
    env = dict(os.environ, JAX_DEFAULT_MATMUL_PRECISION=precision)
    if backend != "cpu":  # conftest.py pins the tests to CPU unless told otherwise
      env.update(JAX_PLATFORMS="", CUDA_VISIBLE_DEVICES=os.environ.get("CUDA_VISIBLE_DEVICES", "0"))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", expression,
               os.path.join(REPO, "tests", "test_hf_parity.py"), os.path.join(REPO, "tests", "test_model.py")]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    summary = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
    counts = pytest_counts(summary)
    failures = [line.split(" ")[1] for line in result.stdout.splitlines() if line.startswith("FAILED ")]
    rows.append({"stage": "parity", "matmul_precision": precision, **counts, "failures": failures[:20],
                 "summary": summary, "seconds": round(time.perf_counter() - start, 1)})
  return rows


# Positional conv shapes (batch, frames, hidden): the BASE and LARGE pre-training cases above; ci: small.
POS_CONV_SHAPES = {"device": [(8, 546, 768), (8, 468, 1024)], "ci": [(2, 50, 64)]}


def pos_conv_rows(size: str, repeats: int) -> list[dict]:
  """`benchmark_kernels.measure_pos_conv` at the shapes of `size`; an error is a row, not the end of the check."""
  rows = []
  for shape in POS_CONV_SHAPES[size]:
    try:
      rows.append({"stage": "pos_conv", **benchmark_kernels.measure_pos_conv(*shape, repeats)})
    except Exception as e:  # pylint: disable=broad-except
      rows.append({"stage": "pos_conv", "shape": list(shape), "error": f"{type(e).__name__}: {str(e)[:500]}"})
    emit(rows[-1])
  return rows


def benchmarks(size: str, dtypes: list[str], steps: int, budget_s: float, start: float,
               torch_attention: str) -> list[dict]:
  """benchmark.py's cases of `size` in each of `dtypes`, compared with transformers where torch shares the
  device."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from wav2vec_jax.training import flops  # pylint: disable=g-import-not-at-top

  rows = []
  for dtype in dtypes:
    peak = flops.measure_matmul_peak(jnp.dtype(dtype))
    for variant, kind, batch, samples, scan, attention in CASES[size]:
      case = benchmark.Case(variant, kind, batch, samples, dtype, scan, "none", "auto", attention)
      head = {"stage": "benchmark", "variant": variant, "kind": kind, "dtype": dtype, "attention": attention}
      if time.perf_counter() - start > budget_s:
        rows.append({**head, "skipped": f"past the {budget_s:.0f} s budget"})
        emit(rows[-1])
        continue
      try:
        result = benchmark.benchmark_case(case, steps=steps, warmup=1, compare="transformers", peak_flops=peak,
                                          torch_attention=torch_attention)
        rows.append({**head, **result})
      except Exception as e:  # pylint: disable=broad-except
        rows.append({**head, "error": f"{type(e).__name__}: {str(e)[:500]}"})
      emit(rows[-1])
  return rows


def main(argv):
  del argv
  f = flags.FLAGS
  start = time.perf_counter()
  env = environment()
  emit(env)
  size = f.size if f.size != "auto" else ("ci" if env["backend"] == "cpu" else "device")
  if f.parity_k:
    for row in parity(f.parity_k, env["backend"], f.precisions):
      emit(row)
  pos_conv_rows(size, repeats=5)
  dtypes = f.dtypes or (["bfloat16"] if size == "device" else ["float32", "bfloat16"])
  benchmarks(size, dtypes, f.steps, f.budget_s, start, f.torch_attention)
  emit({"stage": "done", "size": size, "seconds": round(time.perf_counter() - start, 1)})


if __name__ == "__main__":
  flags.FLAGS.set_default("torch_attention", "sdpa")
  app.run(main)
