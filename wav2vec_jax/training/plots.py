"""PNG plots of training curves from `metrics.jsonl`: one run (`<workdir>/curves.png`, redrawn by the loop at every
validation and at the end) or several overlaid (`experiments/plot.py`).

Panels are chosen by which metrics the runs logged: pre-training shows the loss terms, accuracy, codebook
perplexity and the Gumbel temperature; fine-tuning the CTC loss and validation WER/CER; both show the learning
rate and the gradient norm.
"""

import io
import json
import os
from data_pipelines import storage

CURVES_FILE = "curves.png"
# (name, title, [(metric key, label)], log y axis). A panel is drawn when any run logged one of its keys.
PANELS = (
    ("loss", "loss", [("loss/bits", "total (bits)"), ("loss/contrastive", "contrastive"),
                      ("loss/diversity", "diversity"), ("loss/feature_penalty", "feature penalty"),
                      ("loss/ctc", "CTC (train)"), ("val/loss_ctc", "CTC (validation)")], True),
    ("accuracy", "contrastive accuracy", [("accuracy", "accuracy")], False),
    ("codebook", "codebook perplexity", [("codebook/code_perplexity", "code"),
                                         ("codebook/prob_perplexity", "soft")], False),
    ("error_rates", "validation error rates", [("val/wer", "WER"), ("val/cer", "CER")], False),
    ("learning_rate", "learning rate", [("learning_rate", "learning rate")], False),
    ("gumbel_temperature", "Gumbel temperature", [("gumbel_temperature", "temperature")], False),
    ("grad_norm", "gradient norm", [("grad_norm", "grad norm")], True),
)


def read_metrics(workdir: str) -> list[dict]:
  """The rows of `<workdir>/metrics.jsonl` (local or gs://), in order; [] when there is none."""
  path = storage.Path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def panel_curves(runs: dict[str, list[dict]], panels=PANELS) -> list[tuple[str, list, bool]]:
  """The panels some run has values for: [(title, [(curve label, [(step, value)])], log y)]. Rows' null (non-finite)
  values are left out."""
  drawn = []
  for _, title, keys, log_y in panels:
    curves = []
    for run, rows in runs.items():
      for key, label in keys:
        points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        if points:
          curves.append((label if len(runs) == 1 else f"{run}: {label}", points))
    if curves:
      drawn.append((title, curves, log_y))
  return drawn


def plot_runs(runs: dict[str, list[dict]], path: str, *, panels=PANELS, title: str = "") -> str | None:
  """Writes one PNG with a panel per metric group, every run's curves overlaid against the update step.

  Args:
    runs: run label -> its metric rows (`read_metrics`); one run labels its curves by metric, several by run.
    path: the PNG to write (local or gs://); its folder is created if missing.
    panels: (name, title, [(key, label)], log y) tuples; panels no run has a value for are left out.
    title: the figure's title.

  Returns:
    `path`, or None when no run has any value to plot.
  """
  drawn = panel_curves(runs, panels)
  if not drawn:
    return None
  # A bare Figure (no pyplot): renders to a file without touching the process's backend (a notebook's inline
  # plots keep working) and without a display.
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  columns = min(3, len(drawn))
  rows_n = -(-len(drawn) // columns)
  fig = Figure(figsize=(4.5 * columns, 3.2 * rows_n), dpi=90)
  axes = fig.subplots(rows_n, columns, squeeze=False)
  for ax, (panel_title, curves, log_y) in zip(axes.flat, drawn):
    for label, points in curves:
      steps, values = zip(*points)
      ax.plot(steps, values, label=label, marker="o" if len(points) < 12 else None, markersize=3)
    ax.set_title(panel_title, fontsize=10)
    ax.set_xlabel("update", fontsize=8)
    ax.tick_params(labelsize=7)
    if log_y and all(v > 0 for _, points in curves for _, v in points):
      ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  for ax in list(axes.flat)[len(drawn):]:
    ax.axis("off")
  if title:
    fig.suptitle(title, fontsize=11)
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png")
  storage.Path(path).parent.mkdir(parents=True, exist_ok=True)
  storage.Path(path).write_bytes(buffer.getvalue())
  return path


def plot_workdir(workdir: str) -> str | None:
  """Plots one run's curves into `<workdir>/curves.png`; returns its path (None before the first metrics row)."""
  return plot_runs({"run": read_metrics(workdir)}, storage.join(workdir, CURVES_FILE), title=os.fspath(workdir))
