"""The prepared accelerator check runs end to end on CPU at CI size, so that a session with a lent device spends its
minutes measuring: every stage reports, the parity stage counts a real pytest run, the benchmark lines carry both
sides' figures with bf16 autocast and SDPA on the torch side."""

import json
import os
import subprocess
import sys

import pytest

import e2e  # tests/e2e.py

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_the_accelerator_check_runs_on_cpu_at_ci_size():
  command = [sys.executable, os.path.join(REPO, "experiments", "accelerator_check.py"), "--size=auto",
             "--parity_k=test_a_conv_as_matmuls_equals_the_conv and 9-2-3", "--precisions=highest",
             "--dtypes=bfloat16", "--steps=1"]
  # As on the lent GPU machine's image: no TensorFlow, ml_collections, audio decoders, ... (tests/gpu_image).
  image = os.path.join(REPO, "tests", "gpu_image")
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=e2e.xla_flags(devices=1),
             PYTHONPATH=os.pathsep.join(filter(None, [image, os.environ.get("PYTHONPATH")])))
  probe = ("import importlib.util as u; "
           "print(u.find_spec('tensorflow'), u.find_spec('ml_collections'), u.find_spec('flax'))")
  hidden = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
  assert hidden.startswith("None None ModuleSpec"), hidden  # the image is simulated: what it lacks is not found
  result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
  stages = [row["stage"] for row in rows]
  assert stages == ["env", "parity", "pos_conv", "benchmark", "benchmark", "done"], stages
  assert rows[0]["backend"] == "cpu" and rows[0]["devices"] == 1
  assert rows[1]["passed"] == 1 and rows[1]["failed"] == rows[1]["error"] == 0, rows[1]  # a real pytest run
  assert rows[1]["matmul_precision"] == "highest"
  pos_conv = rows[2]  # both implementations timed on the device, and they agree
  assert "error" not in pos_conv and pos_conv["shape"] == [2, 50, 64] and pos_conv["backend"] == "cpu", pos_conv
  assert min(pos_conv[f"{impl}_{part}_ms"] for impl in ("fft", "conv") for part in ("fwd", "vjp")) > 0
  assert pos_conv["max_abs_diff_fft_vs_conv"] < 1e-4 and pos_conv["torch_cpu_fwd_bwd_ms"] > 0
  for row in rows[3:5]:
    assert "error" not in row and "skipped" not in row, row
    assert row["dtype"] == "bfloat16" and row["variant"] == "tiny" and row["loss_finite"]
    assert row["mfu"] > 0 and row["torch_over_jax"] > 0 and row["torch_device"] == "cpu"
    assert row["torch_attention"] == "sdpa" and row["mfu_datasheet"] is None  # no datasheet peak for a CPU
  assert [(row["kind"], row["attention"]) for row in rows[3:5]] == [("pretrain", "auto"), ("ctc", "fused")]
  assert rows[-1]["size"] == "ci"


def test_datasheet_peaks_match_device_kinds():
  from wav2vec_jax.training import flops  # pylint: disable=g-import-not-at-top
  assert flops.datasheet_bf16_peak("NVIDIA H200") == flops.datasheet_bf16_peak("NVIDIA H100 80GB HBM3") == 989e12
  assert flops.datasheet_bf16_peak("TPU v5 lite") == 197e12 and flops.datasheet_bf16_peak("TPU v5p") == 459e12
  assert flops.datasheet_bf16_peak("cpu") is None
