"""The benchmark entry point: one JSON line per case with positive figures, transformers comparison included."""

import importlib.util
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from wav2vec_jax.models import masking
from wav2vec_jax.models import get_variant

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "benchmark.py")


@pytest.fixture(scope="module")
def benchmark():
  # Once per test process (it defines absl flags): the slow tests run first, so this module-scoped fixture is set
  # up again for the fast ones in the same worker.
  module = sys.modules.get("wav2vec_jax_benchmark")
  if module is None:
    spec = importlib.util.spec_from_file_location("benchmark", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["wav2vec_jax_benchmark"] = module
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  return module


def _run_main(benchmark, capsys, **overrides):
  # Short clips keep compilation small; the default batch is 4 x 64000 samples.
  settings = dict(variant=["tiny"], batch=2, samples=16000, steps=2, warmup=0)
  settings.update(overrides)
  with flagsaver.flagsaver(**settings):
    benchmark.main([])
  lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
  return [json.loads(line) for line in lines]


def _check_common(result):
  for key in ("jax_ms", "jax_ms_min", "jax_ms_first_step", "compile_s", "audio_s_per_s", "gflop_per_step",
              "peak_gflops", "mfu", "memory_mb", "max_rss_mb"):
    assert isinstance(result[key], (int, float)) and result[key] > 0, (key, result[key])
  assert result["jax_ms_first_step"] >= result["jax_ms_min"]
  assert result["loss_finite"] and result["device_kind"]
  assert result["batch"] == 2 and result["samples"] == 16000 and result["steps"] == 2


@pytest.mark.slow
def test_benchmark_tiny_pretrain_and_ctc(benchmark, capsys):
  results = _run_main(benchmark, capsys, kind=["pretrain", "ctc"], compare="")
  assert [(r["variant"], r["kind"]) for r in results] == [("tiny", "pretrain"), ("tiny", "ctc")]
  for result in results:
    _check_common(result)
    assert "torch_ms" not in result
  # CTC fine-tuning does not train the conv encoder: fewer FLOPs than pre-training.
  assert results[1]["gflop_per_step"] < results[0]["gflop_per_step"]


@pytest.mark.slow
def test_benchmark_compares_with_transformers(benchmark, capsys):
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  (result,) = _run_main(benchmark, capsys, kind=["pretrain"], compare="transformers")
  _check_common(result)
  for key in ("torch_ms", "torch_ms_first_step", "torch_over_jax", "torch_mfu", "torch_audio_s_per_s"):
    assert result[key] > 0, key
  assert result["torch_threads"] >= 1
  np.testing.assert_allclose(result["torch_over_jax"], result["torch_ms"] / result["jax_ms"], rtol=0.01)


def test_hf_negatives_are_flat_frame_indices(benchmark):
  cfg = get_variant("tiny")
  frames, batch = 49, 3
  key_mask, key_neg = jax.random.split(jax.random.PRNGKey(0))
  masked = masking.compute_time_mask(key_mask, jnp.ones((batch, frames), bool), cfg.mask_time_prob,
                                     cfg.mask_time_length, cfg.mask_time_min_masks)
  negatives = masking.sample_negatives(key_neg, masked.count, masked.valid, cfg.num_negatives)
  ours = benchmark.hf_negatives(masked, negatives, frames)
  positions, negatives = np.asarray(masked.positions), np.asarray(negatives)
  expected = np.zeros_like(ours)
  for b in range(batch):  # the loop of tests/test_hf_parity.py
    for j in range(int(masked.count)):
      expected[b, positions[b, j]] = b * frames + positions[b, negatives[b, j]]
  np.testing.assert_array_equal(ours, expected)
  mask = np.asarray(masked.mask)
  assert np.all(mask.reshape(-1)[ours[mask]])  # every negative of a masked frame is a masked frame


@pytest.mark.slow
def test_profile_step_attributes_op_time_to_model_parts():
  import subprocess  # pylint: disable=g-import-not-at-top

  script = os.path.join(os.path.dirname(_PATH), "profile_step.py")
  out = subprocess.run([sys.executable, script, "--variant=tiny", "--kind=ctc", "--batch=2", "--samples=16000",
                        "--trace_steps=1", "--top=3"], capture_output=True, text=True, timeout=600, check=True).stdout
  lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
  summary, parts, ops = lines[0], [l for l in lines if "part" in l], [l for l in lines if "op" in l]
  assert summary["variant"] == "tiny" and summary["traced_ms_per_step"] > 0 and summary["ops"] > 0
  assert summary["host_memory"] == "reuse"  # the entry points' allocator setting, applied (a glibc machine)
  by_part = {p["part"]: p["ms"] for p in parts}
  assert by_part["feature_extractor"] > 0 and by_part["encoder/layers"] > 0 and by_part["optimizer"] > 0
  assert abs(sum(p["share"] for p in parts) - 1) < 0.01 and len(ops) == 3


@pytest.mark.slow
def test_compile_benchmark_runs_each_layout_beside_the_unrolled_one():
  import subprocess  # pylint: disable=g-import-not-at-top

  script = os.path.join(os.path.dirname(_PATH), "benchmark_compile.py")
  out = subprocess.run([sys.executable, script, "--variant=tiny", "--kind=pretrain", "--batch=2", "--samples=16000",
                        "--steps=2", "--warmup=0", "--layouts=unrolled,scan:unroll=2:remat=dots"],
                       capture_output=True, text=True, timeout=600, check=True).stdout
  unrolled, dots = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
  assert [r["layout"] for r in (unrolled, dots)] == ["unrolled", "scan:unroll=2:remat=dots"]
  for r in (unrolled, dots):
    assert r["compile_s"] > 0 and r["lower_s"] > 0 and r["step_ms"] > 0 and r["steps"] == 2
    assert r["kernels"] > r["optimizer_kernels"] > 0
  # Scanned layers are stacked: one leaf per parameter of the layer instead of one per layer (tiny: 2 layers).
  assert dots["param_leaves"] < unrolled["param_leaves"]
  assert "step_over_unrolled" not in unrolled and dots["step_over_unrolled"] > 0
  assert unrolled["host_memory"] == dots["host_memory"] == "reuse"


def test_kernel_benchmark_times_norms_gelu_matmuls_and_pos_conv_against_their_alternatives():
  import subprocess  # pylint: disable=g-import-not-at-top

  script = os.path.join(os.path.dirname(_PATH), "benchmark_kernels.py")
  out = subprocess.run([sys.executable, script, "--shapes=2x50x8", "--matmuls=64x32x96", "--pos_convs=2x50x64",
                        "--repeats=2"],
                       capture_output=True, text=True, timeout=600, check=True).stdout
  lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
  by_case = {line["case"]: line for line in lines}
  assert sorted(by_case) == ["gelu", "group_norm", "layer_norm", "matmul forward x @ w", "matmul input grad g @ w.T",
                             "matmul weight grad x.T @ g", "pos_conv"]
  for name in ("gelu", "group_norm", "layer_norm"):  # the same function both ways, timed both ways
    line = by_case[name]
    assert line["shape"] == [2, 50, 8] and line["max_abs_diff_out"] < 1e-5 and line["max_abs_diff_grad_x"] < 1e-5
    assert min(line["ours_fwd_ms"], line["theirs_vjp_ms"], line["fwd_theirs_over_ours"]) > 0
  matmuls = [line for name, line in by_case.items() if name.startswith("matmul")]
  assert all(line["ours_gflop_s"] > 0 and line["torch_ms"] > 0 for line in matmuls)
