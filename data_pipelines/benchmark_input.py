"""Input pipeline benchmark: throughput (audio-seconds per second), padding waste and distinct batch shapes.

    python -m data_pipelines.benchmark_input                       # the generated default corpus, train split
    python -m data_pipelines.benchmark_input --folder DIR --split train-clean-100 --mode finetune --epochs 2

Runs the real tf.data pipeline over whole epochs on this machine's CPU and prints one summary (and a JSON line).
Compare the throughput with the train step's consumption (audio seconds per step × steps per second); on a shared
machine the per-CPU-second figure is the steadier one. The first batch (TensorFlow start-up) is timed apart.
"""

import argparse
import dataclasses
import json
import os
import resource
import time
from typing import Sequence

import numpy as np

from data_pipelines import batching, pipeline, sources
from data_pipelines.vocab import Vocab


def default_folder() -> str:
  """The generated default corpus (built on first use), if `data_pipelines.corpus` is available."""
  try:
    from data_pipelines import corpus  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise SystemExit(f"no --folder given and the generated corpus is unavailable ({e})") from e
  return os.fspath(corpus.ensure_default_corpus())


def _cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def run(folder: str, split: str | None, config: pipeline.InputConfig, epochs: int = 1,
        max_batches: int | None = None) -> dict:
  """Iterates the pipeline and measures it.

  Args:
    folder: LibriSpeech-layout folder.
    split: its sub-folder to read (None: the folder itself).
    config: the pipeline settings (`num_epochs` is overridden by `epochs`).
    epochs: full passes to time.
    max_batches: stop earlier after this many batches.

  Returns:
    Measurements: `audio_seconds_per_second`, `padding_waste`, `cropped_share`, `distinct_shapes`, ...
  """
  t0 = time.perf_counter()
  index = sources.librispeech_folder(folder, split)
  vocab = None
  if config.mode == "finetune":
    vocab = Vocab.from_transcripts(t for t in index.transcripts if t is not None)
  it = pipeline.make_iterator(index, dataclasses.replace(config, num_epochs=epochs), vocab=vocab)
  t_index = time.perf_counter() - t0
  first = next(it)  # includes TensorFlow start-up and the first decode; timed separately
  t_first = time.perf_counter() - t0 - t_index
  shapes = {first["waveform"].shape}
  n, cpu0, start = 1, _cpu_seconds(), time.perf_counter()
  before = it.counters()
  per_epoch = {}  # epoch -> [audio seconds, seconds]
  last = start
  for batch in it:
    epoch = it.get_state()["epoch"] if it.get_state()["step"] else it.get_state()["epoch"] - 1
    now = time.perf_counter()
    acc = per_epoch.setdefault(epoch, [0.0, 0.0])
    acc[0] += np.count_nonzero(batch["attention_mask"]) / config.sample_rate
    acc[1] += now - last
    last = now
    shapes.add(batch["waveform"].shape)
    n += 1
    if max_batches is not None and n >= max_batches:
      break
  elapsed, cpu = time.perf_counter() - start, _cpu_seconds() - cpu0
  c = it.counters()
  audio = (c["input/audio_samples"] - before["input/audio_samples"]) / config.sample_rate
  total = c["input/audio_samples"] + c["input/padded_samples"]
  return {
      "folder": folder, "split": split, "mode": config.mode, "utterances": len(it.data.index),
      "hours": float(it.data.num_samples.sum() / config.sample_rate / 3600), "index_seconds": t_index,
      "first_batch_seconds": t_first, "batches": n, "timed_seconds": elapsed, "audio_seconds": audio,
      "audio_seconds_per_second": audio / max(elapsed, 1e-9), "audio_seconds_per_cpu_second": audio / max(cpu, 1e-9),
      "per_epoch_audio_seconds_per_second": {e: a / max(t, 1e-9) for e, (a, t) in sorted(per_epoch.items())},
      "padding_waste": c["input/padded_samples"] / max(total, 1),
      "cropped_share": batching.waste(it.spec, it.data.num_samples)["cropped"],
      "configured_shapes": [list(s) for s in it.shapes], "distinct_shapes": len(shapes),
      "counters": c,
  }


def main(argv: Sequence[str] | None = None) -> None:
  """Command line entry point."""
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--folder", default=None, help="LibriSpeech-layout folder (default: the generated corpus)")
  p.add_argument("--split", default="train", help="sub-folder to read ('' for the folder itself)")
  p.add_argument("--mode", default="pretrain", choices=("pretrain", "finetune"))
  p.add_argument("--batch_budget", type=int, default=1_400_000, help="samples per batch")
  p.add_argument("--num_buckets", type=int, default=pipeline.InputConfig.num_buckets)
  p.add_argument("--min_sample_size", type=int, default=16_000)
  p.add_argument("--max_sample_size", type=int, default=250_000)
  p.add_argument("--normalize", action="store_true")
  p.add_argument("--epochs", type=int, default=1)
  p.add_argument("--cache_mb", type=int, default=0, help="keep decoded audio in memory up to this many MB")
  p.add_argument("--max_batches", type=int, default=None)
  args = p.parse_args(argv)
  folder = args.folder or default_folder()
  config = pipeline.InputConfig(mode=args.mode, batch_budget=args.batch_budget, num_buckets=args.num_buckets,
                                min_sample_size=args.min_sample_size, max_sample_size=args.max_sample_size,
                                normalize=args.normalize, cache_audio_bytes=args.cache_mb << 20)
  r = run(folder, args.split or None, config, epochs=args.epochs, max_batches=args.max_batches)
  print(f"corpus: {r['folder']} [{r['split']}], {r['utterances']} utterances, {r['hours']:.2f} h; mode {r['mode']}")
  print(f"index: {r['index_seconds']:.2f} s; first batch (TF start-up): {r['first_batch_seconds']:.2f} s")
  print(f"throughput: {r['audio_seconds']:.0f} audio-s in {r['timed_seconds']:.2f} s over {r['batches']} batches "
        f"= {r['audio_seconds_per_second']:.0f} audio-seconds/second "
        f"({r['audio_seconds_per_cpu_second']:.0f} per CPU-second of this process)")
  print("per epoch (audio-seconds/second): " + ", ".join(
      f"{e}: {v:.0f}" for e, v in r["per_epoch_audio_seconds_per_second"].items()))
  print(f"padding waste: {100 * r['padding_waste']:.2f}% of samples; cropped to bucket length: "
        f"{100 * r['cropped_share']:.2f}% of usable audio")
  print(f"distinct batch shapes: {r['distinct_shapes']} seen, {len(r['configured_shapes'])} configured "
        f"{r['configured_shapes']}")
  print(json.dumps({k: v for k, v in r.items() if k != "counters"} | {"counters": r["counters"]}))


if __name__ == "__main__":
  main()
