"""`AudioIndex`: the random-access view of utterances that every source returns, and its readers.

An index lists utterances with their lengths, sample rates, channel counts, transcripts and languages, read from file
headers (never from decoding), plus a reader that decodes item i on demand. Knowing every length up front is what
lets `batching` plan fixed-shape batches for a whole epoch, and lets a resumed run skip ahead without decoding.
Problems found while listing (an unreadable header, an empty file) are recorded in `errors`, not raised;
`checks.check_index` applies the skip-or-raise policy to them.
"""

import concurrent.futures
import dataclasses
import os
from typing import Protocol, Sequence

import numpy as np

from data_pipelines import audio as audio_lib
from data_pipelines.errors import AudioInputError

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
