"""Generates the multilingual eSpeak NG corpus in LibriSpeech layout.

Layout of a corpus folder:

  OUT/{train,dev,test}/SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac   16 kHz mono 16-bit FLAC
  OUT/{train,dev,test}/SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt  "SPEAKER-CHAPTER-UTT TRANSCRIPT" lines
  OUT/{train,dev,test}/SPEAKER/CHAPTER/SPEAKER-CHAPTER.alignment.json  word start/end seconds (`alignments`)
  OUT/SPEAKERS.txt                                                 speaker -> language, variant, pitch, rate, split
  OUT/summary.json                                                 config, versions, hours, counts, alphabets

The folder appears atomically: everything is written to a hidden sibling folder that is renamed at the end.
"""

from concurrent import futures
import dataclasses
import json
import logging
import multiprocessing
import os
import pathlib
import shutil
import time
import uuid

from data_pipelines.corpus import speakers as speakers_lib
from data_pipelines.corpus import synthesize
from data_pipelines.corpus import text as text_lib

SUMMARY_FILE = "summary.json"
# Bump when the generator's output changes for a given config; part of the cache key. 2-3: word alignments (3: a
# cached v2 corpus came from work-in-progress code whose audio differed).
GENERATOR_VERSION = 3


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
  """What a generated corpus contains; two equal configs give identical corpora.

  Attributes:
    hours: total audio, spread evenly over speakers (each speaker gets at least one utterance).
    seed: seed for speakers, sentences and synthesis.
    languages: language codes (keys of `text.LANGUAGES`).
    speakers: speakers per language in each split.
  """
  hours: float = 1.5
  seed: int = 0
  languages: tuple[str, ...] = text_lib.DEFAULT_LANGUAGES
  speakers: speakers_lib.SpeakerCounts = speakers_lib.SpeakerCounts()

  def to_dict(self) -> dict:
    return dataclasses.asdict(self) | {"languages": list(self.languages)}


def _jobs(config, tmp_dir):
  plan = speakers_lib.plan_speakers(config.languages, config.speakers, config.seed)
  lexicons = text_lib.build_lexicons(config.languages)
  seconds = config.hours * 3600.0 / len(plan)
  return plan, [synthesize.SpeakerJob(s, lexicons[s.language], seconds, config.seed, str(tmp_dir / s.split))
                for s in plan]


def _run_jobs(jobs, workers):
  # A fresh process per speaker (max_tasks_per_child=1) makes each speaker's audio independent of scheduling. The
  # fork server forks those processes from a clean parent that has already imported the synthesis modules: cheap
  # (~10 ms each), and safe even when the caller has started threads (JAX, TensorFlow) that a plain fork would copy
  # half-way. A worker that dies raises BrokenProcessPool here instead of hanging the caller.
  ctx = multiprocessing.get_context("forkserver")
  ctx.set_forkserver_preload(["data_pipelines.corpus.synthesize"])
  with futures.ProcessPoolExecutor(max(1, workers), mp_context=ctx, max_tasks_per_child=1) as executor:
    results = _with_progress(executor.map(synthesize.synthesize_speaker, jobs), len(jobs), "synthesised")
    # Word timings replay each speaker's synthesis, after the audio pass: see synthesize's docstring.
    return _with_progress(executor.map(synthesize.time_speaker, jobs, results), len(jobs), "word-timed")


def _with_progress(results, total: int, verb: str, every_s: float = 10.0) -> list:
  """Collects `results`, logging "corpus: <verb> k/total speakers" with an ETA at most every `every_s` seconds."""
  out, start, last = [], time.monotonic(), time.monotonic()
  for result in results:
    out.append(result)
    now = time.monotonic()
    if now - last >= every_s and len(out) < total:
      eta = (now - start) / len(out) * (total - len(out))
      logging.info("corpus: %s %d/%d speakers (ETA %d s)", verb, len(out), total, eta)
      last = now
  return out


