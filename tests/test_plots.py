"""Training-curve plots: the panels follow the metrics a run logged, the loop draws `curves.png`, and
`experiments/plot.py` overlays runs."""

import json
import os
import subprocess
import sys

import e2e  # tests/e2e.py
from wav2vec_jax.training import plots

PRETRAIN = [{"step": s, "loss/bits": 5.0 / s, "loss/contrastive": 3.0, "accuracy": 0.1 * s, "learning_rate": 1e-3,
             "codebook/code_perplexity": 10.0 + s, "gumbel_temperature": 2.0, "grad_norm": 1.0} for s in (1, 2, 3)]
CTC = [{"step": s, "loss/ctc": 9.0 / s, "learning_rate": 1e-4, "grad_norm": None} for s in (1, 2, 3)] + [
    {"step": 3, "val/wer": 0.9, "val/cer": 0.5, "val/loss_ctc": 4.0}]


def _titles(runs):
  return [title for title, _, _ in plots.panel_curves(runs)]


def test_panels_follow_the_logged_metrics():
  assert _titles({"ft": CTC}) == ["loss", "validation error rates", "learning rate"]  # null grad norms: no panel
  assert _titles({"pt": PRETRAIN}) == ["loss", "contrastive accuracy", "codebook perplexity", "learning rate",
                                       "Gumbel temperature", "gradient norm"]
  (title, curves, log_y), = [p for p in plots.panel_curves({"a": PRETRAIN, "b": CTC}) if p[0] == "loss"]
  assert log_y and [label for label, _ in curves] == ["a: total (bits)", "a: contrastive", "b: CTC (train)",
                                                      "b: CTC (validation)"]
  assert curves[0][1] == [(1, 5.0), (2, 2.5), (3, 5.0 / 3)]
  assert plots.plot_runs({"empty": []}, "/nonexistent/never.png") is None


def test_plot_entry_point_overlays_runs(tmp_path):
  for name, rows in (("a", PRETRAIN), ("b", CTC)):
    (tmp_path / name).mkdir()
    (tmp_path / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  out = tmp_path / "both.png"
  done = subprocess.run([sys.executable, os.path.join(e2e.REPO, "experiments", "plot.py"), str(tmp_path / "a"),
                         str(tmp_path / "b"), "--labels=pt,ft", f"--out={out}"], capture_output=True, text=True,
                        check=False, cwd=e2e.REPO)
  assert done.returncode == 0, done.stderr[-2000:]
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
  missing = subprocess.run([sys.executable, os.path.join(e2e.REPO, "experiments", "plot.py"), str(tmp_path)],
                           capture_output=True, text=True, check=False, cwd=e2e.REPO)
  assert missing.returncode != 0 and "no metrics.jsonl" in missing.stderr
