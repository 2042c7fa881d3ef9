"""Synthesises one speaker's utterances and writes them in LibriSpeech layout.

`synthesize_speaker` is the unit of parallel work. It must run in a fresh process (see `espeak`'s note on
determinism): then its output depends on the job alone, not on which worker ran it or what that worker did before.
"""

import dataclasses
import pathlib

import numpy as np
import soundfile as sf
import soxr

from data_pipelines.corpus import espeak
from data_pipelines.corpus import speakers as speakers_lib
from data_pipelines.corpus import text as text_lib

SAMPLE_RATE = 16000
MIN_SECONDS = 2.0
MAX_SECONDS = 15.0
# Sentence lengths are drawn uniformly in this range; synthesis then lands within [MIN_SECONDS, MAX_SECONDS].
_TARGET_SECONDS = (2.5, 14.0)
_UTTERANCES_PER_CHAPTER = 8
_MAX_CHAPTERS = 100  # Chapter ids are speaker_id * 100 + index.
_MAX_ATTEMPTS = 6  # Per utterance, re-drawing the sentence with a corrected length.
_MAX_FAILURES = 20  # Utterances that missed the length range in all attempts, before giving up on a speaker.


@dataclasses.dataclass(frozen=True)
class SpeakerJob:
  """Everything one speaker's synthesis depends on.

  Attributes:
    speaker: the speaker.
    lexicon: its language's word material.
    seconds: audio to produce; at least one utterance is made even when this is tiny.
    seed: corpus seed.
    split_dir: the split's folder (`OUT/train`, ...); the speaker's folder goes inside.
  """
  speaker: speakers_lib.Speaker
  lexicon: text_lib.Lexicon
  seconds: float
  seed: int
  split_dir: str


@dataclasses.dataclass(frozen=True)
class Utterance:
  """One written utterance.

  Attributes:
    utterance_id: "SPEAKER-CHAPTER-UTT", the FLAC file's stem.
    speaker_id: speaker id.
    chapter_id: chapter id.
    transcript: normalised transcript.
    num_samples: length at 16 kHz.
  """
  utterance_id: str
  speaker_id: int
  chapter_id: int
  transcript: str
  num_samples: int


def to_16k(audio: np.ndarray) -> np.ndarray:
  """Resamples eSpeak NG output to 16 kHz.

  Args:
    audio: int16 `[samples]` at 22050 Hz.

  Returns:
    int16 `[round(samples * 16000 / 22050)]` at 16 kHz (soxr, high quality; rounded and clipped).
  """
  resampled = soxr.resample(audio.astype(np.float32), espeak.SAMPLE_RATE, SAMPLE_RATE, quality="HQ")
  return np.clip(np.rint(resampled), -32768, 32767).astype(np.int16)


def _synthesize_sentence(job, rng, num_entries, seed):
  s = job.speaker
  sentence = text_lib.sample_sentence(rng, job.lexicon, num_entries)
  audio = espeak.synthesize(sentence.spoken, s.voice, rate=s.rate, pitch=s.pitch, volume=s.volume, seed=seed)
  return sentence, to_16k(audio)


def synthesize_speaker(job: SpeakerJob) -> list[Utterance]:
  """Synthesises a speaker's utterances, writes FLAC files and chapter transcripts, returns what it wrote.

  Writes `split_dir/SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac` (16 kHz mono, 16-bit) and
  `split_dir/SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt`. Each utterance lasts between `MIN_SECONDS` and
  `MAX_SECONDS`; utterances are added until the speaker's audio reaches `job.seconds`.

  Args:
    job: the speaker and its budget.

  Returns:
    The utterances, in order.
  """
  s = job.speaker
  rng = np.random.default_rng([job.seed, s.speaker_id, 0x7E47])
  seconds_per_entry = 60.0 / s.rate * 1.3  # Refined from each synthesis; eSpeak NG's rate is nominal.
  utterances, total, attempts, failures = [], 0.0, 0, 0
  while total < job.seconds or not utterances:
    target = rng.uniform(*_TARGET_SECONDS)
    target = max(min(target, job.seconds - total), _TARGET_SECONDS[0])  # Land close to the budget.
    for _ in range(_MAX_ATTEMPTS):
      attempts += 1
      num_entries = max(1, round(target / seconds_per_entry))
      sentence, audio = _synthesize_sentence(job, rng, num_entries, seed=attempts)
      seconds = len(audio) / SAMPLE_RATE
      seconds_per_entry = 0.7 * seconds_per_entry + 0.3 * seconds / num_entries
      if MIN_SECONDS <= seconds <= MAX_SECONDS:
        break
    else:
      failures += 1
      if failures > _MAX_FAILURES:
        raise RuntimeError(f"{s}: cannot make utterances of {MIN_SECONDS}-{MAX_SECONDS} s")
      continue
    index = len(utterances)
    chapter_id = s.speaker_id * _MAX_CHAPTERS + index // _UTTERANCES_PER_CHAPTER
    if index // _UTTERANCES_PER_CHAPTER >= _MAX_CHAPTERS:
      raise ValueError(f"speaker {s.speaker_id}: more than {_MAX_CHAPTERS} chapters; lower the hours per speaker")
    utterance_id = f"{s.speaker_id}-{chapter_id}-{index % _UTTERANCES_PER_CHAPTER:04d}"
    chapter_dir = pathlib.Path(job.split_dir) / str(s.speaker_id) / str(chapter_id)
    chapter_dir.mkdir(parents=True, exist_ok=True)
    sf.write(chapter_dir / f"{utterance_id}.flac", audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    utterances.append(Utterance(utterance_id, s.speaker_id, chapter_id, sentence.transcript, len(audio)))
    total += seconds
  _write_transcripts(pathlib.Path(job.split_dir) / str(s.speaker_id), utterances)
  return utterances


def _write_transcripts(speaker_dir, utterances):
  by_chapter = {}
  for u in utterances:
    by_chapter.setdefault(u.chapter_id, []).append(f"{u.utterance_id} {u.transcript}")
  for chapter_id, lines in by_chapter.items():
    path = speaker_dir / str(chapter_id) / f"{utterances[0].speaker_id}-{chapter_id}.trans.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
