"""CTC forced alignment: the Viterbi path against brute force and an independent numpy DP, the checkpointed long-audio
mode against the full trellis, segments and times, out-of-vocabulary text, impossible transcripts, and the writers."""

import itertools
import json
import os
import re
import subprocess
import sys

import e2e  # tests/e2e.py
import flax.linen as nn
import jax
import numpy as np
import pytest
import soundfile as sf

import wav2vec_jax
from data_pipelines import audio, storage
from data_pipelines.vocab import Vocab
from wav2vec_jax.inference import alignment
from wav2vec_jax.inference import alignment_formats
from wav2vec_jax.inference.recognizer import Recognizer
from wav2vec_jax.models import Wav2Vec2ForCTC, get_variant

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

VOCAB = Vocab.from_transcripts(["HELLO WORLD HI YOU THE QUICK BROWN FOX"])


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return (x - np.log(np.exp(x).sum(-1, keepdims=True))).astype(np.float32)


def _collapse(path, blank=0):
  out = [p for i, p in enumerate(path) if p != blank and (i == 0 or p != path[i - 1])]
  return out


def _brute_force(lp, target):
  """Best path by enumerating every token sequence of the row's length: (score, path) or (-inf, None)."""
  best, best_path = -np.inf, None
  for path in itertools.product(range(lp.shape[1]), repeat=lp.shape[0]):
    if _collapse(path) == list(target):
      score = float(sum(lp[t, k] for t, k in enumerate(path)))
      if score > best:
        best, best_path = score, path
  return best, best_path


def _numpy_viterbi(lp, target):
  """Independent float64 DP over (label position, in-blank) pairs with its own backtracking: (score, tokens)."""
  frames, n = lp.shape[0], len(target)
  # score[t, j, b]: best log-prob of frames 0..t having emitted labels 0..j-1 (b=1: now in the blank after label
  # j-1, or before any label when j=0; b=0: now on label j-1).
  score = np.full((frames, n + 1, 2), -np.inf)
  back = {}
  score[0, 0, 1] = lp[0, 0]
  if n:
    score[0, 1, 0] = lp[0, target[0]]
  for t in range(1, frames):
    for j in range(n + 1):
      options = [(score[t - 1, j, 1], (j, 1))]
      if j:
        options.append((score[t - 1, j, 0], (j, 0)))
      best, prev = max(options, key=lambda o: o[0])
      score[t, j, 1], back[(t, j, 1)] = best + lp[t, 0], prev
      if j:
        options = [(score[t - 1, j, 0], (j, 0)), (score[t - 1, j - 1, 1], (j - 1, 1))]
        if j >= 2 and target[j - 1] != target[j - 2]:
          options.append((score[t - 1, j - 1, 0], (j - 1, 0)))
        best, prev = max(options, key=lambda o: o[0])
        score[t, j, 0], back[(t, j, 0)] = best + lp[t, target[j - 1]], prev
  end = max([(n, 1), (n, 0)] if n else [(0, 1)], key=lambda c: score[frames - 1][c])
  tokens, cell = [], end
  for t in range(frames - 1, -1, -1):
    tokens.append(0 if cell[1] else target[cell[0] - 1])
    if t:
      cell = back[(t,) + cell]
  return float(score[frames - 1][end]), tokens[::-1]


