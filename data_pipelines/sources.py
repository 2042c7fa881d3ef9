"""LibriSpeech-layout folders (`SPLIT/SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac` + `.trans.txt`) as `AudioIndex`es.

The index types live in `audio_index` and are re-exported here, so `sources.AudioIndex`, `sources.concat` and
`sources.index_files` are the one place callers import from. Folders may be local or `gs://` URLs: each split is
listed with one glob (on GCS one listing request per 1000 objects, not one per chapter).
"""

import concurrent.futures
import io
import os
from typing import Callable, Sequence

import numpy as np
from absl import logging

from data_pipelines import storage
from data_pipelines.audio_index import (DEFAULT_LANGUAGE, AudioIndex, ConcatReader, FileReader, Reader, concat,
                                        index_files, window_reader)
from data_pipelines.errors import AudioInputError

__all__ = ["AUDIO_EXTENSIONS", "DEFAULT_LANGUAGE", "AudioIndex", "ConcatReader", "FileReader", "Reader", "concat",
           "find_splits", "index_files", "librispeech_folder", "read_lines", "read_transcripts", "speaker_languages",
           "window_reader"]

AUDIO_EXTENSIONS = (".flac", ".wav", ".ogg", ".mp3")


def find_splits(folder: str | os.PathLike) -> list[str]:
  """Sub-folders of `folder` in LibriSpeech layout (SPLIT/SPEAKER/CHAPTER/*.trans.txt), sorted."""
  return sorted(d.name for d in storage.Path(folder).iterdir()
                if next(iter(d.glob("*/*/*.trans.txt")), None) is not None)


def read_lines(path: str | os.PathLike) -> list[str]:
  """The lines of a UTF-8 text file (local or `gs://`) without their line ends, as iterating `open(path)` gives."""
  text = storage.Path(path).read_bytes().decode("utf-8")
  return [line.rstrip("\n") for line in io.StringIO(text, newline=None)]


def read_transcripts(path: str) -> dict[str, str]:
  """Reads a LibriSpeech `SPEAKER-CHAPTER.trans.txt`: lines "UTTERANCE-ID TEXT" → {id: text}."""
  out = {}
  for line in read_lines(path):
    key, _, text = line.strip().partition(" ")
    if key:
      out[key] = text.strip()
  return out


def speaker_languages(folder: str | os.PathLike) -> dict[str, str]:
  """Speaker → language from a `SPEAKERS.txt` (or `.TXT`) with a LANG column, in `folder` or its parent.

  The header is the last ";"-comment line with "|"-separated column names (";ID |LANG|..."), as in LibriSpeech's
  SPEAKERS.TXT and the generated corpus. Returns {} when there is no such file or no LANG column.
  """
  folder = storage.Path(folder)
  for base in (folder, folder.parent):
    for name in ("SPEAKERS.txt", "SPEAKERS.TXT"):
      path = base / name
      if not path.is_file():
        continue
      columns, out = None, {}
      for line in read_lines(path):
        fields = [x.strip() for x in line.lstrip(";").split("|")]
        if line.startswith(";"):
          if "|" in line:
            columns = [c.upper() for c in fields]
        elif columns and "LANG" in columns and len(fields) == len(columns):
          out[fields[columns.index("ID")]] = fields[columns.index("LANG")]
      if out:
        return out
  return {}


def _chapter_files(base: str) -> dict[str, list[str]]:
  """{chapter folder: names of its files} for `base/SPEAKER/CHAPTER/*`, hidden entries left out (as `glob`)."""
  out = {}
  for path in storage.Path(base).glob("*/*/*"):
    parts = os.fspath(path).rsplit("/", 3)
    if not any(p.startswith(".") for p in parts[1:]):  # gcsfs' "*" matches hidden names; the local glob does not
      out.setdefault(f"{parts[0]}/{parts[1]}/{parts[2]}", []).append(parts[3])
  return out


def _chapter_transcripts(chapter: str, names: list[str]) -> dict[str, str]:
  """{utterance id: text} of every `*.trans.txt` among a chapter folder's file `names`."""
  out = {}
  for name in sorted(names):
    if name.endswith(".trans.txt"):
      out.update(read_transcripts(f"{chapter}/{name}"))
  return out


def librispeech_folder(
    root: str | os.PathLike,
    split: str | Sequence[str] | None = None,
    *,
    language: str | Callable[[str], str] | None = None,
    num_threads: int = 16,
) -> AudioIndex:
  """Lists a LibriSpeech-layout folder: `root[/SPLIT]/SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac` + `.trans.txt`.

  Args:
    root: the folder (e.g. `LibriSpeech/` or a generated corpus), local or `gs://`.
    split: sub-folder(s) to read (e.g. "train-clean-100", or ["train", "dev"]); None reads `root` itself.
    language: a language name for all utterances, a function utterance id → language, or None: the speaker's
      LANG in a `SPEAKERS.txt` next to the splits (see `speaker_languages`), else "und".
    num_threads: threads reading headers and transcripts.

  Returns:
    The index, sorted by utterance id. Audio files without a transcript line get transcript None (an error only
    where labels are required, see `checks`); transcript lines without an audio file are logged as
    "missing_transcript" warnings, as they can never become data.
  """
  splits = [split] if isinstance(split, str) or split is None else list(split)
  paths, ids, texts = [], [], []
  orphans = []
  for sp in splits:
    base = storage.join(root, sp) if sp else os.fspath(storage.Path(root))
    if not storage.Path(base).is_dir():
      raise FileNotFoundError(f"no such LibriSpeech folder: {base}")
    chapters = sorted(_chapter_files(base).items())
    with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:  # one request each on object stores
      trans = list(pool.map(lambda item: _chapter_transcripts(*item), chapters))
    for (chapter, names), chapter_texts in zip(chapters, trans):
      found = {}
      for ext in AUDIO_EXTENSIONS:  # a .flac wins over a .wav of the same utterance
        for n in names:
          if n.endswith(ext):
            found.setdefault(n[: -len(ext)], f"{chapter}/{n}")
      for key in sorted(found):
        paths.append(found[key])
        ids.append(key)
        texts.append(chapter_texts.get(key))
      orphans += [f"{chapter}/{k}" for k in sorted(set(chapter_texts) - set(found))]
  order = np.argsort(ids, kind="stable")
  paths, ids, texts = [paths[i] for i in order], [ids[i] for i in order], [texts[i] for i in order]
  if language is None:
    by_speaker = speaker_languages(storage.join(root, splits[0]) if splits[0] else root)
    language = lambda key: by_speaker.get(key.split("-")[0], DEFAULT_LANGUAGE)
  langs = [language(k) if callable(language) else language for k in ids]
  index = index_files(paths, ids=ids, transcripts=texts, languages=langs, num_threads=num_threads)
  for orphan in orphans:
    logging.warning("%s", AudioInputError("missing_transcript", orphan, "transcript line without an audio file"))
  return index
