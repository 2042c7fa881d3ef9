"""`AudioIndex`, the random-access view every source returns, and LibriSpeech-layout folders.

An index lists utterances with their lengths, sample rates, channel counts, transcripts and languages, read from file
headers (never from decoding), plus a reader that decodes item i on demand. Knowing every length up front is what
lets `batching` plan fixed-shape batches for a whole epoch, and lets a resumed run skip ahead without decoding.
Problems found while listing (an unreadable header, an empty file, a transcript without audio) are recorded in
`errors`, not raised; `checks.check_index` applies the skip-or-raise policy to them.
"""

import concurrent.futures
import dataclasses
import glob
import os
from typing import Callable, Protocol, Sequence

import numpy as np
from absl import logging

from data_pipelines import audio as audio_lib
from data_pipelines.errors import AudioInputError

AUDIO_EXTENSIONS = (".flac", ".wav", ".ogg", ".mp3")
DEFAULT_LANGUAGE = "und"  # ISO 639 "undetermined"


class Reader(Protocol):
  """Random access to the audio of an index."""

  def read(self, i: int) -> tuple[np.ndarray, int]:
    """Decodes item i → (`[frames, channels]` float32, sample rate in Hz); raises AudioInputError."""

  def name(self, i: int) -> str:
    """The file path or record that item i comes from (for messages)."""


@dataclasses.dataclass(frozen=True)
class FileReader:
  """Reads audio files by path."""

  paths: tuple[str, ...]

  def read(self, i: int) -> tuple[np.ndarray, int]:
    """Decodes file i → (`[frames, channels]` float32, sample rate)."""
    return audio_lib.read_audio(self.paths[i])

  def name(self, i: int) -> str:
    """The path of file i."""
    return self.paths[i]

  def read_window(self, i: int, start: int, frames: int) -> tuple[np.ndarray, int]:
    """Decodes frames `[start, start + frames)` of file i only (pre-training crops; see `pipeline`)."""
    return audio_lib.read_audio(self.paths[i], start=start, frames=frames)


@dataclasses.dataclass(frozen=True)
class ConcatReader:
  """Reads from several readers as one; `offsets[k]` is the first index of `readers[k]`."""

  readers: tuple[Reader, ...]
  offsets: tuple[int, ...]

  def _locate(self, i: int) -> tuple[Reader, int]:
    k = int(np.searchsorted(self.offsets, i, side="right")) - 1
    return self.readers[k], i - self.offsets[k]

  def read(self, i: int) -> tuple[np.ndarray, int]:
    """Decodes item i of the concatenation → (`[frames, channels]` float32, sample rate)."""
    reader, j = self._locate(i)
    return reader.read(j)

  def name(self, i: int) -> str:
    """The file or record of item i."""
    reader, j = self._locate(i)
    return reader.name(j)

  def window_reader(self, i: int):
    """(reader, position) that can read a window of item i, or None (see `window_reader`)."""
    reader, j = self._locate(i)
    return window_reader(reader, j)


@dataclasses.dataclass(frozen=True, eq=False)
class AudioIndex:
  """Utterances of one or more sources, in a fixed order.

  Attributes:
    ids: `[N]` utterance ids.
    frames: `[N]` int64 samples per channel at the native rate (-1 where the header was unreadable).
    sample_rates: `[N]` int64 native sample rates, Hz.
    channels: `[N]` int64 channel counts.
    transcripts: `[N]` transcripts (None where missing), or None for unlabelled sources.
    languages: `[N]` language names.
    reader: decodes item i.
    errors: problems found while listing, by item position.
  """

  ids: tuple[str, ...]
  frames: np.ndarray
  sample_rates: np.ndarray
  channels: np.ndarray
  transcripts: tuple[str | None, ...] | None
  languages: tuple[str, ...]
  reader: Reader
  errors: dict[int, AudioInputError] = dataclasses.field(default_factory=dict)

  def __len__(self) -> int:
    return len(self.ids)

  def num_samples(self, target_sample_rate: int = audio_lib.TARGET_SAMPLE_RATE) -> np.ndarray:
    """`[N]` int64 lengths after resampling to `target_sample_rate` (-1 where unreadable)."""
    out = audio_lib.resampled_length(np.maximum(self.frames, 0), np.maximum(self.sample_rates, 1), target_sample_rate)
    return np.where(self.frames < 0, -1, np.atleast_1d(out)).astype(np.int64)

  def name(self, i: int) -> str:
    """The file (or record) of item i."""
    return self.reader.name(int(i))

  def select(self, positions: Sequence[int] | np.ndarray) -> "AudioIndex":
    """The sub-index of the given positions (reader kept, so positions map back through `parent`)."""
    positions = np.asarray(positions, np.int64)
    return dataclasses.replace(
        self,
        ids=tuple(self.ids[i] for i in positions),
        frames=self.frames[positions],
        sample_rates=self.sample_rates[positions],
        channels=self.channels[positions],
        transcripts=None if self.transcripts is None else tuple(self.transcripts[i] for i in positions),
        languages=tuple(self.languages[i] for i in positions),
        reader=_SubsetReader(self.reader, tuple(int(i) for i in positions)),
        errors={n: self.errors[int(i)] for n, i in enumerate(positions) if int(i) in self.errors},
    )