def _random_case(rng, batch, frames, vocab, max_labels, with_repeats=True):
  lp = _log_softmax(rng.normal(size=(batch, frames, vocab)) * 2)
  lengths = rng.integers(max(1, frames // 2), frames + 1, size=batch)
  lengths[0] = frames
  targets = np.ones((batch, max_labels), np.int32)
  target_lengths = np.zeros(batch, np.int32)
  for row in range(batch):
    while True:
      n = int(rng.integers(0, max_labels + 1))
      labels = rng.integers(1, vocab, size=n)
      if with_repeats and n >= 2 and row % 2:
        labels[1] = labels[0]
      if alignment.required_frames(labels) <= lengths[row]:
        break
    targets[row, :n], target_lengths[row] = labels, n
  return lp, lengths.astype(np.int32), targets, target_lengths


@pytest.mark.parametrize("vocab", [2, 3, 4])
def test_viterbi_equals_brute_force_over_all_paths(vocab):
  rng = np.random.default_rng(vocab)
  lp, lengths, targets, target_lengths = _random_case(rng, 12, 7, vocab, 4)
  # Fixed cases with repeats: a blank must separate equal neighbours ([1, 1] needs 3 frames, [1, 1, 1] 5).
  lengths[:3], target_lengths[:3] = 7, (2, 3, 3)
  targets[:3, :3] = [[1, 1, 1], [1, 1, 1], [1, vocab - 1, 1]]
  path = jax.device_get(alignment.forced_align(lp, lengths, targets, target_lengths))
  for row in range(len(lp)):
    n, target = lengths[row], targets[row, :target_lengths[row]]
    want_score, want_path = _brute_force(lp[row, :n], target)
    assert path.score[row] == pytest.approx(want_score, abs=1e-4), row
    assert list(path.tokens[row, :n]) == list(want_path), row
    assert (path.tokens[row, n:] == -1).all() and (path.label_index[row, n:] == -1).all()
    assert path.frame_log_probs[row, :n].sum() == pytest.approx(want_score, abs=1e-4)


def test_viterbi_equals_numpy_dp_on_a_larger_batch_and_the_checkpointed_search_equals_it_exactly():
  rng = np.random.default_rng(0)
  lp, lengths, targets, target_lengths = _random_case(rng, 4, 200, 12, 40)
  target_lengths[0] = 40  # the longest row fills the padded targets
  targets[0] = rng.integers(1, 12, size=40)
  full = jax.device_get(alignment.forced_align(lp, lengths, targets, target_lengths))
  for row in range(4):
    n, target = lengths[row], targets[row, :target_lengths[row]]
    want_score, want_tokens = _numpy_viterbi(lp[row, :n].astype(np.float64), target)
    assert full.score[row] == pytest.approx(want_score, abs=1e-3)
    np.testing.assert_array_equal(full.tokens[row, :n], want_tokens)
    # label_index counts labels along the path: the collapsed path is the target.
    labels = full.label_index[row, :n]
    spoken = labels[labels >= 0]
    np.testing.assert_array_equal(np.unique(spoken), np.arange(target_lengths[row]))
    assert (np.diff(spoken) >= 0).all()
  for block in (1, 7, 64, 199, 200, 1000):  # block sizes that split rows mid-way, equal the length, exceed it
    blocked = jax.device_get(alignment.forced_align(lp, lengths, targets, target_lengths, block_frames=block))
    for field in ("states", "label_index", "tokens", "frame_log_probs", "score"):
      np.testing.assert_array_equal(getattr(blocked, field), getattr(full, field), err_msg=f"{field}, block {block}")


def test_forced_align_jits_inside_another_function_and_compiles_once_per_shape():
  rng = np.random.default_rng(1)
  lp, lengths, targets, target_lengths = _random_case(rng, 3, 30, 6, 8)
  direct = alignment.forced_align(lp, lengths, targets, target_lengths)
  inner = jax.jit(lambda *a: alignment.forced_align(*a).states)(lp, lengths, targets, target_lengths)
  np.testing.assert_array_equal(inner, direct.states)
  frame_mask = np.arange(30)[None] < lengths[:, None]
  np.testing.assert_array_equal(alignment.forced_align(lp, frame_mask, targets, target_lengths).states, direct.states)
  before = alignment._viterbi._cache_size()  # pylint: disable=protected-access
  for seed in range(3):
    alignment.forced_align(*_random_case(np.random.default_rng(seed), 3, 30, 6, 8))
  assert alignment._viterbi._cache_size() == before  # pylint: disable=protected-access


def test_checkpointed_search_needs_far_less_memory_than_the_full_trellis():
  frames, labels = 4000, 1000
  args = (jax.ShapeDtypeStruct((1, frames, 8), np.float32), jax.ShapeDtypeStruct((1,), np.int32),
          jax.ShapeDtypeStruct((1, labels), np.int32), jax.ShapeDtypeStruct((1,), np.int32))
  block = alignment.auto_block_frames(frames, 2 * labels + 1, max_trellis_bytes=1 << 20)
  assert block == int(2 * np.sqrt(frames))
  assert alignment.auto_block_frames(frames, 2 * labels + 1) is None  # 8 MB of pointers fit the default budget

  def temp_bytes(block_frames):
    compiled = alignment._viterbi.lower(*args, 0, block_frames).compile()  # pylint: disable=protected-access
    return compiled.memory_analysis().temp_size_in_bytes

  full, blocked = temp_bytes(None), temp_bytes(block)
  assert full >= frames * (2 * labels + 1)  # the int8 pointers of every frame
  assert blocked < full / 4, (blocked, full)  # checkpoints + one block of pointers + the log-probs


def _peaked(path_tokens, vocab_size, peak=6.0, seed=0):
  """Log-probs whose best path is `path_tokens` (noise below a peak on the path's token)."""
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(len(path_tokens), vocab_size))
  logits[np.arange(len(path_tokens)), path_tokens] += peak
  return _log_softmax(logits)


def _frame_path(spans, frames):
  """[(token, start, end)] -> per-frame token ids, blank elsewhere."""
  path = np.zeros(frames, np.int64)
  for token, start, end in spans:
    path[start:end] = token
  return path


def test_segments_times_and_scores_follow_the_frames():
  ids = VOCAB.token_to_id
  spans = [(ids("H"), 3, 5), (ids("I"), 6, 7), (ids("|"), 9, 10), (ids("Y"), 20, 22), (ids("O"), 22, 23),
           (ids("U"), 25, 28), (ids("|"), 29, 30)]
  lp = _peaked(_frame_path(spans, 40), VOCAB.size)
  result = alignment.align(lp, "hi you", VOCAB, name="u1")
  assert [w.label for w in result.words] == ["HI", "YOU"]
  assert [(w.start_frame, w.end_frame) for w in result.words] == [(3, 7), (20, 28)]
  assert [(w.start, w.end) for w in result.words] == [(0.06, 0.14), (0.4, 0.56)]
  assert [(c.label, c.start_frame, c.end_frame) for c in result.chars] == [
      ("H", 3, 5), ("I", 6, 7), ("Y", 20, 22), ("O", 22, 23), ("U", 25, 28)]
  probs = np.exp(lp)
  assert result.chars[0].score == pytest.approx(probs[[3, 4], ids("H")].mean(), rel=1e-5)
  assert result.words[1].score == pytest.approx(
      np.mean([probs[t, k] for k, a, b in spans[3:6] for t in range(a, b)]), rel=1e-5)
  assert result.num_frames == 40 and result.duration == 0.8 and result.utterance == "u1"
  assert result.log_prob == pytest.approx(lp[np.arange(40), _frame_path(spans, 40)].sum(), abs=1e-3)


def test_batch_alignment_equals_one_at_a_time_and_the_checkpointed_search():
  rng = np.random.default_rng(3)
  texts = ["HELLO WORLD", "THE QUICK BROWN FOX", "HI"]
  lps = [_log_softmax(rng.normal(size=(n, VOCAB.size)) * 3) for n in (50, 90, 12)]
  batch = alignment.align_batch(lps, texts, VOCAB, names=["a", "b", "c"])
  blocked = alignment.align_batch(lps, texts, VOCAB, names=["a", "b", "c"], max_trellis_bytes=100)
  for lp, text, name, got, got_blocked in zip(lps, texts, "abc", batch, blocked):
    assert got == alignment.align(lp, text, VOCAB, name=name) == got_blocked
    assert " ".join(w.label for w in got.words) == text


def test_text_is_normalised_and_out_of_vocabulary_characters_align_through_the_star():
  t = alignment.encode_transcript("  hello,\tWÖRLD 42 — fox! ", VOCAB)
  assert t.words == ("HELLO", "WÖRLD", "42", "FOX")
  assert t.oov_words == (1, 2)
  # "42" is one star (a run of unknown characters), not two stars that would need a blank between them.
  assert [s for s, star in zip(t.symbols, t.star) if star] == ["Ö", "42"]
  assert (t.labels[t.star] == VOCAB.size).all() and (t.labels[~t.star] < VOCAB.size).all()
  np.testing.assert_array_equal(alignment.encode_transcript("hello, fox!", VOCAB).labels, VOCAB.encode("HELLO FOX"))

  lp = _log_softmax(np.random.default_rng(0).normal(size=(5, 7, VOCAB.size)))
  star = np.asarray(alignment.with_star_column(lp))
  np.testing.assert_array_equal(star[..., :-1], lp)
  np.testing.assert_array_equal(star[..., -1], lp[..., 1:].max(-1))

  ids = VOCAB.token_to_id
  # The model "hears" Ö as E on frames 12..14: the star takes exactly those frames.
  spans = [(ids(c), 2 * i, 2 * i + 1) for i, c in enumerate("HELLO|W")] + [(ids("E"), 16, 19)] + [
      (ids(c), 20 + 2 * i, 21 + 2 * i) for i, c in enumerate("RLD|")]
  lp = _peaked(_frame_path(spans, 30), VOCAB.size)
  result = alignment.align(lp, "Hello wörld", VOCAB)
  umlaut = [c for c in result.chars if c.oov]
  assert [(c.label, c.start_frame, c.end_frame) for c in umlaut] == [("Ö", 16, 19)]
  assert [w.oov for w in result.words] == [False, True]
  assert (result.words[1].start_frame, result.words[1].end_frame) == (12, 25)  # W .. D


def test_text_takes_the_unicode_form_the_vocabulary_was_built_in():
  import unicodedata  # pylint: disable=g-import-not-at-top
  from data_pipelines.vocab import Vocab  # pylint: disable=g-import-not-at-top
  for form in ("NFC", "NFD"):
    vocab = Vocab.from_transcripts([unicodedata.normalize(form, "CAFÉ NOËL")])
    for text in ("Café Noël", unicodedata.normalize("NFD", "Café Noël")):  # either form of the text
      t = alignment.encode_transcript(text, vocab)
      assert not t.oov_words and not t.star.any(), (form, text)
      np.testing.assert_array_equal(t.labels, vocab.encode(unicodedata.normalize(form, "CAFÉ NOËL")))


def test_impossible_transcripts_fail_naming_the_utterance_frames_and_labels():
  lp = _log_softmax(np.random.default_rng(0).normal(size=(3, VOCAB.size)))
  # "LL": L, L, | = 3 labels but 4 frames (a blank between the two L).
  with pytest.raises(alignment.AlignmentError, match=r"clip7\.wav: transcript of 3 labels .* at least 4 frames .* "
                     r"has 3 frames"):
    alignment.align(lp, "LL", VOCAB, name="clip7.wav")
  assert alignment.align(np.concatenate([lp, lp[:1]]), "LL", VOCAB).chars[1].start_frame == 2
  with pytest.raises(alignment.AlignmentError, match="row 1: .* 5 labels"):
    alignment.forced_align(lp[None].repeat(2, 0), [3, 3], [[1, 2, 0, 0, 0], [1, 2, 3, 1, 2]], [2, 5])
  with pytest.raises(alignment.AlignmentError, match="row 0: label id 0 is the blank"):
    alignment.forced_align(lp[None], [3], [[0]], [1])
  with pytest.raises(alignment.AlignmentError, match="u: the transcript is empty"):
    alignment.align(lp, " — ", VOCAB, name="u")
  minus_inf = np.full_like(lp, -np.inf)
  minus_inf[:, 0] = 0.0
  with pytest.raises(alignment.AlignmentError, match="no alignment has a finite log-probability"):
    alignment.align(minus_inf, "HI", VOCAB)


def _parse_textgrid(text):
  """Tier name -> [(xmin, xmax, text)] from Praat's long text format (written independently of the writer)."""
  tiers = {}
  for block in re.split(r"\n    item \[\d+\]:\n", text)[1:]:
    name = re.search(r'name = "(.*)"', block).group(1)
    intervals = re.findall(r'intervals \[\d+\]:\n\s+xmin = (\S+)\n\s+xmax = (\S+)\n\s+text = "((?:[^"]|"")*)"', block)
    count = int(re.search(r"intervals: size = (\d+)", block).group(1))
    assert count == len(intervals)
    tiers[name] = [(float(a), float(b), t.replace('""', '"')) for a, b, t in intervals]
  return tiers


def test_writers_produce_files_that_parse_back(tmp_path):
  rng = np.random.default_rng(5)
  results = alignment.align_batch([_log_softmax(rng.normal(size=(n, VOCAB.size)) * 3) for n in (60, 40)],
                                  ['"hello" wö"rld', "HI YOU"], VOCAB, names=["one", "two"])
  paths = {fmt: str(tmp_path / f"out.{fmt}") for fmt in alignment_formats.FORMATS}
  for fmt, path in paths.items():
    assert alignment_formats.write_alignments(results, path if fmt != "textgrid" else str(tmp_path / "grids"),
                                              fmt)
  doc = json.loads((tmp_path / "out.json").read_text())
  assert [u["utterance"] for u in doc["utterances"]] == ["one", "two"]
  for u, a in zip(doc["utterances"], results):
    assert [(w["label"], w["start"], w["end"], w["oov"]) for w in u["words"]] == [
        (w.label, w.start, w.end, w.oov) for w in a.words]
    assert [c["label"] for c in u["chars"]] == [c.label for c in a.chars]

  rows = [line.split() for line in (tmp_path / "out.ctm").read_text().splitlines()]
  words = [(a.utterance, w) for a in results for w in a.words]
  assert len(rows) == len(words) == 4
  for row, (utt, w) in zip(rows, words):
    assert len(row) == 6 and row[0] == utt and row[1] == "1" and row[4] == w.label
    assert float(row[2]) == pytest.approx(w.start) and float(row[3]) == pytest.approx(w.end - w.start)
    assert 0 <= float(row[5]) <= 1 and float(row[5]) == pytest.approx(w.score, abs=1e-4)

  for a in results:
    tiers = _parse_textgrid((tmp_path / "grids" / f"{a.utterance}.TextGrid").read_text())
    assert list(tiers) == ["words", "chars"]
    for name, segments in (("words", a.words), ("chars", a.chars)):
      intervals = tiers[name]
      assert intervals[0][0] == 0 and intervals[-1][1] == pytest.approx(a.duration)
      assert all(prev[1] == nxt[0] for prev, nxt in zip(intervals, intervals[1:]))  # contiguous, as Praat needs
      assert [(s, e, t) for s, e, t in intervals if t] == [(x.start, x.end, x.label) for x in segments]
  single = tmp_path / "one.TextGrid"
  alignment_formats.write_alignments(results[:1], str(single), "textgrid")
  assert _parse_textgrid(single.read_text())["words"] == _parse_textgrid(
      (tmp_path / "grids" / "one.TextGrid").read_text())["words"]


@pytest.fixture(scope="module", name="checkpoint")
def _checkpoint(tmp_path_factory):
  """A tiny random CTC model saved with its vocab.json, and two short recordings."""
  root = tmp_path_factory.mktemp("align")
  model = Wav2Vec2ForCTC(get_variant("tiny", vocab_size=VOCAB.size))
  variables = nn.unbox(model.init(jax.random.PRNGKey(0), np.zeros((1, 16000), np.float32)))
  directory = str(root / "model")
  wav2vec_jax.save_pretrained(directory, model, variables)
  VOCAB.save_hf(storage.join(directory, "vocab.json"))
  rng = np.random.default_rng(0)
  files = []
  for i, seconds in enumerate((1.5, 2.2)):
    path = str(root / f"clip{i}.{'wav' if i else 'flac'}")
    sf.write(path, (0.1 * rng.normal(size=int(seconds * 16000))).astype(np.float32), 16000)
    files.append(path)
  return directory, files


def _align_cli(*args):
  return subprocess.run([sys.executable, os.path.join(REPO, "experiments", "align.py"), *args], cwd=REPO,
                        capture_output=True, text=True, check=False, timeout=600,
                        env=dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=e2e.xla_flags()))


