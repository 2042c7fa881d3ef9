"""Ground-truth word timings of the generated corpus: made from eSpeak NG's events, written and read per chapter.

Each chapter folder holds `SPEAKER-CHAPTER.alignment.json` next to its `.trans.txt`:

  {"sample_rate": 16000,
   "utterances": {"SPEAKER-CHAPTER-UTT": [["WORD", START, END], ...], ...},
   "unaligned": {"SPEAKER-CHAPTER-UTT": "why its words could not be timed", ...}}

Times are seconds from the start of the utterance's FLAC file (16 kHz): whole 16 kHz samples (multiples of 1/16000 s).
The words are the transcript's words, in order, one entry each. Every utterance of the chapter appears in exactly one
of the two tables.

How a word is timed (`time_words`), from the events eSpeak NG reports while it synthesises the sentence (phoneme
events come from a replay of the synthesis, see `synthesize`):
- start: the word event's sample (eSpeak NG starts a word when it starts its first phoneme, stop closures included).
  At the start of a clause eSpeak NG's ~12 ms lead-in pause "_" comes with the word.
- end: the start of the pause phoneme ("_:" after a comma or the full stop, "_" ...) that follows the word's last
  sounding phoneme before the next word starts; when no pause follows, the next word's start (the last word: the end
  of the audio).
So a word spans its phonemes, pauses between words are left out, and consecutive words without a pause touch. On the
default corpus' voices without breath noise, after a pause of 50 ms or more the sound (2 % of the peak) starts between
2 ms before and 61 ms after the word's start (median 10.5 ms: the lead-in; the long ones are initial stop closures),
and before a pause it lasts up to the word's end (95 % within 2.5 ms, at most 27.5 ms: final stop closures). The
gaps hold eSpeak NG's digital silence, or, for the breathy variants (f2-f5, m2), fading breath noise that is not
part of the word.

The resampler (soxr) keeps time: an instant at 22050 Hz sample `n` is at 16 kHz sample `n * 16000 / 22050`, which is
rounded to the nearest sample. The corpus applies no trimming or padding.

An utterance is unaligned when eSpeak NG's word events do not map one to one onto the transcript words: a transcript
word without an event (eSpeak NG reads some Czech prepositions, Polish "nie" and French "que" as one word with their
neighbour: 12 of the default corpus' 812 utterances), an event outside every word, events out of order, or a word
without a sounding phoneme; or when the timing replay did not reproduce the stored audio's events. Several events
inside one transcript word, should eSpeak NG split a word, count as one word starting at the first.
"""

import bisect
import json
import os
import re
import string
from typing import NamedTuple

from data_pipelines import storage
from data_pipelines.corpus import espeak

SUFFIX = ".alignment.json"
_PUNCTUATION = string.punctuation + "«»„“”¡¿…"
_PAUSE_PREFIX = "_"  # eSpeak NG's pause and control phonemes: "_", "_:", "_|", "_!", "_^_".


class WordTiming(NamedTuple):
  """One transcript word in time.

  Attributes:
    word: the transcript word (upper case, as in `.trans.txt`).
    start: seconds from the start of the utterance's audio file, a whole number of its samples (1/16000 s).
    end: seconds, > start.
  """
  word: str
  start: float
  end: float


class AlignmentError(ValueError):
  """eSpeak NG's word events cannot be matched one to one with the transcript's words."""


def _word_spans(spoken, transcript):
  """Character spans `[(first, last + 1)]` of the spoken words, one per transcript word."""
  spans, words = [], transcript.split()
  for token in re.finditer(r"\S+", spoken):
    text = token.group().strip(_PUNCTUATION)
    if text:
      first = token.start() + token.group().index(text)
      spans.append((first, first + len(text)))
  spoken_words = [spoken[a:b].upper() for a, b in spans]
  if spoken_words != words:
    raise ValueError(f"spoken text {spoken!r} does not read as transcript {transcript!r}: {spoken_words}")
  return spans


