r"""Soak test: one training run killed at random points (SIGKILL and SIGTERM, some mid-save) and relaunched each
time must end with the parameters of an uninterrupted run, bit for bit.

  python experiments/chaos.py --script=pretrain.py --kills=30 --seed=0
  python experiments/chaos.py --script=finetune.py --kills=30 --seed=0

Prints the kill schedule, each relaunch's resume step, the wall time, and whether the final parameters match.
Exit status 1 when they do not (or a relaunch fails).
"""

import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

flags.DEFINE_string("script", "pretrain.py", "Entry point in experiments/ (pretrain.py or finetune.py).")
flags.DEFINE_integer("kills", 30, "Interruptions before the run is let finish.")
flags.DEFINE_integer("seed", 0, "Seed of the kill schedule.")
flags.DEFINE_integer("total_steps", 150, "Updates of the run.")
flags.DEFINE_string("workdir", "", "Where to put the two runs (default: a fresh temporary folder).")

# Small batches and frequent checkpoints, so kills land before, during and after saves.
_COMMON = ["--config.checkpoint_every=5", "--config.log_every=1", "--config.measure_peak_flops=false"]
_FLAGS = {
    "pretrain.py": ["--config.data.input.batch_budget=32000", "--config.data.input.max_sample_size=16000",
                    "--config.data.input.min_sample_size=16000"],
    "finetune.py": ["--config.data.input.batch_budget=64000", "--config.data.input.max_sample_size=64000",
                    "--config.data.input.num_buckets=2", "--config.data.eval_split=",
                    "--config.freeze_finetune_updates=40"],
}


def _launch(workdir):
  args = [sys.executable, os.path.join(REPO, "experiments", flags.FLAGS.script), f"--workdir={workdir}",
          f"--config.total_steps={flags.FLAGS.total_steps}", *_COMMON, *_FLAGS[flags.FLAGS.script]]
  proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
  lines = queue.Queue()
  threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
  return proc, lines


def _interrupt(workdir, rng) -> str:
  """Launches, lets it train a random while (or until a save starts), kills it; returns what happened."""
  proc, lines = _launch(workdir)
  mode = rng.choice(["SIGKILL", "SIGKILL", "SIGTERM", "SIGKILL mid-save"])
  steps_to_wait, started, resumed = rng.randint(1, 12), 0, "scratch"
  while proc.poll() is None:
    try:
      line = lines.get(timeout=0.5)
    except queue.Empty:
      continue
    if "resumed from step" in line:
      resumed = line.rsplit(" ", 1)[-1].strip()
    if re.match(r"I \S+ step \d+/", line):
      started += 1
    due = ("saving step" in line) if mode.endswith("mid-save") else started >= steps_to_wait
    if due:
      proc.send_signal(signal.SIGTERM if mode == "SIGTERM" else signal.SIGKILL)
      break
  proc.wait()
  return f"{mode:17s} after {started:3d} steps (resumed from {resumed}), exit {proc.returncode}"


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import wav2vec_jax  # pylint: disable=g-import-not-at-top

  root = flags.FLAGS.workdir or tempfile.mkdtemp(prefix="wav2vec_jax_chaos_")
  reference, chaotic = os.path.join(root, "reference"), os.path.join(root, "chaotic")
  for d in (reference, chaotic):
    shutil.rmtree(d, ignore_errors=True)
  rng = random.Random(flags.FLAGS.seed)
  start = time.time()
  proc, _ = _launch(reference)
  assert proc.wait() == 0, "the uninterrupted run failed"
  reference_seconds = time.time() - start
  start = time.time()
  for i in range(flags.FLAGS.kills):
    print(f"kill {i + 1:2d}: {_interrupt(chaotic, rng)}", flush=True)
  proc, lines = _launch(chaotic)
  code = proc.wait()
  tail = list(lines.queue)[-5:]
  if code != 0:
    print("the final relaunch failed:\n" + "".join(tail))
    return 1
  chaos_seconds = time.time() - start
  load = lambda d: jax.tree_util.tree_map(np.asarray, wav2vec_jax.load_pretrained(d)[1]["params"])  # noqa: E731
  same = all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(np.array_equal, load(chaotic), load(reference))))
  print(f"{flags.FLAGS.script}: {flags.FLAGS.kills} kills (seed {flags.FLAGS.seed}), {flags.FLAGS.total_steps} "
        f"steps; uninterrupted {reference_seconds:.0f} s, interrupted {chaos_seconds:.0f} s; final parameters "
        f"{'bit-identical' if same else 'DIFFER'}")
  return 0 if same else 1


if __name__ == "__main__":
  app.run(main)
