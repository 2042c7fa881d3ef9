"""`experiments/notebooks/quickstart.ipynb` runs top to bottom (nbclient, a fresh kernel on CPU) and shows what it
promises: a model's features, falling losses, a transcript and a word alignment, and two figures."""

import os

import nbclient
import nbformat
import pytest

import e2e  # tests/e2e.py

NOTEBOOK = os.path.join(e2e.REPO, "experiments", "notebooks", "quickstart.ipynb")


@pytest.mark.slow
def test_the_quickstart_notebook_runs_top_to_bottom(tmp_path):
  nb = nbformat.read(NOTEBOOK, as_version=4)
  env = dict(os.environ, XLA_FLAGS=e2e.xla_flags(), JAX_PLATFORMS="cpu", TMPDIR=str(tmp_path))
  nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
                          ).execute(env=env)
  text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
  images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
  assert "extract_features (1, " in text and "last_hidden_state (1, " in text, text[-3000:]
  assert "reference:" in text and "greedy:" in text and " s\n" in text, text[-3000:]  # transcript, word times
  assert images == 2, text[-3000:]  # the loss curves and the alignment over the waveform
  assert os.listdir(tmp_path)  # the runs wrote under the kernel's temporary folder, not the checkout
