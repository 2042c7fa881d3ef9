"""Two processes forming one JAX cluster (gloo over localhost, `experiments/pretrain.py`) train like one process with
two devices, and are preempted and resume exactly: a SIGTERM to one process stops both at the same step with a
checkpoint of it, a SIGKILL of both mid-run loses only the steps since the last checkpoint, and the relaunches log the
per-step losses of an uninterrupted single-process two-device run (to float rounding of the collectives: a resume
that replayed other data or RNG streams, or restored other parameters, differs by far more)."""

import re
import signal

import jax
import numpy as np
import pytest

import e2e  # tests/e2e.py

pytestmark = pytest.mark.slow

TOTAL = 20
# 2 utterances x 1 s per step (one per process), a checkpoint every 4 steps.
FLAGS = [f"--config.total_steps={TOTAL}", "--config.data.input.batch_budget=32000",
         "--config.data.input.max_sample_size=16000", "--config.data.input.min_sample_size=16000",
         "--config.checkpoint_every=4", "--config.log_every=1", "--config.measure_peak_flops=false",
         "--config.async_checkpoints=true"]
COMPARED = ("loss/bits", "loss/contrastive", "loss/diversity", "accuracy", "grad_norm")
STOP_TIMEOUT = 240  # a SIGTERM that only one process acts on hangs both (each waits for the other): fail, not hang


@pytest.fixture
def cluster():
  """Starts two-process runs of pretrain.py; kills whatever is still running when the test ends (a hung run)."""
  started = []

  def start(workdir):
    procs = e2e.launch_cluster("pretrain.py", workdir, *FLAGS)
    started.extend(procs)
    return procs

  yield start
  for proc in started:
    if proc.poll() is None:
      proc.kill()
      proc.wait()


def _finish(procs, timeout=900) -> list[str]:
  return [e2e.finish(proc, timeout) for proc in procs]


def _stopped_at(output: str) -> int | None:
  found = re.findall(r"stopping at step (\d+) after a termination request", output)
  return int(found[-1]) if found else None


def test_preempted_two_process_run_resumes_exactly(tmp_path, cluster):
  reference = str(tmp_path / "reference")
  e2e.finish(e2e.launch("pretrain.py", reference, *FLAGS, devices=2))
  expected = e2e.metrics(reference)
  assert [r["step"] for r in expected] == list(range(1, TOTAL + 1))

  # A maintenance event on one host: SIGTERM to process 1 only (process 0 writes the metrics). Both processes must
  # stop at the same step, save that step, and exit cleanly.
  workdir = str(tmp_path / "preempted")
  procs = cluster(workdir)
  e2e.wait_for_step(procs[0], workdir, 2)
  procs[1].send_signal(signal.SIGTERM)
  outs = _finish(procs, STOP_TIMEOUT)
  stopped = _stopped_at(outs[0])
  assert stopped is not None and _stopped_at(outs[1]) == stopped, [out[-2000:] for out in outs]
  assert 2 <= stopped < TOTAL - 8  # room for a periodic checkpoint and a kill before the end
  assert e2e.checkpoint_steps(workdir)[-1] == stopped == e2e.metrics(workdir)[-1]["step"]

  # Relaunch both; SIGKILL both two steps after the next periodic checkpoint.
  procs = cluster(workdir)
  kill_at = (stopped // 4 + 1) * 4 + 2
  e2e.wait_for_step(procs[0], workdir, kill_at)
  for proc in procs:
    proc.send_signal(signal.SIGKILL)
  for proc in procs:
    proc.wait()
  outs = [e2e.output(proc) for proc in procs]
  assert e2e.resumed_from(outs[0]) == e2e.resumed_from(outs[1]) == stopped
  assert e2e.logged_steps(outs[0])[0] == stopped + 1  # it went on from the checkpoint, not from step 1
  resumed = e2e.checkpoint_steps(workdir)[-1]
  assert stopped <= resumed < kill_at

  outs = _finish(cluster(workdir))
  assert e2e.resumed_from(outs[0]) == e2e.resumed_from(outs[1]) == resumed > 0
  assert e2e.logged_steps(outs[0]) == list(range(resumed + 1, TOTAL + 1))  # only the remaining steps
  got = e2e.metrics(workdir)
  assert [r["step"] for r in got] == list(range(1, TOTAL + 1))  # no step logged twice
  for key in COMPARED:  # every step: the same data, RNG streams, parameters and optimiser state
    np.testing.assert_allclose([r[key] for r in got], [r[key] for r in expected], rtol=1e-5, err_msg=key)
  assert e2e.checkpoint_steps(workdir)[-1] == TOTAL
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                         e2e.params(workdir), e2e.params(reference))