def _word_starts(spans, events, spoken):
  """Sample where each word starts: its first event's."""
  firsts = [a for a, _ in spans]
  starts = [None] * len(spans)
  previous = 0
  for event in events:
    i = bisect.bisect_right(firsts, event.char) - 1
    if i < 0 or event.char >= spans[i][1]:
      raise AlignmentError(f"eSpeak NG word event at character {event.char} "
                           f"({spoken[event.char:event.char + max(1, event.length)]!r}) lies outside every word")
    if i < previous:
      raise AlignmentError(f"eSpeak NG word events go back from word {previous} to word {i}")
    previous = i
    if starts[i] is None:
      starts[i] = event.sample
  missing = [spoken[a:b] for (a, b), s in zip(spans, starts) if s is None]
  if missing:
    raise AlignmentError(f"eSpeak NG reported no start for {len(missing)} word(s): {missing}")
  if any(b <= a for a, b in zip(starts, starts[1:])):
    raise AlignmentError(f"word starts do not increase: {starts}")
  return starts


def _word_ends(starts, phonemes, num_samples, words):
  """Sample where each word ends: the pause after its last sounding phoneme, else the next word's start."""
  samples = [p.sample for p in phonemes]
  if any(b < a for a, b in zip(samples, samples[1:])):
    raise AlignmentError("eSpeak NG's phoneme events are out of order")
  ends = []
  for i, (start, stop) in enumerate(zip(starts, starts[1:] + [num_samples])):
    inside = phonemes[bisect.bisect_left(samples, start):bisect.bisect_left(samples, stop)]
    sounding = [k for k, p in enumerate(inside) if not p.name.startswith(_PAUSE_PREFIX)]
    if not sounding:
      raise AlignmentError(f"word {i} ({words[i]!r}) has no sounding phoneme")
    after = inside[sounding[-1] + 1:]  # Pauses only.
    ends.append(after[0].sample if after else stop)
  return ends


def time_words(spoken: str, transcript: str, synthesis: espeak.Synthesis, sample_rate: int,
               num_samples: int) -> tuple[WordTiming, ...]:
  """Times the transcript's words in the resampled audio from eSpeak NG's events (see the module docstring).

  Args:
    spoken: the text eSpeak NG synthesised: the transcript's words in lower case, with punctuation around them.
    transcript: the normalised transcript, words separated by single spaces.
    synthesis: what `espeak.synthesize_timed(spoken, ..., phoneme_events=True)` returned: audio at 22050 Hz, word
      and phoneme events.
    sample_rate: rate of the stored audio that `synthesis.audio` was resampled to (16000).
    num_samples: length of the stored audio.

  Returns:
    One `WordTiming` per transcript word, in order; seconds on the stored audio's sample grid,
    0 <= start < end <= num_samples / sample_rate, each start at or after the previous word's end.

  Raises:
    AlignmentError: the events do not map one to one onto the transcript words.
    ValueError: `spoken` does not read as `transcript`, or `synthesis` lacks phoneme events (a caller's bug).
  """
  if not synthesis.phonemes:
    raise ValueError("the synthesis has no phoneme events: synthesise with espeak.synthesize_timed(..., "
                     "phoneme_events=True)")
  words = transcript.split()
  spans = _word_spans(spoken, transcript)
  starts = _word_starts(spans, synthesis.words, spoken)
  ends = _word_ends(starts, synthesis.phonemes, len(synthesis.audio), words)

  def seconds(sample):  # An instant at 22050 Hz, on the stored audio's sample grid and inside it.
    return min(round(sample * sample_rate / espeak.SAMPLE_RATE), num_samples) / sample_rate

  timings = tuple(WordTiming(w, seconds(a), seconds(b)) for w, a, b in zip(words, starts, ends))
  short = [t.word for t in timings if t.end <= t.start]
  if short:
    raise AlignmentError(f"words shorter than one sample at {sample_rate} Hz: {short}")
  return timings


def chapter_file(chapter_dir: str | os.PathLike, speaker_id: int, chapter_id: int) -> str:
  """The alignment file of a chapter: `chapter_dir/SPEAKER-CHAPTER.alignment.json`."""
  return storage.join(chapter_dir, f"{speaker_id}-{chapter_id}{SUFFIX}")


