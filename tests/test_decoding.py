"""CTC decoders against brute force: greedy is the collapse of the single best frame path, the beam search returns
the most probable labellings (probability summed over all their paths) with their exact scores, and a language
model fixes a planted acoustic error."""

import collections
import itertools

import numpy as np
import pytest

from data_pipelines import storage
from data_pipelines.vocab import Vocab
from wav2vec_jax.inference import beam, decoding

SMALL = Vocab(("<pad>", "|", "A", "B"))
LETTERS = Vocab(("<pad>", "<s>", "</s>", "<unk>", "|") + tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ'"))
EXHAUSTIVE = beam.BeamOptions(beam_width=100_000, beam_prune_logp=-1e9, token_min_logp=-1e9)


def _brute_force(log_probs):
  """Every frame path: (best path, {labelling: log of its summed probability})."""
  frames, vocab = log_probs.shape
  totals = collections.defaultdict(lambda: -np.inf)
  best_path, best = None, -np.inf
  for path in itertools.product(range(vocab), repeat=frames):
    score = float(sum(log_probs[t, v] for t, v in enumerate(path)))
    if score > best:
      best_path, best = path, score
    label = tuple(int(x) for x in decoding.collapse(np.array(path)))
    totals[label] = np.logaddexp(totals[label], score)
  return np.array(best_path), totals


def _random_cases(n, max_frames=7):
  for seed in range(n):
    rng = np.random.default_rng(seed)
    frames = int(rng.integers(1, max_frames + 1))
    yield np.log(rng.dirichlet(np.full(SMALL.size, 0.7), size=frames))


def test_greedy_is_the_collapsed_best_path():
  for log_probs in _random_cases(40):
    best_path, _ = _brute_force(log_probs)
    (got,) = decoding.greedy_decode(log_probs[None].astype(np.float32), np.ones((1, len(log_probs)), bool))
    np.testing.assert_array_equal(got, decoding.collapse(best_path))
    # Padded frames (here: confident letters after the real ones) decode to nothing.
    padded = np.concatenate([log_probs, np.log(np.eye(log_probs.shape[1])[[1, 2, 1]] * 0.99 + 0.01 / 3)])
    mask = np.arange(len(padded)) < len(log_probs)
    (got_padded,) = decoding.greedy_decode(padded[None].astype(np.float32), mask[None])
    np.testing.assert_array_equal(got_padded, got)


def test_exhaustive_beam_search_returns_the_most_probable_labellings_with_their_probabilities():
  decoder = beam.BeamSearchDecoder(SMALL, options=EXHAUSTIVE, workers=1)
  for log_probs in _random_cases(60):
    _, totals = _brute_force(log_probs)
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])
    hyps = decoder.decode(log_probs, n_best=3)
    assert [tuple(h.labels) for h in hyps] == [label for label, _ in ranked[:3]]
    np.testing.assert_allclose([h.acoustic_score for h in hyps], [score for _, score in ranked[:3]], atol=1e-9)
    assert hyps[0].text == SMALL.decode(hyps[0].labels)


def test_a_labelling_with_more_paths_beats_the_best_single_path():
  # Frame 1 prefers blank, but "A" over two frames has three paths (AA, A_, _A) whose sum wins.
  log_probs = np.log(np.array([[0.4, 0.0, 0.35, 0.25], [0.4, 0.0, 0.35, 0.25]]) + 1e-12)
  best_path, totals = _brute_force(log_probs)
  assert decoding.collapse(best_path).size == 0  # greedy: blank, blank (0.16 against 0.35 * 0.35 for "AA")
  (hyp,) = beam.BeamSearchDecoder(SMALL, options=EXHAUSTIVE, workers=1).decode(log_probs)
  assert hyp.text == "A" and max(totals, key=totals.get) == (2,)  # 0.1225 + 2 * 0.14 = 0.4025


