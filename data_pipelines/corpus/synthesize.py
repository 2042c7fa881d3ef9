"""Synthesises one speaker's utterances and writes them in LibriSpeech layout, with word timings.

`synthesize_speaker` (audio and transcripts) and then `time_speaker` (word timings) are the units of parallel work.
Each must run in a fresh process (see `espeak`'s note on determinism): then its output depends on the job alone, not
on which worker ran it or what that worker did before.

Why two passes: word ends come from eSpeak NG's phoneme events, which alter the samples of a few utterances, and
positions depend on the synthesis history. So the audio pass synthesises without them, as the generator always has,
and the timing pass replays the very same sequence of eSpeak NG calls in another fresh process with phoneme events.
An utterance is timed only if the replay reproduces its text, length and word events exactly.
"""

import dataclasses
import pathlib

import numpy as np
import soundfile as sf
import soxr

from data_pipelines.corpus import alignments
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
    espeak_samples: length of eSpeak NG's output (22050 Hz).
    espeak_words: eSpeak NG's word events in that output, which the timing pass must reproduce.
    words: the transcript words' timings in the 16 kHz audio (`time_speaker` sets them), or None when eSpeak NG's
      events could not be matched to the transcript (`alignment_error` says why).
    alignment_error: empty unless `time_speaker` found no timings.
  """
  utterance_id: str
  speaker_id: int
  chapter_id: int
  transcript: str
  num_samples: int
  espeak_samples: int
  espeak_words: tuple[espeak.WordEvent, ...]
  words: tuple[alignments.WordTiming, ...] | None = None
  alignment_error: str = ""


def to_16k(audio: np.ndarray) -> np.ndarray:
  """Resamples eSpeak NG output to 16 kHz.

  Args:
    audio: int16 `[samples]` at 22050 Hz.

  Returns:
    int16 `[round(samples * 16000 / 22050)]` at 16 kHz (soxr, high quality; rounded and clipped). soxr keeps time:
    22050 Hz sample n lands at 16 kHz sample n * 16000 / 22050.
  """
  resampled = soxr.resample(audio.astype(np.float32), espeak.SAMPLE_RATE, SAMPLE_RATE, quality="HQ")
  return np.clip(np.rint(resampled), -32768, 32767).astype(np.int16)


def _kept_utterances(job, phoneme_events):
  """Yields `(utterance_id, chapter_id, sentence, synthesis, audio at 16 kHz)` for each utterance the speaker keeps.

  The eSpeak NG calls depend on the job and on the lengths of the audio alone, so a replay with phoneme events makes
  the same calls as long as they change no length.
  """
  s = job.speaker
  rng = np.random.default_rng([job.seed, s.speaker_id, 0x7E47])
  seconds_per_entry = 60.0 / s.rate * 1.3  # Refined from each synthesis; eSpeak NG's rate is nominal.
  count, total, attempts, failures = 0, 0.0, 0, 0
  while total < job.seconds or not count:
    target = rng.uniform(*_TARGET_SECONDS)
    target = max(min(target, job.seconds - total), _TARGET_SECONDS[0])  # Land close to the budget.
    for _ in range(_MAX_ATTEMPTS):
      attempts += 1
      num_entries = max(1, round(target / seconds_per_entry))
      sentence = text_lib.sample_sentence(rng, job.lexicon, num_entries)
      synthesis = espeak.synthesize_timed(sentence.spoken, s.voice, rate=s.rate, pitch=s.pitch, volume=s.volume,
                                          seed=attempts, phoneme_events=phoneme_events)
      audio = to_16k(synthesis.audio)
      seconds = len(audio) / SAMPLE_RATE
      seconds_per_entry = 0.7 * seconds_per_entry + 0.3 * seconds / num_entries
      if MIN_SECONDS <= seconds <= MAX_SECONDS:
        break
    else:
      failures += 1
      if failures > _MAX_FAILURES:
        raise RuntimeError(f"{s}: cannot make utterances of {MIN_SECONDS}-{MAX_SECONDS} s")
      continue
    chapter_id = s.speaker_id * _MAX_CHAPTERS + count // _UTTERANCES_PER_CHAPTER
    if count // _UTTERANCES_PER_CHAPTER >= _MAX_CHAPTERS:
      raise ValueError(f"speaker {s.speaker_id}: more than {_MAX_CHAPTERS} chapters; lower the hours per speaker")
    utterance_id = f"{s.speaker_id}-{chapter_id}-{count % _UTTERANCES_PER_CHAPTER:04d}"
    yield utterance_id, chapter_id, sentence, synthesis, audio
    count += 1
    total += seconds


def _chapter_dir(job, chapter_id):
  return pathlib.Path(job.split_dir) / str(job.speaker.speaker_id) / str(chapter_id)


def synthesize_speaker(job: SpeakerJob) -> list[Utterance]:
  """Synthesises a speaker's utterances, writes FLAC files and chapter transcripts, returns what it wrote.

  Writes `split_dir/SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac` (16 kHz mono, 16-bit) and
  `split_dir/SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt`. Each utterance lasts between `MIN_SECONDS` and
  `MAX_SECONDS`; utterances are added until the speaker's audio reaches `job.seconds`.

  Args:
    job: the speaker and its budget.

  Returns:
    The utterances, in order, without word timings (`time_speaker` adds them).
  """
  utterances = []
  for utterance_id, chapter_id, sentence, synthesis, audio in _kept_utterances(job, phoneme_events=False):
    chapter_dir = _chapter_dir(job, chapter_id)
    chapter_dir.mkdir(parents=True, exist_ok=True)
    sf.write(chapter_dir / f"{utterance_id}.flac", audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    utterances.append(Utterance(utterance_id, job.speaker.speaker_id, chapter_id, sentence.transcript, len(audio),
                                len(synthesis.audio), synthesis.words))
  for chapter_id, chapter in _by_chapter(utterances).items():
    path = _chapter_dir(job, chapter_id) / f"{job.speaker.speaker_id}-{chapter_id}.trans.txt"
    path.write_text("".join(f"{u.utterance_id} {u.transcript}\n" for u in chapter), encoding="utf-8")
  return utterances


def time_speaker(job: SpeakerJob, utterances: list[Utterance]) -> list[Utterance]:
  """Times the words of what `synthesize_speaker(job)` wrote and writes the chapters' alignment files.

  Replays the speaker's synthesis with phoneme events (see the module docstring) and writes
  `split_dir/SPEAKER/CHAPTER/SPEAKER-CHAPTER.alignment.json` (format in `alignments`).

  Args:
    job: the job `synthesize_speaker` ran.
    utterances: what it returned.

  Returns:
    `utterances` with `words` set, or `alignment_error` where the words could not be timed.
  """
  replay = {u: (sentence, synthesis) for u, _, sentence, synthesis, _ in _kept_utterances(job, phoneme_events=True)}
  timed = []
  for u in utterances:
    sentence, synthesis = replay.get(u.utterance_id, (None, None))
    if sentence is None or sentence.transcript != u.transcript or len(synthesis.audio) != u.espeak_samples:
      error = "the replay with phoneme events synthesised other audio"
    elif synthesis.words != u.espeak_words:
      error = "the replay with phoneme events moved eSpeak NG's word events"
    else:
      try:
        words = alignments.time_words(sentence.spoken, u.transcript, synthesis, SAMPLE_RATE, u.num_samples)
        timed.append(dataclasses.replace(u, words=words))
        continue
      except alignments.AlignmentError as e:
        error = str(e)
    timed.append(dataclasses.replace(u, alignment_error=error))
  for chapter_id, chapter in _by_chapter(timed).items():
    alignments.write_chapter(
        alignments.chapter_file(_chapter_dir(job, chapter_id), job.speaker.speaker_id, chapter_id), SAMPLE_RATE,
        {u.utterance_id: u.words for u in chapter if u.words is not None},
        {u.utterance_id: u.alignment_error for u in chapter if u.words is None})
  return timed


def _by_chapter(utterances):
  by_chapter = {}
  for u in utterances:
    by_chapter.setdefault(u.chapter_id, []).append(u)
  return by_chapter