def write_chapter(path: str | os.PathLike, sample_rate: int, aligned: dict[str, tuple[WordTiming, ...]],
                  unaligned: dict[str, str]) -> None:
  """Writes one chapter's alignment file (format in the module docstring).

  Args:
    path: the file, `chapter_file(...)`.
    sample_rate: the stored audio's rate, recorded in the file.
    aligned: utterance id -> its words' timings, in seconds.
    unaligned: utterance id -> why it has no timings.
  """
  lines = [f"  {json.dumps(u)}: {json.dumps([list(t) for t in words], ensure_ascii=False)}"
           for u, words in aligned.items()]
  body = ",\n".join(lines)
  text = (f'{{"sample_rate": {sample_rate},\n "utterances": {{\n{body}\n }},\n'
          f' "unaligned": {json.dumps(unaligned, ensure_ascii=False)}}}\n')
  storage.write_text(path, text)


def read_chapter(path: str | os.PathLike) -> tuple[dict[str, list[WordTiming]], dict[str, str]]:
  """Reads one chapter's alignment file.

  Args:
    path: a `SPEAKER-CHAPTER.alignment.json` file.

  Returns:
    (aligned, unaligned): utterance id -> `[WordTiming(word, start_s, end_s)]` (seconds in the 16 kHz audio), and
    utterance id -> why it has no timings.

  Raises:
    ValueError: the file is not an alignment file of the generated corpus.
  """
  try:
    content = json.loads(storage.Path(path).read_text(encoding="utf-8"))
    if not isinstance(content["sample_rate"], int):
      raise ValueError(f"sample_rate is {content['sample_rate']!r}")
    aligned = {u: [WordTiming(str(w), float(a), float(b)) for w, a, b in words]
               for u, words in content["utterances"].items()}
    return aligned, dict(content["unaligned"])
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(f"{path}: not a corpus word-alignment file ({e!r}); regenerate the corpus with this version "
                     "of data_pipelines.corpus") from e


def read_word_alignments(path: str | os.PathLike, split: str | None = None) -> dict[str, list[WordTiming]]:
  """Reads the ground-truth word timings of a generated corpus, a split, a speaker or a chapter.

  Args:
    path: a corpus folder (then `split` picks "train", "dev" or "test"; None reads all three), a split folder, a
      speaker folder, a chapter folder, or one `.alignment.json` file.
    split: with a corpus folder, the split to read.

  Returns:
    Utterance id -> `[WordTiming(word, start_s, end_s), ...]`: the transcript's words in order, times in seconds from
    the start of the utterance's 16 kHz FLAC file. Unaligned utterances (see `read_unaligned`) are absent.

  Raises:
    FileNotFoundError: no alignment file there (a corpus made before word timings existed: regenerate it).
  """
  aligned = {}
  for file in _files(path, split):
    aligned.update(read_chapter(file)[0])
  return aligned


def read_unaligned(path: str | os.PathLike, split: str | None = None) -> dict[str, str]:
  """Reads which utterances have no word timings, and why.

  Args:
    path: as in `read_word_alignments`.
    split: as in `read_word_alignments`.

  Returns:
    Utterance id -> why eSpeak NG's events could not be matched to its transcript words.

  Raises:
    FileNotFoundError: no alignment file there.
  """
  unaligned = {}
  for file in _files(path, split):
    unaligned.update(read_chapter(file)[1])
  return unaligned


def _files(path, split):
  path = storage.Path(path)
  if path.name.endswith(SUFFIX):
    return [path]
  # Fixed-depth globs: object stores have no recursive glob. Depth below path: chapter 0, speaker 1, split 2, corpus 3.
  if split is not None:
    path = path / split
  files = []
  for depth in range(4):
    files = sorted(path.glob("/".join(["*"] * depth + [f"*{SUFFIX}"])))
    if files:
      break
  if not files:
    raise FileNotFoundError(f"no *{SUFFIX} files in {path} or the chapter folders below it; corpora generated "
                            "before word timings (generator version < 2) have none: regenerate")
  return files
