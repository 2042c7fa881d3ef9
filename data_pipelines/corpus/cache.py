"""The cached default corpus: generated once per content version, then reused.

Cache root: `$WAV2VEC_JAX_DATA/corpus` when that variable is set, else `$XDG_CACHE_HOME/wav2vec_jax/corpus` (by
default `~/.cache/wav2vec_jax/corpus`). A corpus lives in `ROOT/<key>`, where the key hashes the config, the
generator version and the versions of the packages that shape its content; so a changed config or an upgraded voice
or word list gives a new folder instead of a stale corpus. Folders appear atomically (`build.generate_corpus`), and a
file lock keeps concurrent callers (pytest-xdist workers, several hosts on a shared disk) from generating twice.
"""

import fcntl
import hashlib
import json
import logging
import os
import pathlib
import shutil
import time

from data_pipelines.corpus import build

ENV_VAR = "WAV2VEC_JAX_DATA"


def cache_root() -> pathlib.Path:
  """The folder that holds cached corpora (see the module docstring)."""
  if os.environ.get(ENV_VAR):
    return pathlib.Path(os.environ[ENV_VAR]).expanduser() / "corpus"
  base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(base).expanduser() / "wav2vec_jax" / "corpus"


def cache_key(config: build.CorpusConfig) -> str:
  """A short hash of everything the corpus content depends on."""
  content = {"generator_version": build.GENERATOR_VERSION, "config": config.to_dict(),
             "versions": build.package_versions()}
  digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]
  return f"v{build.GENERATOR_VERSION}-{digest}"


def _is_complete(path):
  return (path / build.SUMMARY_FILE).is_file()


def ensure_corpus(config: build.CorpusConfig, cache_dir: str | os.PathLike | None = None,
                  workers: int = 2) -> pathlib.Path:
  """Returns the cached corpus for `config`, generating it first if needed.

  Args:
    config: what the corpus contains.
    cache_dir: cache root; defaults to `cache_root()`.
    workers: worker processes if it has to be generated.

  Returns:
    The corpus folder (LibriSpeech layout, see `build`).
  """
  root = pathlib.Path(cache_dir) if cache_dir is not None else cache_root()
  path = root / cache_key(config)
  if _is_complete(path):
    return path
  root.mkdir(parents=True, exist_ok=True)
  with open(root / f".{path.name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # Released when the file closes, also if this process dies.
    if _is_complete(path):  # Another process generated it while this one waited.
      return path
    if path.exists():  # Not produced by generate_corpus (which renames only complete folders): do not trust it.
      raise RuntimeError(f"{path} exists but holds no {build.SUMMARY_FILE}; remove it to regenerate")
    for stale in root.glob(f".{path.name}.tmp-*"):  # Left by a killed generator; the lock says none is running.
      shutil.rmtree(stale, ignore_errors=True)
    start = time.perf_counter()
    summary = build.generate_corpus(path, config, workers=workers)
    logging.info("Generated %.2f h of speech in %s in %.1f s", summary["hours"], path, time.perf_counter() - start)
  return path


def ensure_default_corpus(cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
  """Returns the project's default corpus (about 1.5 h, 8 languages), generating it on first use (~3.5 min on 2
  cores).

  Args:
    cache_dir: cache root; defaults to `cache_root()` (`$WAV2VEC_JAX_DATA/corpus` or `~/.cache/wav2vec_jax/corpus`).

  Returns:
    The corpus folder: `train/`, `dev/`, `test/` in LibriSpeech layout, `SPEAKERS.txt`, `summary.json`.
  """
  return ensure_corpus(build.CorpusConfig(), cache_dir)