def _spell(text, rng, confusions=None):
  """Peaky CTC log-probs spelling `text`: each label one frame, blanks between; `confusions` maps a position in the
  label sequence to (other letter, its probability)."""
  ids = LETTERS.encode(text)
  rows = []
  for i, label in enumerate(ids):
    row = np.full(LETTERS.size, 1e-4)
    row[label] = 1.0
    if confusions and i in confusions:
      other, p = confusions[i]
      row[label], row[LETTERS.token_to_id(other)] = 1.0 - p, p
    rows.append(row / row.sum())
    blank = np.full(LETTERS.size, 1e-4)
    blank[0] = 1.0
    rows.append(blank / blank.sum())
  return np.log(np.array(rows) * rng.uniform(0.98, 1.0, size=(len(rows), LETTERS.size)))


ARPA = """\\data\\
ngram 1=7
ngram 2=6

\\1-grams:
-1.0\t<unk>\t0
-99\t<s>\t-0.3
-0.7\t</s>\t0
-0.6\tTHE\t-0.3
-0.8\tCAT\t-0.3
-0.8\tSAT\t-0.3
-0.9\tON\t-0.3

\\2-grams:
-0.1\t<s> THE
-0.1\tTHE CAT
-0.1\tCAT SAT
-0.2\tSAT ON
-0.4\tON THE
-0.3\tCAT </s>

\\end\\
"""


@pytest.fixture(name="lm_path")
def _lm_path(tmp_path):
  path = str(tmp_path / "lm.arpa")
  storage.write_text(path, ARPA)
  return path


def test_the_language_model_fixes_an_error_greedy_makes(lm_path):
  # "THE CAT SAT ON THE CAT": the acoustics prefer D over the T of SAT (0.6 vs 0.4).
  text = "THE CAT SAT ON THE CAT"
  position = len("THE|CAT|SA")
  log_probs = _spell(text, np.random.default_rng(0), {position: ("D", 0.6)})
  (greedy,) = decoding.greedy_decode(log_probs[None].astype(np.float32), np.ones((1, len(log_probs)), bool))
  assert LETTERS.decode(greedy) == "THE CAT SAD ON THE CAT"
  without_lm = beam.BeamSearchDecoder(LETTERS, workers=1).decode(log_probs)[0]
  assert without_lm.text == "THE CAT SAD ON THE CAT"
  with_lm = beam.BeamSearchDecoder(LETTERS, lm_path, beam.BeamOptions(lm_weight=1.0, word_score=0.0), workers=1)
  hyp = with_lm.decode(log_probs)[0]
  assert hyp.text == text
  # Word times: each label sits on frame 2i (20 ms a frame); "CAT" is labels 4..6 -> frames 8..12.
  assert [w.text for w in hyp.words] == text.split()
  assert hyp.words[1].start == pytest.approx(8 * 0.02) and hyp.words[1].end == pytest.approx(13 * 0.02)


def test_hotwords_fix_a_word_the_acoustics_misspell():
  log_probs = _spell("A ZEBRA", np.random.default_rng(1), {len("A|ZE"): ("P", 0.7)})
  plain = beam.BeamSearchDecoder(LETTERS, workers=1).decode(log_probs)[0]
  assert plain.text == "A ZEPRA"
  hot = beam.BeamSearchDecoder(LETTERS, options=beam.BeamOptions(hotwords=("ZEBRA",), hotword_weight=3.0), workers=1)
  assert hot.decode(log_probs)[0].text == "A ZEBRA"


