r"""Overlays the training curves of one or more runs in one PNG (matplotlib), from their `metrics.jsonl`.

  python experiments/plot.py /tmp/wav2vec_jax/pretrain gs://bucket/base --out=/tmp/compare.png
  python experiments/plot.py /tmp/a /tmp/b --labels=alpha_1.0,alpha_0.5 --out=/tmp/alpha.png

Every run also draws its own `<workdir>/curves.png` while it trains (config.plots).
"""

import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from wav2vec_jax.training import plots  # noqa: E402  pylint: disable=g-import-not-at-top

flags.DEFINE_string("out", "curves.png", "The PNG to write (local or gs://).")
flags.DEFINE_list("labels", [], "A label per workdir (default: the workdir paths).")
flags.DEFINE_string("title", "", "The figure's title.")


def main(argv):
  workdirs = argv[1:]
  f = flags.FLAGS
  if not workdirs:
    raise app.UsageError("give one or more workdirs: python experiments/plot.py WORKDIR [WORKDIR ...]")
  if f.labels and len(f.labels) != len(workdirs):
    raise app.UsageError(f"--labels has {len(f.labels)} names for {len(workdirs)} workdirs")
  runs = {}
  for label, workdir in zip(f.labels or workdirs, workdirs):
    rows = plots.read_metrics(workdir)
    if not rows:
      raise app.UsageError(f"{workdir}: no metrics.jsonl (is it a training workdir?)")
    runs[label] = rows
  path = plots.plot_runs(runs, f.out, title=f.title)
  print(path if path else "nothing to plot: the runs logged no known metric")


if __name__ == "__main__":
  app.run(main)