@pytest.mark.slow
def test_the_entry_point_aligns_files_to_texts_and_transcript_files(checkpoint, tmp_path):
  directory, files = checkpoint
  text_file = tmp_path / "clip1.txt"
  text_file.write_text("the quick,\nbrown fox\n")
  out = tmp_path / "out.json"
  result = _align_cli(f"--checkpoint={directory}", f"--audio={','.join(files)}", "--transcript=Hello world",
                      f"--transcript={text_file}", f"--out={out}", "--format=json")
  assert result.returncode == 0, result.stderr[-3000:]
  got = json.loads(out.read_text())["utterances"]
  recognizer = Recognizer.from_pretrained(directory)
  for row, path, text in zip(got, files, ["HELLO WORLD", "THE QUICK BROWN FOX"]):
    want = alignment.align(recognizer.log_probs(audio.load_waveform(path)), text, VOCAB, name=row["utterance"])
    assert row["utterance"] == storage.Path(path).stem
    assert [(w["label"], w["start"], w["end"]) for w in row["words"]] == [(w.label, w.start, w.end) for w in want.words]
    assert row["duration"] == want.duration == recognizer.num_frames(sf.info(path).frames) * 0.02


@pytest.mark.slow
def test_the_entry_point_stops_on_bad_input_with_one_line(checkpoint, tmp_path):
  directory, files = checkpoint
  garbage = tmp_path / "garbage.wav"
  garbage.write_bytes(b"RIFF not really a wave file" * 10)
  cases = [
      ([f"--checkpoint={directory}", f"--audio={garbage}", "--transcript=HI"], f"AudioInputError: {garbage}"),
      ([f"--checkpoint={directory}", f"--audio={files[0]}", "--transcript=" + "HELLO WORLD " * 10],
       "AlignmentError: clip0: transcript of 120 labels"),
      ([f"--checkpoint={tmp_path / 'nothing'}", f"--audio={files[0]}", "--transcript=HI"], "nothing"),
      ([f"--checkpoint={directory}", f"--audio={files[0]}", f"--transcript={tmp_path / 'missing.txt'}"],
       "missing.txt: transcript file not found"),
  ]
  for args, message in cases:
    result = _align_cli(*args)
    assert result.returncode == 1 and "stopped: " in result.stderr and message in result.stderr, (
        args, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
