r"""Input pipeline throughput against CPU cores: audio seconds per second that one host's tf.data pipeline delivers.

  python experiments/benchmark_input.py                      # 1 core, then every core, in one command
  python experiments/benchmark_input.py --cores=1,2,4,8,16 --batches=40
  python experiments/benchmark_input.py --cores=1,2 --decode_processes=0,-1 --gil_seconds=8   # threads vs processes

For each entry of --cores it launches itself pinned to that many cores (`taskset`), reads --batches pre-training
batches of the generated corpus (FLAC decode, normalisation, cropping into length buckets: the path a BASE run
takes) after --warmup batches, and prints one JSON line: audio seconds per second, batches per second, and the speed-up
over the first entry. With several --decode_processes entries, each core count runs each of them in turn (0: decode
in the pipeline's threads; -1: one worker process per core; see `data_pipelines/decode_pool.py`). With the host
model: a TPU v4 chip at 50% MFU consumes ~3,000 audio-s/s of BASE pre-training (~43 GFLOP per audio second,
275 TFLOP/s bf16), so a host's cores must deliver that per chip.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from experiments import host_memory as host_memory_lib  # noqa: E402  pylint: disable=wrong-import-position

flags.DEFINE_list("cores", ["1", str(os.cpu_count())], "Core counts to run with, in order (the first is the base).")
flags.DEFINE_integer("batches", 100, "Timed batches (prefetched batches count too: keep it >> the prefetch of 4).")
flags.DEFINE_integer("warmup", 5, "Untimed batches first (pipeline start, tf.data warm-up).")
flags.DEFINE_integer("batch_budget", 1_400_000, "Samples per batch (BASE: 1.4M per GPU).")
flags.DEFINE_list("decode_processes", ["0"], "InputConfig.decode_processes values to run at each core count (0: "
                  "threads; N: worker processes; -1: one per core).")
flags.DEFINE_integer("gil_seconds", 0, "Also sample the child's threads this long with py-spy --gil (needs "
                     "`pip install py-spy`; the child must run longer): the share of wall time some thread holds the "
                     "GIL, and the throughput at which one process's GIL would be busy all the time.")
flags.DEFINE_bool("child", False, "Internal: measure in this process.")
flags.DEFINE_integer("decode", 0, "Internal: the child's decode_processes.")

TPU_V4_AUDIO_S_PER_S = 3_000  # one chip of BASE pre-training at 50% MFU (README, Speed)


def measure(f) -> dict:
  """Audio seconds per second of `f.batches` pre-training batches from the default corpus's train split."""
  from data_pipelines import corpus, pipeline, sources  # pylint: disable=g-import-not-at-top
  index = sources.librispeech_folder(str(corpus.ensure_default_corpus()), "train")
  config = {"mode": "pretrain", "batch_budget": f.batch_budget, "min_sample_size": 16_000, "normalize": True,
            "max_sample_size": 250_000, "num_buckets": 4, "decode_processes": f.decode}
  it = pipeline.make_iterator(index, config)
  batches = iter(it)
  for _ in range(f.warmup):
    next(batches)
  print("warm", flush=True)  # the parent starts sampling the GIL now
  samples, start = 0, time.perf_counter()
  for _ in range(f.batches):
    batch = next(batches)
    samples += int(batch["attention_mask"].sum())
  seconds = time.perf_counter() - start
  it.close()  # stops the decode workers before exit
  return {"cores": pipeline.usable_cores(cap=os.cpu_count() or 1), "decode_processes": it.decode_processes,
          "audio_s_per_s": round(samples / 16_000 / seconds, 1),
          "batches_per_s": round(f.batches / seconds, 2)}


def gil_busy(pid: int, seconds: int, rate: int = 200) -> float | None:
  """Share of `seconds` of wall time in which some thread of process `pid` held the GIL (py-spy's `--gil`
  samples), or None without py-spy or when sampling failed."""
  if not shutil.which("py-spy"):
    return None
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "gil.txt")
    sampled = subprocess.run(["py-spy", "record", "--pid", str(pid), "--gil", "--rate", str(rate), "--duration",
                              str(seconds), "--format", "raw", "--output", out], capture_output=True, check=False)
    if sampled.returncode != 0 or not os.path.exists(out):
      return None
    with open(out) as fh:
      held = sum(int(line.rsplit(" ", 1)[1]) for line in fh if line.strip())
  return held / (rate * seconds)


def main(argv):
  del argv
  f = flags.FLAGS
  if f.child:
    applied = host_memory_lib.apply_from_flags()  # first, before the pipeline allocates
    print(json.dumps({**measure(f), "host_memory": applied}), flush=True)
    return
  base = None
  for cores, decode in [(c, d) for c in f.cores for d in f.decode_processes]:
    command = ["taskset", "-c", f"0-{int(cores) - 1}", sys.executable, os.path.abspath(__file__), "--child",
               f"--batches={f.batches}", f"--warmup={f.warmup}", f"--batch_budget={f.batch_budget}",
               f"--decode={decode}"]
    command += [f"--host_memory={f.host_memory}"]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    while child.stdout.readline().strip() != "warm":
      if child.poll() is not None:
        raise RuntimeError(f"the measuring process ended with status {child.returncode} before warming up")
    busy = gil_busy(child.pid, f.gil_seconds) if f.gil_seconds > 0 else None
    if f.gil_seconds > 0 and busy is None:
      print("GIL not sampled: py-spy is missing or could not attach (pip install py-spy; ptrace allowed?)",
            file=sys.stderr)
    out, _ = child.communicate()
    if child.returncode != 0:
      raise RuntimeError(f"the measuring process ended with status {child.returncode}")
    row = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    if busy is not None:  # one process's decoding cannot go faster than its GIL allows
      row.update({"gil_busy": round(busy, 3), "gil_bound_audio_s_per_s": round(row["audio_s_per_s"] / busy)})
    base = base or row["audio_s_per_s"]
    row.update({"speedup": round(row["audio_s_per_s"] / base, 2),
                "cores_per_tpu_v4_chip": round(TPU_V4_AUDIO_S_PER_S / (row["audio_s_per_s"] / row["cores"]), 1)})
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
  app.run(main)
