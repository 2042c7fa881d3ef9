"""fairseq manifests: `SPLIT.tsv` (+ `SPLIT.ltr`, `SPLIT.wrd`, `dict.ltr.txt`), read and written.

The `.tsv` starts with the root folder, then one "RELATIVE_PATH<TAB>NUM_FRAMES" line per utterance
(`examples/wav2vec/wav2vec_manifest.py`); `.ltr` has the matching transcripts spelled letter by letter with `|`
after each word ("H I | Y O U |", `libri_labels.py`), `.wrd` the plain words. Reading one gives an `AudioIndex`, so
an existing fairseq data preparation works unchanged; writing them from a LibriSpeech-layout folder prepares data
for fairseq (and for this reader). Manifests, their root and the audio may be local or on `gs://`.

    python -m data_pipelines.manifest FOLDER DEST [--splits train,dev,test]
"""

import argparse
import os
from typing import Callable, Sequence

import numpy as np
from absl import logging

from data_pipelines import audio as audio_lib
from data_pipelines import sources, storage
from data_pipelines.sources import AudioIndex, FileReader
from data_pipelines.vocab import Vocab, from_ltr, to_ltr


def read_manifest(
    tsv_path: str | os.PathLike,
    *,
    labels: str | None = "auto",
    language: str | Callable[[str], str] = sources.DEFAULT_LANGUAGE,
    sample_rate: int = audio_lib.TARGET_SAMPLE_RATE,
    read_headers: bool = False,
) -> AudioIndex:
  """Reads a fairseq manifest.

  Args:
    tsv_path: the `.tsv` file (local or `gs://`; its root line may be either too).
    labels: "ltr" or "wrd" (the file next to the `.tsv` with that extension), None for unlabelled, or "auto":
      `.wrd` if present, else `.ltr`, else unlabelled.
    language: a language for all utterances, or a function utterance id → language.
    sample_rate: the rate the frame counts are at (fairseq manifests are 16 kHz), unless `read_headers`.
    read_headers: read every file's header for frames, rate and channels instead of trusting the `.tsv` (slower;
      catches missing and unreadable files up front).

  Returns:
    The index, in manifest order; ids are file names without extension.

  Raises:
    ValueError: a malformed line (named by file and line number) or label files of another length.
  """
  tsv_path = os.fspath(tsv_path)
  lines = sources.read_lines(tsv_path)
  if not lines:
    raise ValueError(f"{tsv_path}: empty manifest (expected the root folder on line 1)")
  root = lines[0].strip()
  paths, frames = [], []
  for lineno, line in enumerate(lines[1:], 2):
    if not line.strip():
      continue
    fields = line.split("\t")
    if len(fields) != 2 or not fields[1].strip().isdigit():
      raise ValueError(f"{tsv_path}:{lineno}: expected 'PATH<TAB>NUM_FRAMES', got {line!r}")
    paths.append(os.path.join(root, fields[0]))  # string joining; keeps a gs:// root's "//"
    frames.append(int(fields[1]))
  texts = None
  stem = os.path.splitext(tsv_path)[0]
  if labels == "auto":
    labels = next((ext for ext in ("wrd", "ltr") if storage.Path(f"{stem}.{ext}").exists()), None)
  if labels is not None:
    if labels not in ("ltr", "wrd"):
      raise ValueError(f"labels must be 'ltr', 'wrd', 'auto' or None, got {labels!r}")
    texts = [t if labels == "wrd" else from_ltr(t) for t in sources.read_lines(f"{stem}.{labels}")]
    if len(texts) != len(paths):
      raise ValueError(f"{stem}.{labels} has {len(texts)} lines for {len(paths)} utterances in {tsv_path}")
  ids = [os.path.splitext(os.path.basename(p))[0] for p in paths]
  langs = [language(i) if callable(language) else language for i in ids]
  if read_headers:
    return sources.index_files(paths, ids=ids, transcripts=texts, languages=langs)
  n = len(paths)
  return AudioIndex(ids=tuple(ids), frames=np.asarray(frames, np.int64).reshape(n),
                    sample_rates=np.full(n, sample_rate, np.int64), channels=np.ones(n, np.int64),
                    transcripts=None if texts is None else tuple(texts), languages=tuple(langs),
                    reader=FileReader(tuple(paths)))


def _common_folder(paths: Sequence[str]) -> str:
  """The deepest folder holding every path (local paths or URLs of one bucket; `os.path.commonpath` would fold a
  URL's "//")."""
  common = []
  for names in zip(*(p.split("/")[:-1] for p in paths)):
    if len(set(names)) > 1:
      break
    common.append(names[0])
  return "/".join(common) or "/"


