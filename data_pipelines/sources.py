"""LibriSpeech-layout folders (`SPLIT/SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac` + `.trans.txt`) as `AudioIndex`es.

The index types live in `audio_index` and are re-exported here, so `sources.AudioIndex`, `sources.concat` and
`sources.index_files` are the one place callers import from.
"""

import glob
import os
from typing import Callable, Sequence

import numpy as np
from absl import logging

from data_pipelines.audio_index import (DEFAULT_LANGUAGE, AudioIndex, ConcatReader, FileReader, Reader, concat,
                                        index_files, window_reader)
from data_pipelines.errors import AudioInputError

__all__ = ["AUDIO_EXTENSIONS", "DEFAULT_LANGUAGE", "AudioIndex", "ConcatReader", "FileReader", "Reader", "concat",
           "find_splits", "index_files", "librispeech_folder", "read_transcripts", "speaker_languages",
           "window_reader"]

AUDIO_EXTENSIONS = (".flac", ".wav", ".ogg", ".mp3")


def find_splits(folder: str | os.PathLike) -> list[str]:
  """Sub-folders of `folder` in LibriSpeech layout (SPLIT/SPEAKER/CHAPTER/*.trans.txt), sorted."""
  folder = os.fspath(folder)
  return sorted(d for d in os.listdir(folder)
                if glob.glob(os.path.join(glob.escape(os.path.join(folder, d)), "*", "*", "*.trans.txt")))


def read_transcripts(path: str) -> dict[str, str]:
  """Reads a LibriSpeech `SPEAKER-CHAPTER.trans.txt`: lines "UTTERANCE-ID TEXT" → {id: text}."""
  out = {}
  with open(path, encoding="utf-8") as f:
    for line in f:
      key, _, text = line.strip().partition(" ")
      if key:
        out[key] = text.strip()
  return out


def speaker_languages(folder: str | os.PathLike) -> dict[str, str]:
  """Speaker → language from a `SPEAKERS.txt` (or `.TXT`) with a LANG column, in `folder` or its parent.

  The header is the last ";"-comment line with "|"-separated column names (";ID |LANG|..."), as in LibriSpeech's
  SPEAKERS.TXT and the generated corpus. Returns {} when there is no such file or no LANG column.
  """
  folder = os.fspath(folder)
  for base in (folder, os.path.dirname(os.path.normpath(folder))):
    for name in ("SPEAKERS.txt", "SPEAKERS.TXT"):
      path = os.path.join(base, name)
      if not os.path.isfile(path):
        continue
      columns, out = None, {}
      with open(path, encoding="utf-8") as f:
        for line in f:
          fields = [x.strip() for x in line.lstrip(";").split("|")]
          if line.startswith(";"):
            if "|" in line:
              columns = [c.upper() for c in fields]
          elif columns and "LANG" in columns and len(fields) == len(columns):
            out[fields[columns.index("ID")]] = fields[columns.index("LANG")]
      if out:
        return out
  return {}


def librispeech_folder(
    root: str | os.PathLike,
    split: str | Sequence[str] | None = None,
    *,
    language: str | Callable[[str], str] | None = None,
    num_threads: int = 16,
) -> AudioIndex:
  """Lists a LibriSpeech-layout folder: `root[/SPLIT]/SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac` + `.trans.txt`.

  Args:
    root: the folder (e.g. `LibriSpeech/` or a generated corpus).
    split: sub-folder(s) to read (e.g. "train-clean-100", or ["train", "dev"]); None reads `root` itself.
    language: a language name for all utterances, a function utterance id → language, or None: the speaker's
      LANG in a `SPEAKERS.txt` next to the splits (see `speaker_languages`), else "und".
    num_threads: header-reading threads.

  Returns:
    The index, sorted by utterance id. Audio files without a transcript line get transcript None (an error only
    where labels are required, see `checks`); transcript lines without an audio file are logged as
    "missing_transcript" warnings, as they can never become data.
  """
  splits = [split] if isinstance(split, str) or split is None else list(split)
  paths, ids, texts = [], [], []
  orphans = []
  for sp in splits:
    base = os.path.join(os.fspath(root), sp) if sp else os.fspath(root)
    if not os.path.isdir(base):
      raise FileNotFoundError(f"no such LibriSpeech folder: {base}")
    chapters = sorted({os.path.dirname(p) for ext in AUDIO_EXTENSIONS + (".trans.txt",)
                       for p in glob.glob(os.path.join(base, "*", "*", "*" + ext))})
    for chapter in chapters:
      found = {}
      for ext in AUDIO_EXTENSIONS:
        for p in glob.glob(os.path.join(chapter, "*" + ext)):
          found.setdefault(os.path.basename(p)[: -len(ext)], p)
      trans = {}
      for tpath in glob.glob(os.path.join(chapter, "*.trans.txt")):
        trans.update(read_transcripts(tpath))
      for key in sorted(found):
        paths.append(found[key])
        ids.append(key)
        texts.append(trans.get(key))
      orphans += [os.path.join(chapter, k) for k in sorted(set(trans) - set(found))]
  order = np.argsort(ids, kind="stable")
  paths, ids, texts = [paths[i] for i in order], [ids[i] for i in order], [texts[i] for i in order]
  if language is None:
    by_speaker = speaker_languages(os.path.join(os.fspath(root), splits[0]) if splits[0] else root)
    language = lambda key: by_speaker.get(key.split("-")[0], DEFAULT_LANGUAGE)
  langs = [language(k) if callable(language) else language for k in ids]
  index = index_files(paths, ids=ids, transcripts=texts, languages=langs, num_threads=num_threads)
  for orphan in orphans:
    logging.warning("%s", AudioInputError("missing_transcript", orphan, "transcript line without an audio file"))
  return index
