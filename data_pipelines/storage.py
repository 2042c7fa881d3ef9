"""One path abstraction for every file the framework reads or writes, local or in object storage (`gs://`).

`Path` is `etils.epath.Path` (what Orbax uses too). For `gs://` it runs on gcsfs rather than `tf.io.gfile`, so
the same code serves a pod's bucket and the local GCS emulator the tests start (TensorFlow's own GCS client has
no emulator endpoint). tf.data still reads `gs://` natively where it reads files itself.

Object stores differ from disks in ways callers must respect: no append (rewrite the object), no recursive `**`
glob, directories exist only through the objects under them, and a single object write is atomic.
"""

import contextlib
import os
import shutil
import tempfile

# Before etils first resolves a gs:// path (it caches the backend): gs:// through gcsfs, not tf.io.gfile; and no
# gRPC bucket-layout probe from gcsfs (it waits 60 s per call where the service does not answer it).
os.environ.setdefault("EPATH_USE_TF", "false")
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

from etils import epath  # noqa: E402  pylint: disable=g-import-not-at-top

Path = epath.Path


def is_remote(path) -> bool:
  """True for URLs such as `gs://bucket/dir` (anything with a scheme)."""
  return "://" in os.fspath(path)


def absolute(path) -> str:
  """An absolute local path, or the URL unchanged."""
  path = os.fspath(path)
  return path if is_remote(path) else os.path.abspath(path)


def join(*parts) -> str:
  """Joins path parts with "/" (local paths and URLs alike)."""
  return os.fspath(Path(*[os.fspath(p) for p in parts]))


def write_text(path, text: str) -> None:
  """Writes a whole file so that readers never see half of it (a local temp file renamed; an object write)."""
  path = Path(path)
  if is_remote(path):
    path.write_text(text)
    return
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  tmp.write_text(text)
  os.replace(tmp, path)


@contextlib.contextmanager
def local_file(path):
  """A local filesystem path holding the file at `path` (a download for remote ones, removed afterwards).

  For readers that need a real file (zip archives, memory maps).
  """
  if not is_remote(path):
    yield os.fspath(path)
    return
  directory = tempfile.mkdtemp(prefix="wav2vec_jax_")
  try:
    local = os.path.join(directory, Path(path).name)
    with Path(path).open("rb") as src, open(local, "wb") as dst:  # noqa: the local side of a download
      shutil.copyfileobj(src, dst, 16 << 20)
    yield local
  finally:
    shutil.rmtree(directory, ignore_errors=True)


def read_range(path, start: int, length: int) -> bytes:
  """Bytes [start, start + length) of a file: one ranged read (a single ranged GET for `gs://` objects)."""
  if not is_remote(path):
    with open(os.fspath(path), "rb") as f:  # noqa: the local branch of the abstraction
      f.seek(start)
      return f.read(length)
  import fsspec  # pylint: disable=g-import-not-at-top
  fs, inner = fsspec.core.url_to_fs(os.fspath(path))
  return fs.cat_file(inner, start=start, end=start + length)


def size(path) -> int:
  """A file's size in bytes."""
  return Path(path).stat().length