def _relative(path: str, root: str) -> str:
  """`path` relative to `root` ("../" allowed for local paths; a URL must lie under its root)."""
  if not storage.is_remote(path):
    return os.path.relpath(path, root)
  if not path.startswith(root.rstrip("/") + "/"):
    raise ValueError(f"{path} is not under the manifest root {root}: pass root= a folder holding every file")
  return path[len(root.rstrip("/")) + 1:]


def write_manifest(index: AudioIndex, dest_dir: str | os.PathLike, split: str, *, root: str | None = None,
                   labels: bool = True) -> list[str]:
  """Writes `dest_dir/SPLIT.tsv` (and `.ltr`/`.wrd` when the index has transcripts).

  Args:
    index: a file-based index (folder or manifest source); items with listing errors are left out (logged).
    dest_dir: output folder (created), local or `gs://`.
    split: file stem, e.g. "train" or "valid".
    root: the `.tsv` root line (default: the files' common folder).
    labels: write `.ltr`/`.wrd` if the index has transcripts (utterances without one are left out).

  Returns:
    The paths written.
  """
  if not isinstance(index.reader, FileReader):
    raise ValueError("write_manifest needs a file-based index (folder or manifest source)")
  labels = labels and index.transcripts is not None
  keep = [i for i in range(len(index))
          if i not in index.errors and index.frames[i] >= 0 and (not labels or index.transcripts[i] is not None)]
  if len(keep) < len(index):
    logging.warning("write_manifest %s: leaving out %d unreadable or unlabelled files", split, len(index) - len(keep))
  paths = [storage.absolute(index.reader.paths[i]) for i in keep]
  root = storage.absolute(root) if root else _common_folder(paths) if paths else "."
  storage.Path(dest_dir).mkdir(parents=True, exist_ok=True)
  stem = storage.join(dest_dir, split)
  storage.write_text(f"{stem}.tsv", "".join([root + "\n"] + [f"{_relative(p, root)}\t{index.frames[i]}\n"
                                                            for p, i in zip(paths, keep)]))
  written = [f"{stem}.tsv"]
  if labels:
    for ext, fmt in (("ltr", to_ltr), ("wrd", lambda t: " ".join(t.split()))):
      storage.write_text(f"{stem}.{ext}", "".join(fmt(index.transcripts[i]) + "\n" for i in keep))
      written.append(f"{stem}.{ext}")
  return written


def write_folder_manifests(folder: str | os.PathLike, dest_dir: str | os.PathLike,
                           splits: Sequence[str] | None = None, *, dict_split: str | None = None) -> list[str]:
  """Writes a manifest per split of a LibriSpeech-layout folder, plus `dict.ltr.txt`.

  Args:
    folder: the folder whose sub-folders are splits (e.g. train/dev/test), local or `gs://`.
    dest_dir: output folder, local or `gs://`.
    splits: split names (default: every sub-folder in LibriSpeech layout).
    dict_split: the split whose transcripts define `dict.ltr.txt` (default: "train" if present, else the first).

  Returns:
    The paths written.
  """
  folder = storage.absolute(folder)
  splits = list(splits or sources.find_splits(folder))
  dict_split = dict_split or ("train" if "train" in splits else splits[0])
  written = []
  for split in splits:
    index = sources.librispeech_folder(folder, split)
    written += write_manifest(index, dest_dir, split, root=folder)
    if split == dict_split and index.transcripts is not None:
      vocab = Vocab.from_transcripts(t for t in index.transcripts if t is not None)
      vocab.save_fairseq(storage.join(dest_dir, "dict.ltr.txt"))
      written.append(storage.join(dest_dir, "dict.ltr.txt"))
  return written


def main(argv: Sequence[str] | None = None) -> None:
  """Command line: write fairseq manifests for a LibriSpeech-layout folder."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("folder", help="LibriSpeech-layout folder with one sub-folder per split")
  parser.add_argument("dest", help="output folder for SPLIT.tsv/.ltr/.wrd and dict.ltr.txt")
  parser.add_argument("--splits", default=None, help="comma-separated splits (default: all sub-folders)")
  args = parser.parse_args(argv)
  for path in write_folder_manifests(args.folder, args.dest, args.splits.split(",") if args.splits else None):
    print(path)


if __name__ == "__main__":
  main()
