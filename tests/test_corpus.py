"""Tests of the generated corpus (data_pipelines.corpus): layout, splits, text, audio, determinism, cache."""

import dataclasses
import hashlib
import json
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from data_pipelines import corpus
from data_pipelines.corpus import build
from data_pipelines.corpus import cache
from data_pipelines.corpus import synthesize
from data_pipelines.corpus import text

TINY = corpus.CorpusConfig(hours=0.01, seed=3, speakers=corpus.SpeakerCounts(train=1, dev=1, test=1))
REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  out = tmp_path_factory.mktemp("corpus") / "tiny"
  summary = corpus.generate_corpus(out, TINY, workers=2)
  return out, summary


def _utterances(corpus_dir):
  """utterance id -> (split, flac path, transcript), from the trans.txt files; checks each line's format."""
  utts = {}
  for split in corpus.SPLITS:
    for trans in sorted((corpus_dir / split).glob("*/*/*.trans.txt")):
      speaker, chapter = trans.parent.parent.name, trans.parent.name
      assert trans.name == f"{speaker}-{chapter}.trans.txt"
      for line in trans.read_text(encoding="utf-8").splitlines():
        utt_id, transcript = line.split(" ", 1)
        assert utt_id.startswith(f"{speaker}-{chapter}-") and len(utt_id.rsplit("-", 1)[1]) == 4
        utts[utt_id] = (split, trans.parent / f"{utt_id}.flac", transcript)
  return utts


