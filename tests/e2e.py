"""Launching the real entry points in subprocesses, for the end-to-end tests."""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

import conftest  # tests/conftest.py
import jax
import numpy as np

import wav2vec_jax

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


_TRAIN_SCRIPTS = ("pretrain.py", "finetune.py", "train.py")  # the entry points with a --config


def xla_flags(devices: int = 1, optimize: bool = False) -> str:
  """XLA_FLAGS for a launched process: `devices` CPU devices; unoptimised code (fast compiles, conftest.py) unless
  `optimize`."""
  return f"--xla_force_host_platform_device_count={devices}" + ("" if optimize else f" {conftest.FAST_COMPILE}")


def launch(script: str, workdir: str, *flags, devices: int = 1, optimize: bool = False, plots: bool = False,
           extra_env=None) -> subprocess.Popen:
  """Starts `experiments/<script>` with `--workdir` and flags; stdout and stderr go to a file (`output(proc)`), so
  a chatty run never blocks on a full pipe while the test waits for it. `optimize`: fully optimised XLA code, for
  launches that train long enough for run time to outweigh compile time. `plots`: draw `curves.png` (off by
  default: matplotlib costs ~1-2 s a run)."""
  env = dict(os.environ, XLA_FLAGS=xla_flags(devices, optimize), JAX_PLATFORMS="cpu")
  env.update(extra_env or {})
  log = tempfile.NamedTemporaryFile("w+", prefix="wav2vec_jax_e2e_", suffix=".log", delete=False)
  proc = subprocess.Popen([sys.executable, os.path.join(REPO, "experiments", script), f"--workdir={workdir}",
                           *([] if plots or script not in _TRAIN_SCRIPTS else ["--config.plots=false"]), *flags],
                          cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
  proc.log_path = log.name
  log.close()
  return proc


def output(proc) -> str:
  """Everything the launch printed so far."""
  with open(proc.log_path, encoding="utf-8", errors="replace") as f:
    return f.read()


def finish(proc, timeout=900) -> str:
  """Waits for a launch that must succeed; returns its output."""
  proc.wait(timeout=timeout)
  out = output(proc)
  assert proc.returncode == 0, out[-4000:]
  return out


def metrics(workdir) -> list[dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def wait_for_step(proc, workdir, step, timeout=900) -> int:
  start = time.time()
  while time.time() - start < timeout:
    rows = metrics(workdir)
    if rows and rows[-1]["step"] >= step:
      return rows[-1]["step"]
    assert proc.poll() is None, output(proc)[-4000:]
    time.sleep(0.05)
  raise TimeoutError(f"step {step} not reached")


def params(workdir):
  return jax.tree_util.tree_map(np.asarray, wav2vec_jax.load_pretrained(workdir)[1]["params"])


def saved_item(workdir, item: str = "state", step: int | None = None):
  """One item of a run's checkpoint as Orbax saved it, without a restore target: "state" (the TrainState as nested
  dicts of numpy arrays: "params", "opt_state", ...) or "data" (the input position and counters); the latest step
  by default."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"), item_names=("state", "data"))
  try:
    args = ocp.args.StandardRestore() if item == "state" else ocp.args.JsonRestore()
    return manager.restore(manager.latest_step() if step is None else step,
                           args=ocp.args.Composite(**{item: args}))[item]
  finally:
    manager.close()


def checkpoint_steps(workdir) -> list[int]:
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


def resumed_from(output: str) -> int | None:
  """The step a launch says it resumed from (None: it started from scratch)."""
  found = re.findall(r"resumed from step (\d+)", output)
  return int(found[-1]) if found else None


def logged_steps(output: str) -> list[int]:
  """The steps whose progress line a launch printed, in order (process 0 prints them)."""
  return [int(s) for s in re.findall(r"^I \S+ step (\d+)/", output, re.M)]


def steps_run(output: str) -> int:
  """How many train steps a launch ran (its checkpoint log lines count saves, the step lines count progress)."""
  return len(logged_steps(output))


def free_port() -> int:
  """A TCP port on localhost that nothing listens on now (for a coordinator address)."""
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def launch_cluster(script: str, workdir: str, *flags, processes: int = 2) -> list[subprocess.Popen]:
  """Starts `processes` copies of `experiments/<script>` forming one JAX cluster over localhost (gloo CPU
  collectives, one device each, process 0 the coordinator); returns them in process order."""
  address = f"localhost:{free_port()}"
  return [launch(script, workdir, *flags, f"--coordinator_address={address}", f"--num_processes={processes}",
                 f"--process_id={i}", "--cpu_collectives") for i in range(processes)]