def test_a_batch_decodes_in_parallel_on_one_reused_pool_as_one_by_one(lm_path):
  rng = np.random.default_rng(2)
  cases = [_spell(t, rng, {1: ("Q", 0.45)}) for t in ("THE CAT", "CAT SAT ON THE CAT", "ON THE", "SAT")]
  decoder = beam.BeamSearchDecoder(LETTERS, lm_path, workers=2)
  try:
    first = decoder.decode_batch(cases, n_best=2)
    pool = decoder._pool  # pylint: disable=protected-access
    assert pool is not None
    second = decoder.decode_batch(cases[::-1], n_best=2)
    assert decoder._pool is pool  # pylint: disable=protected-access
  finally:
    decoder.close()
  single = [beam.BeamSearchDecoder(LETTERS, lm_path, workers=1).decode(x, n_best=2) for x in cases]
  for got in (first, second[::-1]):
    assert [[h.text for h in hs] for hs in got] == [[h.text for h in hs] for hs in single]
    np.testing.assert_allclose([[h.score for h in hs] for hs in got], [[h.score for h in hs] for hs in single])


def test_bad_language_model_files_are_named(tmp_path):
  with pytest.raises(beam.LanguageModelError, match="missing.arpa: language model file not found"):
    beam.BeamSearchDecoder(LETTERS, str(tmp_path / "missing.arpa"))
  storage.write_text(str(tmp_path / "empty.arpa"), "")
  with pytest.raises(beam.LanguageModelError, match="empty.arpa: the language model file is empty"):
    beam.BeamSearchDecoder(LETTERS, str(tmp_path / "empty.arpa"))
  storage.write_text(str(tmp_path / "bad.arpa"), "\\data\\\nngram 1=3\n\n\\1-grams:\n-1.0 A\n")
  with pytest.raises(beam.LanguageModelError, match="bad.arpa: not a KenLM model"):
    beam.BeamSearchDecoder(LETTERS, str(tmp_path / "bad.arpa"))
  with pytest.raises(ValueError, match=r"log_probs must be \[frames, 32\]"):
    beam.BeamSearchDecoder(LETTERS, workers=1).decode(np.zeros((3, 4)))


def test_error_rates_are_corpus_level_edits_over_reference_words_and_characters():
  # Utterance 1: one substitution in 3 words; utterance 2: one deletion in 2 words. Corpus WER (1 + 1) / 5 = 0.4,
  # not the mean of the per-utterance rates ((1/3 + 1/2) / 2 = 0.417). Characters: "A B C" -> "A X C" is one
  # substitution in 5; "DD E" -> "DD" deletes " E" (2 of 4): (1 + 2) / 9.
  from wav2vec_jax.inference import scoring  # pylint: disable=g-import-not-at-top
  rates = scoring.error_rates(["A B C", "DD  E "], ["A X C", " DD"])
  assert rates["wer"] == pytest.approx(0.4) and rates["cer"] == pytest.approx(3 / 9)
  assert rates["utterances"] == 2.0
  with pytest.raises(ValueError, match="no empty reference"):
    scoring.error_rates(["A", " "], ["A", "B"])


def test_word_times_are_transformers_word_offsets(tmp_path):
  # transformers' Wav2Vec2CTCTokenizer(output_word_offsets=True) on the same frame paths: same words, and start / end
  # at its frame offsets x 20 ms (end exclusive), for random paths of blanks, delimiters, letters and repeats.
  transformers = pytest.importorskip("transformers")
  import json  # pylint: disable=g-import-not-at-top
  tokens = ["<pad>", "<s>", "</s>", "<unk>", "|", "A", "B", "L"]
  (tmp_path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
  tokenizer = transformers.Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"), word_delimiter_token="|")
  rng = np.random.default_rng(0)
  for _ in range(200):
    path = rng.choice([0, 0, 0, 4, 5, 6, 7], size=rng.integers(1, 30))
    theirs = [(w["word"], w["start_offset"] * 0.02, w["end_offset"] * 0.02)
              for w in tokenizer.decode(path, output_word_offsets=True)["word_offsets"]]
    ours = [(w.text, w.start, w.end) for w in decoding.words_from_runs(decoding.token_runs(path), tokens, "|", 0.02)]
    assert [w[0] for w in ours] == [w[0] for w in theirs], path
    np.testing.assert_allclose([w[1:] for w in ours], [w[1:] for w in theirs], atol=1e-9, err_msg=str(path))