def _summary(config, plan, results):
  seconds = {}  # (split, language) -> seconds
  utterances = {}
  aligned = {}
  unaligned = {}  # utterance id -> why
  minutes_per_speaker = {}
  for speaker, utts in zip(plan, results):
    key = (speaker.split, speaker.language)
    speaker_seconds = sum(u.num_samples for u in utts) / synthesize.SAMPLE_RATE
    seconds[key] = seconds.get(key, 0.0) + speaker_seconds
    utterances[key] = utterances.get(key, 0) + len(utts)
    aligned[key] = aligned.get(key, 0) + sum(u.words is not None for u in utts)
    unaligned.update((u.utterance_id, u.alignment_error) for u in utts if u.words is None)
    minutes_per_speaker[speaker.speaker_id] = speaker_seconds / 60.0

  def total(by, value, table):
    return round(sum(v for k, v in table.items() if k[by] == value), 6)

  hours = {k: v / 3600.0 for k, v in seconds.items()}
  summary = {
      "generator_version": GENERATOR_VERSION,
      "config": config.to_dict(),
      "versions": package_versions(),
      "sample_rate": synthesize.SAMPLE_RATE,
      "hours": round(sum(hours.values()), 6),
      "hours_per_split": {split: total(0, split, hours) for split in speakers_lib.SPLITS},
      "hours_per_language": {lang: total(1, lang, hours) for lang in config.languages},
      "hours_per_split_language": {split: {lang: round(hours[split, lang], 6) for lang in config.languages}
                                   for split in speakers_lib.SPLITS},
      "utterances_per_split": {split: total(0, split, utterances) for split in speakers_lib.SPLITS},
      "speakers_per_split": {split: sum(s.split == split for s in plan) for split in speakers_lib.SPLITS},
      "word_aligned_utterances_per_split": {split: total(0, split, aligned) for split in speakers_lib.SPLITS},
      "word_unaligned_utterances": dict(sorted(unaligned.items())),
      "charset": {lang: text_lib.LANGUAGES[lang].charset for lang in config.languages},
  }
  return summary, minutes_per_speaker


def package_versions() -> dict[str, str]:
  """Versions of the packages the corpus content depends on (voices, word lists, resampler, RNG)."""
  from importlib import metadata
  return {name: metadata.version(name) for name in ("espeakng-loader", "faker", "soxr", "numpy")}


def generate_corpus(out_dir: str | os.PathLike, config: CorpusConfig = CorpusConfig(), workers: int = 2) -> dict:
  """Generates a corpus into `out_dir`, atomically.

  Args:
    out_dir: the corpus folder to create; must not exist yet.
    config: what to generate.
    workers: worker processes; any number gives the same corpus.

  Returns:
    The summary also written to `out_dir/summary.json`: hours per split and language, counts, alphabets.

  Raises:
    FileExistsError: `out_dir` exists (also when another process created it while this one was generating).
  """
  unknown = set(config.languages) - set(text_lib.LANGUAGES)
  if unknown:
    raise ValueError(f"unknown languages {sorted(unknown)}; known: {sorted(text_lib.LANGUAGES)}")
  out_dir = pathlib.Path(out_dir)
  if out_dir.exists():
    raise FileExistsError(f"{out_dir} exists")
  out_dir.parent.mkdir(parents=True, exist_ok=True)
  tmp_dir = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex}"
  try:
    for split in speakers_lib.SPLITS:
      (tmp_dir / split).mkdir(parents=True)
    plan, jobs = _jobs(config, tmp_dir)
    results = _run_jobs(jobs, workers)
    summary, minutes = _summary(config, plan, results)
    speakers_lib.write_speakers(tmp_dir / speakers_lib.SPEAKERS_FILE, plan, minutes)
    (tmp_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    try:
      os.rename(tmp_dir, out_dir)  # Atomic; fails if out_dir appeared meanwhile and is not empty.
    except OSError as e:
      raise FileExistsError(f"{out_dir} was created while generating") from e
  finally:
    shutil.rmtree(tmp_dir, ignore_errors=True)
  return summary