def _digest(corpus_dir):
  return {str(p.relative_to(corpus_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(corpus_dir.rglob("*")) if p.is_file()}


def test_layout_matches_librispeech(tiny):
  out, _ = tiny
  utts = _utterances(out)
  flacs = {p.stem: p for p in out.glob("*/*/*/*.flac")}
  assert utts and set(flacs) == set(utts)  # every transcript line has its file and vice versa
  for utt_id, (split, path, _) in utts.items():
    speaker, chapter, _ = utt_id.split("-")
    assert path == out / split / speaker / chapter / f"{utt_id}.flac"
    assert int(speaker) > 0 and int(chapter) > 0
  assert (out / "SPEAKERS.txt").is_file() and (out / "summary.json").is_file()
  assert not list(out.parent.glob(".tiny.tmp-*"))


def test_splits_are_by_speaker(tiny):
  out, summary = tiny
  speakers = corpus.read_speakers(out)
  by_split = {split: {int(p.name) for p in (out / split).iterdir()} for split in corpus.SPLITS}
  for a in corpus.SPLITS:
    for b in corpus.SPLITS:
      assert a == b or not by_split[a] & by_split[b]
  for split, ids in by_split.items():
    assert ids and all(speakers[i].split == split for i in ids)
    assert summary["speakers_per_split"][split] == len(ids)
  assert set().union(*by_split.values()) == set(speakers)
  # One speaker = one (language, variant, pitch, rate) combination.
  combos = {(s.language, s.variant, s.pitch, s.rate) for s in speakers.values()}
  assert len(combos) == len(speakers)


def test_transcripts_use_the_language_alphabet(tiny):
  out, summary = tiny
  speakers = corpus.read_speakers(out)
  for utt_id, (_, _, transcript) in _utterances(out).items():
    language = speakers[int(utt_id.split("-")[0])].language
    assert transcript and transcript == transcript.strip() and "  " not in transcript
    assert set(transcript) <= set(corpus.LANGUAGES[language].charset), (utt_id, transcript)
    assert set(transcript) <= set(summary["charset"][language])


def test_at_least_five_languages_in_every_split(tiny):
  out, summary = tiny
  speakers = corpus.read_speakers(out)
  for split in corpus.SPLITS:
    languages = {speakers[int(p.name)].language for p in (out / split).iterdir()}
    assert len(languages) >= 5
    assert all(summary["hours_per_split_language"][split][lang] > 0 for lang in languages)


def test_audio_is_16k_mono_and_fits_its_transcript(tiny):
  out, summary = tiny
  total = 0.0
  for _, path, transcript in _utterances(out).values():
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.format, info.subtype) == (16000, 1, "FLAC", "PCM_16")
    assert synthesize.MIN_SECONDS <= info.duration <= synthesize.MAX_SECONDS
    audio, _ = sf.read(path, dtype="float32")
    assert np.sqrt(np.mean(audio**2)) > 0.01  # not silent
    # Read speech runs at roughly 8-25 characters a second.
    assert 0.02 < info.duration / len(transcript) < 0.2, (path, info.duration, transcript)
    total += info.duration
  assert total / 3600 == pytest.approx(summary["hours"], rel=1e-4)
  assert summary["hours"] >= TINY.hours


def test_same_seed_same_bytes_whatever_the_workers(tiny, tmp_path):
  out, _ = tiny
  again = tmp_path / "again"
  corpus.generate_corpus(again, TINY, workers=1)
  assert _digest(again) == _digest(out)


def test_other_seed_other_corpus(tmp_path):
  config = corpus.CorpusConfig(hours=0.001, seed=4, languages=("en", "de"), speakers=corpus.SpeakerCounts(1, 1, 1))
  corpus.generate_corpus(tmp_path / "a", config)
  corpus.generate_corpus(tmp_path / "b", dataclasses.replace(config, seed=5))
  transcripts = [[t for _, _, t in _utterances(tmp_path / d).values()] for d in "ab"]
  assert transcripts[0] != transcripts[1]


def test_generate_refuses_existing_folder_and_leaves_no_partial_output(tmp_path, monkeypatch):
  (tmp_path / "exists").mkdir()
  with pytest.raises(FileExistsError):
    corpus.generate_corpus(tmp_path / "exists", TINY)
  monkeypatch.setattr(build, "_summary", lambda *a: (_ for _ in ()).throw(RuntimeError("killed")))
  with pytest.raises(RuntimeError, match="killed"):
    corpus.generate_corpus(tmp_path / "broken", dataclasses.replace(TINY, languages=("en",)))
  assert sorted(p.name for p in tmp_path.iterdir()) == ["exists"]


def test_cache_generates_once_then_reuses(tmp_path, monkeypatch):
  config = dataclasses.replace(TINY, languages=("en", "fr"))
  key = cache.cache_key(config)
  stale = tmp_path / f".{key}.tmp-deadbeef"  # what a killed generator leaves behind
  (stale / "train").mkdir(parents=True)
  first = corpus.ensure_corpus(config, cache_dir=tmp_path)
  assert first == tmp_path / key and (first / "summary.json").is_file() and not stale.exists()
  before = _digest(first)
  monkeypatch.setattr(build, "generate_corpus", lambda *a, **k: pytest.fail("regenerated a cached corpus"))
  assert corpus.ensure_corpus(config, cache_dir=tmp_path) == first
  assert _digest(first) == before
  # A folder under the key without summary.json was not made by the generator: refuse it, do not reuse it.
  other = dataclasses.replace(config, seed=9)
  (tmp_path / cache.cache_key(other) / "train").mkdir(parents=True)
  with pytest.raises(RuntimeError, match="summary.json"):
    corpus.ensure_corpus(other, cache_dir=tmp_path)


def test_cache_key_and_root(tmp_path, monkeypatch):
  assert cache.cache_key(TINY) == cache.cache_key(dataclasses.replace(TINY))
  assert cache.cache_key(TINY) != cache.cache_key(dataclasses.replace(TINY, seed=4))
  monkeypatch.setenv("WAV2VEC_JAX_DATA", str(tmp_path))
  assert corpus.cache_root() == tmp_path / "corpus"
  monkeypatch.delenv("WAV2VEC_JAX_DATA")
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert corpus.cache_root() == tmp_path / "xdg" / "wav2vec_jax" / "corpus"


@pytest.mark.parametrize("language, raw, expected", [
    ("en", "Hello, world! It's 3 o'clock.", "HELLO WORLD IT'S O'CLOCK"),
    ("en", "Smith-Jones ‘quoted’ é", "SMITH JONES QUOTED"),
    ("de", "Straße über Öl — 12 Äpfel", "STRASSE ÜBER ÖL ÄPFEL"),
    ("fr", "Sainte-Élisabeth-les-Bains, l’œuvre « à » y b", "SAINTE ÉLISABETH LES BAINS L'ŒUVRE À Y"),
    ("es", "¿Dónde está el niño? Ç", "DÓNDE ESTÁ EL NIÑO"),
    ("pl", "znajdować się, żółć", "ZNAJDOWAĆ SIĘ ŻÓŁĆ"),
    ("cs", "e-mail Dvořáková 42", "MAIL DVOŘÁKOVÁ"),
])
def test_normalize_transcript(language, raw, expected):
  assert corpus.normalize_transcript(raw, corpus.LANGUAGES[language]) == expected


def test_lexicons_are_clean_and_sentences_match_transcripts():
  lexicons = text.build_lexicons(("it", "nl"))
  assert lexicons == text.build_lexicons(("it", "nl"))  # independent of this process' hash seed
  rng = np.random.default_rng(0)
  for code, lexicon in lexicons.items():
    charset = set(corpus.LANGUAGES[code].charset)
    assert len(lexicon.words) > 400 and lexicon.names and lexicon.places
    for entry in lexicon.words + lexicon.names + lexicon.places:
      assert entry and set(entry) <= charset
    sentence = text.sample_sentence(rng, lexicon, 12)
    spoken_words = sentence.spoken.replace(",", "").rstrip(".").upper().split()
    assert spoken_words == sentence.transcript.split()


def test_cli_writes_a_corpus(tmp_path):
  out = tmp_path / "cli"
  result = subprocess.run(
      [sys.executable, "-m", "data_pipelines.corpus.generate", "--out", str(out), "--hours", "0.002",
       "--speakers", "1,1,1", "--languages", "en,de,fr,es,it", "--seed", "1"],
      cwd=REPO, capture_output=True, text=True, check=True)
  assert "done in" in result.stdout
  summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
  assert set(summary["hours_per_language"]) == {"en", "de", "fr", "es", "it"}


@pytest.mark.slow
def test_default_corpus_is_fast_cached_and_sized(tmp_path):
  start = time.perf_counter()
  path = corpus.ensure_default_corpus(cache_dir=tmp_path)
  elapsed = time.perf_counter() - start
  assert elapsed < 120, f"default corpus took {elapsed:.0f} s"
  summary = json.loads((path / "summary.json").read_text(encoding="utf-8"))
  assert 1.0 <= summary["hours"] <= 2.0 and len(summary["hours_per_language"]) >= 5
  assert summary["hours_per_split"]["dev"] > 0 and summary["hours_per_split"]["test"] > 0
  start = time.perf_counter()
  assert corpus.ensure_default_corpus(cache_dir=tmp_path) == path
  assert time.perf_counter() - start < 1.0
