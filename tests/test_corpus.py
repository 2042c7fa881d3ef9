"""Tests of the generated corpus (data_pipelines.corpus): layout, splits, text, audio, determinism, cache."""

import dataclasses
import hashlib
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from data_pipelines import corpus
from data_pipelines.corpus import alignments
from data_pipelines.corpus import build
from data_pipelines.corpus import cache
from data_pipelines.corpus import espeak
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
def test_default_corpus_is_cached_and_sized(monkeypatch):
  # The shared cache (the main job's; the file lock makes concurrent callers wait for one build), not a second
  # build of its own: that cost ~90 s of the suite on 2 cores. Its build time is a benchmark's business, not a test's.
  path = corpus.ensure_default_corpus()
  summary = json.loads((path / "summary.json").read_text(encoding="utf-8"))
  assert 1.0 <= summary["hours"] <= 2.0 and len(summary["hours_per_language"]) >= 5
  assert summary["hours_per_split"]["dev"] > 0 and summary["hours_per_split"]["test"] > 0

  def generate(*args, **kwargs):
    raise AssertionError("a cached corpus was generated again")

  monkeypatch.setattr(build, "generate_corpus", generate)
  assert corpus.ensure_default_corpus() == path


# Word timings (data_pipelines.corpus.alignments).


def _frame_peaks(audio, frame=40):
  """Max |sample| per 2.5 ms frame of int16 16 kHz audio."""
  x = np.abs(audio.astype(np.int32))
  return x[:len(x) // frame * frame].reshape(-1, frame).max(axis=1)


def _timed(spoken, voice="en"):
  """Synthesises `spoken` with phoneme events; returns (16 kHz audio, word timings)."""
  synthesis = espeak.synthesize_timed(spoken, voice, phoneme_events=True)
  audio = synthesize.to_16k(synthesis.audio)
  transcript = corpus.normalize_transcript(spoken, corpus.LANGUAGES[voice.split("+")[0]])
  return audio, alignments.time_words(spoken, transcript, synthesis, 16000, len(audio))


def test_corpus_word_alignments_cover_every_utterance_and_fit_its_audio(tiny):
  out, summary = tiny
  utts = _utterances(out)
  for split in corpus.SPLITS:
    aligned = corpus.read_word_alignments(out, split)
    unaligned = corpus.read_unaligned(out, split)
    in_split = {u for u, (s, _, _) in utts.items() if s == split}
    assert set(aligned) | set(unaligned) == in_split and not set(aligned) & set(unaligned)
    assert len(aligned) == summary["word_aligned_utterances_per_split"][split]
    # The timing replay reproduced the audio pass; only eSpeak NG's own word merges may leave an utterance untimed.
    assert not [why for why in unaligned.values() if "replay" in why]
    for utt_id, words in aligned.items():
      _, path, transcript = utts[utt_id]
      audio, rate = sf.read(path, dtype="int16")
      assert [w.word for w in words] == transcript.split()
      assert 0 <= words[0].start and words[-1].end <= len(audio) / rate
      for w, after in zip(words, words[1:] + [None]):
        assert w.start < w.end and (after is None or w.end <= after.start), (utt_id, w, after)
        assert all(abs(t * rate - round(t * rate)) < 1e-6 for t in (w.start, w.end))  # whole 16 kHz samples
        if after is not None and after.start - w.end >= 0.03:  # a pause: quiet next to speech
          gap = audio[round(w.end * rate):round(after.start * rate)].astype(np.float64)
          assert np.sqrt(np.mean(gap**2)) < 0.1 * np.sqrt(np.mean(audio.astype(np.float64)**2)), (utt_id, w)
  assert len(summary["word_unaligned_utterances"]) == sum(len(corpus.read_unaligned(out, s)) for s in corpus.SPLITS)


def test_word_timings_follow_the_waveform():
  # The comma makes eSpeak NG pause (~150 ms at its default rate) between the words.
  audio, (hello, world) = _timed("hello, world.")
  peaks = _frame_peaks(audio)
  loud = 0.05 * peaks.max()
  gap = peaks[round(hello.end * 400) + 4:round(world.start * 400)]  # 400 frames a second; 10 ms of fade-out
  assert world.start - hello.end > 0.1 and gap.max() < 0.01 * peaks.max()
  assert peaks[round(hello.end * 400) - 8:round(hello.end * 400)].max() > loud  # sound up to the end
  onset = np.flatnonzero(peaks > loud)
  after_gap = onset[onset > round(hello.end * 400) + 4][0] / 400
  assert -0.005 <= after_gap - world.start <= 0.03  # "world" starts where the sound after the pause starts
  assert abs(world.end - (onset[-1] + 1) / 400) < 0.03 and world.end <= len(audio) / 16000
  first_sound = np.flatnonzero(peaks > 0.01 * peaks.max())[0] / 400  # the faint "h" of "hello"
  assert hello.start <= first_sound < hello.start + 0.03


@pytest.mark.parametrize("voice, first, second", [("en", "hello", "world"), ("de", "straße", "über"),
                                                  ("fr", "maison", "rouge")])
def test_timed_spans_match_the_words_synthesised_alone(voice, first, second):
  def sounding_seconds(audio):
    on = np.flatnonzero(_frame_peaks(audio) > 0.01 * 32768)
    return (on[-1] + 1 - on[0]) / 400

  audio, timings = _timed(f"{first}, {second}.", voice)
  for word, timing in zip((first, second), timings):
    alone = synthesize.to_16k(espeak.synthesize(f"{word}.", voice))
    assert timing.end - timing.start == pytest.approx(sounding_seconds(alone), abs=0.03), (word, timing)


def test_time_words_records_rather_than_guesses():
  # eSpeak NG reads the Czech "před nad" as one word: no start for "nad", so no timings at all.
  spoken = "vyjít před nad francouz."
  synthesis = espeak.synthesize_timed(spoken, "cs", phoneme_events=True)
  with pytest.raises(alignments.AlignmentError, match="nad"):
    alignments.time_words(spoken, "VYJÍT PŘED NAD FRANCOUZ", synthesis, 16000, len(synthesis.audio))
  synthesis = espeak.synthesize_timed("hello world.", "en")
  with pytest.raises(ValueError, match="phoneme_events=True"):
    alignments.time_words("hello world.", "HELLO WORLD", synthesis, 16000, len(synthesis.audio))
  synthesis = espeak.synthesize_timed("hello world.", "en", phoneme_events=True)
  with pytest.raises(ValueError, match="does not read as"):
    alignments.time_words("hello world.", "HELLO THERE", synthesis, 16000, len(synthesis.audio))


def test_time_speaker_refuses_a_replay_that_differs(tmp_path):
  speaker = corpus.Speaker(speaker_id=1000, language="en", variant="m1", pitch=50, rate=175, split="train")
  lexicon = text.build_lexicons(("en",))["en"]
  job = synthesize.SpeakerJob(speaker, lexicon, seconds=3.0, seed=0, split_dir=str(tmp_path))
  utterances = synthesize.synthesize_speaker(job)
  # Another seed draws other sentences: the replay cannot time this audio and must say so instead.
  timed = synthesize.time_speaker(dataclasses.replace(job, seed=1), utterances)
  assert [u.words for u in timed] == [None] * len(utterances)
  assert corpus.read_unaligned(tmp_path) == {u.utterance_id: u.alignment_error for u in timed}
  assert all("replay" in u.alignment_error for u in timed)
  with pytest.raises(FileNotFoundError, match="alignment"):
    corpus.read_word_alignments(tmp_path / "nowhere")


def test_read_word_alignments_from_any_level(tiny, tmp_path):
  out, _ = tiny
  everything = corpus.read_word_alignments(out)
  assert everything == {**corpus.read_word_alignments(out, "train"), **corpus.read_word_alignments(out, "dev"),
                        **corpus.read_word_alignments(out, "test")}
  chapter_file = sorted((out / "dev").glob("*/*/*.alignment.json"))[0]
  from_file = corpus.read_word_alignments(chapter_file)
  assert from_file and from_file == corpus.read_word_alignments(chapter_file.parent)
  assert from_file.items() <= corpus.read_word_alignments(chapter_file.parent.parent).items()
  broken = tmp_path / "1-100.alignment.json"
  broken.write_text('{"utterances": {}}', encoding="utf-8")
  with pytest.raises(ValueError, match="1-100.alignment.json"):
    corpus.read_word_alignments(broken)


def test_stored_audio_is_synthesised_without_phoneme_events(tmp_path):
  # Phoneme events change eSpeak NG's samples now and then (1 utterance in ~200); the first two of speaker 5012 in the
  # default corpus are such cases. Each pass runs in a fresh process, as the generator runs it.
  program = """if True:
    import hashlib, pathlib, sys
    from data_pipelines.corpus import build, synthesize
    _, jobs = build._jobs(build.CorpusConfig(), pathlib.Path(sys.argv[1]))
    job = next(j for j in jobs if j.speaker.speaker_id == 5012)
    if sys.argv[2] == "write":
      synthesize.synthesize_speaker(job)
      sys.exit()
    for _, (utt_id, _, _, _, audio) in zip(range(2), synthesize._kept_utterances(job, sys.argv[2] == "phonemes")):
      print(utt_id, hashlib.sha256(audio.tobytes()).hexdigest())
  """

  def run(mode):
    result = subprocess.run([sys.executable, "-c", program, str(tmp_path), mode], cwd=REPO, capture_output=True,
                            text=True, check=True)
    return dict(line.split() for line in result.stdout.splitlines())

  with_events = run("phonemes")
  without = run("plain")
  run("write")
  if with_events == without:
    pytest.skip("phoneme events no longer change these utterances: nothing to tell the passes apart")
  for utt_id, digest in without.items():
    speaker, chapter, _ = utt_id.split("-")
    audio, _ = sf.read(tmp_path / "train" / speaker / chapter / f"{utt_id}.flac", dtype="int16")
    assert hashlib.sha256(audio.tobytes()).hexdigest() == digest
