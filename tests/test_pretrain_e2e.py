"""End-to-end pre-training through the real entry point: learning, NaN skipping, preemption and exact resume,
two processes as one JAX cluster. Runs on the generated corpus (made and cached on first use)."""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import wav2vec_jax
from wav2vec_jax import losses

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow

# A small, fast run: 2 utterances x 1 s per step, a checkpoint every 4 steps.
SMALL = ["--config.data.input.batch_budget=32000", "--config.data.input.max_sample_size=16000",
         "--config.data.input.min_sample_size=16000", "--config.checkpoint_every=4", "--config.log_every=1",
         "--config.measure_peak_flops=false", "--config.async_checkpoints=true"]


def _launch(workdir, *flags, devices=1, extra_env=None):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
  env.update(extra_env or {})
  return subprocess.Popen([sys.executable, os.path.join(REPO, "experiments", "pretrain.py"), f"--workdir={workdir}",
                           *flags], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc, timeout=600):
  out, _ = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, out[-4000:]
  return out


def _metrics(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _wait_for_step(proc, workdir, step, timeout=600):
  start = time.time()
  while time.time() - start < timeout:
    rows = _metrics(workdir)
    if rows and rows[-1]["step"] >= step:
      return rows[-1]["step"]
    assert proc.poll() is None, proc.stdout.read()[-4000:]
    time.sleep(0.05)
  raise TimeoutError(f"step {step} not reached")


def _params(workdir):
  return jax.tree_util.tree_map(np.asarray, wav2vec_jax.load_pretrained(workdir)[1]["params"])


def _checkpoint_steps(workdir):
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


def test_tiny_pretraining_learns_skips_nan_and_checkpoints(tmp_path):
  workdir = str(tmp_path / "run")
  # The tiny recipe (1500 steps, ~3 min on 2 cores) sits at chance for 400-700 updates, then learns.
  _finish(_launch(workdir, "--config.measure_peak_flops=false", "--config.fault_injection.nan_steps=(3,)"))
  rows = _metrics(workdir)
  chance = losses.chance_level_bits(10)
  first, tail = rows[0], rows[-2:]
  assert first["step"] == 1 and tail[-1]["step"] == 1500
  assert tail[-1]["bad_steps"] == 1.0  # the NaN batch was skipped, counted, and the run went on
  assert all(r["loss/contrastive"] / np.log(2) < chance - 0.2 for r in tail)  # below chance: it learned
  assert all(r["accuracy"] > 0.15 for r in tail)
  assert all(r["codebook/code_perplexity"] > first["codebook/code_perplexity"] for r in tail)
  assert _checkpoint_steps(workdir)[-1] == 1500
  assert os.path.exists(os.path.join(workdir, "tensorboard"))
  assert all(np.isfinite(v) for row in rows for k, v in row.items() if k != "step" and v is not None)


def test_sigterm_saves_and_sigkill_resume_is_exact(tmp_path):
  steps = ["--config.total_steps=14", *SMALL]
  reference = str(tmp_path / "reference")
  _finish(_launch(reference, *steps))

  workdir = str(tmp_path / "interrupted")
  proc = _launch(workdir, *steps)
  _wait_for_step(proc, workdir, 2)
  proc.send_signal(signal.SIGTERM)
  _finish(proc)
  stopped_at = _metrics(workdir)[-1]["step"]
  assert stopped_at < 14 and _checkpoint_steps(workdir)[-1] == stopped_at  # a checkpoint of the current step

  proc = _launch(workdir, *steps)  # resumes, then dies without warning at a random later step
  _wait_for_step(proc, workdir, random.Random(0).randint(stopped_at + 3, 11))
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  _finish(_launch(workdir, *steps))

  assert _checkpoint_steps(workdir)[-1] == 14
  jax.tree_util.tree_map(np.testing.assert_array_equal, _params(workdir), _params(reference))


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_train_like_one(tmp_path):
  steps = ["--config.total_steps=4", *SMALL]
  single = str(tmp_path / "single")
  _finish(_launch(single, *steps, devices=2))
  port = _free_port()
  multi = str(tmp_path / "multi")
  procs = [_launch(multi, *steps, f"--coordinator_address=localhost:{port}", "--num_processes=2",
                   f"--process_id={i}", "--cpu_collectives") for i in range(2)]
  for proc in procs:
    _finish(proc)
  a, b = _metrics(single), _metrics(multi)
  assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4]
  np.testing.assert_allclose([r["loss/bits"] for r in b], [r["loss/bits"] for r in a], rtol=1e-5)
