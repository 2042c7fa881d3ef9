"""The package layers import in one direction: `data_pipelines` is JAX-free and never imports `wav2vec_jax`."""

import ast
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_BLOCKED = ("jax", "jaxlib", "flax", "optax", "orbax", "wav2vec_jax")

_PROBE = f"""
import importlib, pkgutil, sys
class Block:
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in {_BLOCKED!r}:
      raise ImportError("blocked by the layers contract: " + name)
sys.meta_path.insert(0, Block())
import data_pipelines
names = [m.name for m in pkgutil.walk_packages(data_pipelines.__path__, "data_pipelines.")]
for name in names:
  importlib.import_module(name)
print(len(names))
"""


def test_data_pipelines_imports_without_jax_flax_or_wav2vec_jax():
  # Every module of data_pipelines (corpus generation, TFDS builders and the benchmark included) imports with
  # jax, flax, optax, orbax and wav2vec_jax blocked: the data side stands alone, as seqio does for t5x.
  out = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO, capture_output=True, text=True, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  assert int(out.stdout.strip().splitlines()[-1]) >= 15


def _imports(path):
  tree = ast.parse(open(path, encoding="utf-8").read())
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      yield node.module
      yield from (f"{node.module}.{alias.name}" for alias in node.names)


def test_models_import_nothing_from_training_inference_or_interop():
  upper = ("wav2vec_jax.training", "wav2vec_jax.inference", "wav2vec_jax.tasks", "wav2vec_jax.interop",
           "data_pipelines")
  folder = os.path.join(REPO, "wav2vec_jax", "models")
  bad = {name: [m for m in _imports(os.path.join(folder, name)) if m.startswith(upper)]
         for name in os.listdir(folder) if name.endswith(".py")}
  assert not any(bad.values()), bad