@dataclasses.dataclass(frozen=True)
class _SubsetReader:
  parent: Reader
  positions: tuple[int, ...]

  def read(self, i: int) -> tuple[np.ndarray, int]:
    """Decodes item i of the subset."""
    return self.parent.read(self.positions[i])

  def name(self, i: int) -> str:
    """The file or record of item i of the subset."""
    return self.parent.name(self.positions[i])

  def window_reader(self, i: int):
    """(reader, position) that can read a window of item i, or None (see `window_reader`)."""
    return window_reader(self.parent, self.positions[i])


def window_reader(reader: Reader, i: int):
  """Resolves item i of `reader` to `(r, j)` where `r.read_window(j, start, frames)` works, or None.

  File readers can decode just a window (seeking); readers of already-decoded data (TFDS) cannot.
  """
  if hasattr(reader, "window_reader"):
    return reader.window_reader(i)
  return (reader, i) if hasattr(reader, "read_window") else None


def concat(indexes: Sequence[AudioIndex]) -> AudioIndex:
  """Concatenates indexes (e.g. one per language or corpus) into one.

  Returns:
    An index whose items are those of `indexes` in order; transcripts are None for all if any source has none.
  """
  offsets = tuple(int(x) for x in np.cumsum([0] + [len(ix) for ix in indexes[:-1]]))
  labelled = all(ix.transcripts is not None for ix in indexes)
  return AudioIndex(
      ids=tuple(i for ix in indexes for i in ix.ids),
      frames=np.concatenate([ix.frames for ix in indexes]),
      sample_rates=np.concatenate([ix.sample_rates for ix in indexes]),
      channels=np.concatenate([ix.channels for ix in indexes]),
      transcripts=tuple(t for ix in indexes for t in ix.transcripts) if labelled else None,
      languages=tuple(lang for ix in indexes for lang in ix.languages),
      reader=ConcatReader(tuple(ix.reader for ix in indexes), offsets),
      errors={off + k: e for ix, off in zip(indexes, offsets) for k, e in ix.errors.items()},
  )


def index_files(
    paths: Sequence[str],
    *,
    ids: Sequence[str] | None = None,
    transcripts: Sequence[str | None] | None = None,
    languages: Sequence[str] | str = DEFAULT_LANGUAGE,
    num_threads: int = 16,
) -> AudioIndex:
  """Builds an index of audio files by reading their headers (in parallel; header reads are I/O bound).

  Args:
    paths: audio file paths.
    ids: utterance ids (default: file names without extension).
    transcripts: one per path (None where missing), or None for unlabelled audio.
    languages: one language name per path, or one for all.
    num_threads: header-reading threads.

  Returns:
    The index; unreadable or empty files are listed with frames -1 and an entry in `errors`.
  """
  paths = tuple(os.fspath(p) for p in paths)

  def info(path):
    try:
      return audio_lib.audio_info(path)
    except AudioInputError as e:
      return e

  with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
    infos = list(pool.map(info, paths))
  errors = {i: r for i, r in enumerate(infos) if isinstance(r, AudioInputError)}
  ok = [r if not isinstance(r, AudioInputError) else audio_lib.AudioInfo(-1, 0, 0) for r in infos]
  if isinstance(languages, str):
    languages = (languages,) * len(paths)
  return AudioIndex(
      ids=tuple(ids) if ids is not None else tuple(os.path.splitext(os.path.basename(p))[0] for p in paths),
      frames=np.asarray([r.frames for r in ok], np.int64).reshape(-1),
      sample_rates=np.asarray([r.sample_rate for r in ok], np.int64).reshape(-1),
      channels=np.asarray([r.channels for r in ok], np.int64).reshape(-1),
      transcripts=None if transcripts is None else tuple(transcripts),
      languages=tuple(languages),
      reader=FileReader(paths),
      errors=errors,
  )


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
