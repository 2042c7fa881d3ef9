"""The n-gram LM builder: KenLM reads its ARPA files, and the probabilities it gets from them are those of an
independent, direct implementation of interpolated modified Kneser-Ney; every history's distribution sums to 1;
hand-derived small cases; bad input."""

import collections
import math
import os
import pathlib
import subprocess
import sys

import kenlm  # an install requirement (setup.py): no skip, the tests must run
import numpy as np
import pytest

from data_pipelines import ngram
from data_pipelines.vocab import Vocab
from wav2vec_jax.inference import beam

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOS, EOS, UNK = "<s>", "</s>", "<unk>"


def _markov_corpus(seed: int, sentences: int = 100, vocab: int = 40) -> list[str]:
  """Sentences from a random Markov chain over Zipf-distributed words: repeated n-grams of every order, so that
  count-of-counts define the discounts at most orders, and rare words as well."""
  rng = np.random.default_rng(seed)
  zipf = 1 / np.arange(1, vocab + 1) ** 1.1
  zipf /= zipf.sum()
  trans = 0.5 * rng.dirichlet(np.full(vocab, 0.1), size=vocab) + 0.5 * zipf
  out = []
  for _ in range(sentences):
    w, words = rng.choice(vocab, p=zipf), []
    for _ in range(rng.integers(1, 9)):
      words.append(f"W{w}")
      w = rng.choice(vocab, p=trans[w])
    out.append(" ".join(words))
  return out


class ReferenceKN:
  """Interpolated modified Kneser-Ney straight from its definition (Chen & Goodman 1998, as lmplz estimates it),
  evaluated per query by recursion over raw n-gram counts of the padded text; shares nothing with `ngram`."""

  def __init__(self, sentences, order, fallback=(0.5, 1.0, 1.5)):
    self.order, self.fallback = order, fallback
    self.raw = collections.Counter()
    for s in sentences:
      t = [BOS] + s.split() + [EOS]
      for n in range(1, order + 1):
        for i in range(len(t) - n + 1):
          self.raw[tuple(t[i:i + n])] += 1
    self.vocab = sorted({g[0] for g in self.raw if len(g) == 1} - {BOS}) + [UNK]  # what the model predicts
    self._memo = {}

  def adjusted(self, g):
    """Raw count at the top order and after <s>; else the number of distinct words seen before g."""
    if len(g) == self.order or g[0] == BOS:
      return self.raw[g]
    if g not in self._memo:
      self._memo[g] = sum(1 for v in [BOS] + self.vocab if self.raw[(v,) + g] > 0)
    return self._memo[g]

  def discounts(self, n):
    key = ("D", n)
    if key not in self._memo:
      t = collections.Counter(self.adjusted(g) for g in self.raw if len(g) == n and g[-1] != BOS)
      if all(t[k] for k in (1, 2, 3)):
        y = t[1] / (t[1] + 2 * t[2])
        d = [k - (k + 1) * y * t[k + 1] / t[k] for k in (1, 2, 3)]
        self._memo[key] = d if all(0 <= d[k - 1] <= k for k in (1, 2, 3)) else list(self.fallback)
      else:
        self._memo[key] = list(self.fallback)
    return self._memo[key]

  def prob(self, word, history):
    """p(word | history), history the preceding words (with <s>), cut to the last order-1."""
    word = word if word in self.vocab else UNK
    history = tuple(history)[max(0, len(history) - self.order + 1):]
    lower = self.prob(word, history[1:]) if history else 1 / len(self.vocab)
    counts = {v: self.adjusted(history + (v,)) for v in self.vocab}
    total = sum(counts.values())
    if total == 0:  # a history never seen as a context: all of the mass comes from the shorter one
      return lower
    d = self.discounts(len(history) + 1)
    disc = lambda c: d[min(c, 3) - 1] if c else 0.0  # noqa: E731
    gamma = sum(disc(c) for c in counts.values()) / total
    return (counts[word] - disc(counts[word])) / total + gamma * lower

  def sentence_log10(self, sentence):
    words = sentence.split() + [EOS]
    return [math.log10(self.prob(w, [BOS] + words[:i])) for i, w in enumerate(words)]


def _parse_arpa(path):
  """{order: {ngram tuple: (log10 prob, log10 backoff or None)}} and the header counts."""
  header, sections, order = {}, collections.defaultdict(dict), None
  for line in pathlib.Path(path).read_text(encoding="utf-8").splitlines():
    if line.startswith("ngram "):
      n, c = line[len("ngram "):].split("=")
      header[int(n)] = int(c)
    elif line.startswith("\\") and line.endswith("-grams:"):
      order = int(line[1:-len("-grams:")])
    elif line and order and not line.startswith("\\"):
      fields = line.split("\t")
      sections[order][tuple(fields[1].split(" "))] = (float(fields[0]), float(fields[2]) if len(fields) > 2 else None)
  return header, dict(sections)


def _arpa_log10(entries, order, word, history):
  """log10 p(word | history) by the ARPA backoff rule, from parsed entries."""
  history = tuple(history)[max(0, len(history) - order + 1):]
  word = word if (word,) in entries[1] else UNK
  for start in range(len(history) + 1):
    gram = history[start:] + (word,)
    if gram in entries[len(gram)]:
      backoff = 0.0
      for s in range(start):  # the backoffs of the longer contexts skipped
        context = history[s:]
        if context in entries.get(len(context), {}):
          backoff += entries[len(context)][context][1] or 0.0
      return backoff + entries[len(gram)][gram][0]
  raise AssertionError(f"no unigram for {word}")


def _build(tmp_path, sentences, order, **kwargs):
  path = str(tmp_path / f"lm{order}.arpa")
  model = ngram.write_arpa(sentences, path, order, **kwargs)
  return model, path, kenlm.Model(path)


@pytest.mark.parametrize("seed", [0, 2])
@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_kenlm_scores_match_a_direct_kneser_ney_implementation(tmp_path, seed, order):
  train = _markov_corpus(seed)
  model, path, lm = _build(tmp_path, train, order)
  # Both paths: seed 0 has discounts estimated at orders 1-4, seed 2 falls back at order 1 (and at others).
  assert set(model.fallback_orders) <= {5} if seed == 0 else 1 in model.fallback_orders
  ref = ReferenceKN(train, order)
  for n in range(1, order + 1):
    np.testing.assert_allclose(model.discounts[n - 1], ref.discounts(n), rtol=1e-12)
  _, entries = _parse_arpa(path)
  held_out = _markov_corpus(seed + 100, sentences=15) + ["W1 NEVERSEEN W2 W3", "W39 W0 W0 W0 W0 W0 W0 W0"]
  for sentence in train[:25] + held_out:
    expected = ref.sentence_log10(sentence)
    got = [score for score, _, _ in lm.full_scores(sentence)]
    np.testing.assert_allclose(got, expected, atol=2e-5, err_msg=sentence)
    words = sentence.split() + [EOS]
    from_file = [_arpa_log10(entries, order, w, [BOS] + words[:i]) for i, w in enumerate(words)]
    np.testing.assert_allclose(from_file, expected, atol=2e-5, err_msg=sentence)
    assert lm.score(sentence) == pytest.approx(sum(expected), abs=1e-4)


def _state_after(lm, history):
  state = kenlm.State()
  if history and history[0] == BOS:
    lm.BeginSentenceWrite(state)
    history = history[1:]
  else:
    lm.NullContextWrite(state)
  for w in history:
    out = kenlm.State()
    lm.BaseScore(state, w, out)
    state = out
  return state


@pytest.mark.parametrize("order", [2, 3, 4])
def test_every_history_distribution_sums_to_one(tmp_path, order):
  _, path, lm = _build(tmp_path, _markov_corpus(3), order)
  _, entries = _parse_arpa(path)
  vocab = [g[0] for g in entries[1] if g[0] != BOS]
  histories = [()] + [g for n in range(1, order) for g in entries[n] if g[-1] != EOS]
  histories += [("W5", "W5", "W5")[:order - 1], (BOS, "W39", "W0")[:order - 1], ("NEVERSEEN",)]  # unseen ones too
  assert len(histories) > 40 * (order - 1)  # not a vacuous loop
  for history in histories:
    state = _state_after(lm, list(history))
    total = sum(10 ** lm.BaseScore(state, w, kenlm.State()) for w in vocab)
    assert total == pytest.approx(1.0, abs=1e-4), history


def test_hand_derived_bigram_model():
  # Unigrams have continuation counts: W follows <s>, Z, X (3); Z follows <s>, Y (2); X, Y follow <s> (1 each);
  # </s> follows W, Z, X, Y (4). t1..t4 = 2, 1, 1, 1: Y = 2 / (2 + 2 x 1) = 1/2, D1 = 1 - 2 Y 1/2 = 1/2,
  # D2 = 2 - 3 Y 1/1 = 1/2, D3+ = 3 - 4 Y 1/1 = 1; total 11, gamma = (2 D1 + 1 D2 + 2 D3+) / 11 = 3.5/11 spread over
  # |V| = 6 (W, Z, X, Y, </s>, <unk>): p(W) = (3 - 1)/11 + 3.5/66 = 15.5/66, p(Z) = 12.5/66, p(X) = p(Y) = 6.5/66,
  # p(</s>) = 21.5/66, p(<unk>) = 3.5/66.
  # Bigrams (raw): <s> X, <s> Y 2; W </s> 3; 8 others 1: t1..t4 = 8, 2, 1, 0, Y = 8/12 = 2/3, D1 = 1 - 2 Y 2/8 = 2/3,
  # D2 = 2 - 3 Y 1/2 = 1, D3+ = 3 - 0 = 3. Context <s> (W 1, Z 1, X 2, Y 2): total 6, gamma = (2 D1 + 2 D2)/6 = 5/9;
  # context X (W 1, </s> 1): gamma = 2 D1 / 2 = 2/3; context W (</s> 3): gamma = D3+/3 = 1, p(</s>|W) = p(</s>).
  sentences = ["W", "Z W", "X W", "Y Z", "X", "Y"]
  model = ngram.estimate(sentences, 2, discount_fallback=None)
  np.testing.assert_allclose(model.discounts, [(0.5, 0.5, 1.0), (2 / 3, 1.0, 3.0)], atol=1e-12)
  uni = {"W": 15.5 / 66, "Z": 12.5 / 66, "X": 6.5 / 66, "Y": 6.5 / 66, EOS: 21.5 / 66, UNK: 3.5 / 66}
  got = {model.words[g[0]]: p for g, p in model.log_probs[0].items()}
  assert got == pytest.approx({BOS: -99.0, **{w: math.log10(p) for w, p in uni.items()}}, abs=1e-12)
  ids = {w: i for i, w in enumerate(model.words)}
  bigram = lambda a, b: model.log_probs[1][(ids[a], ids[b])]  # noqa: E731
  assert bigram(BOS, "X") == pytest.approx(math.log10((2 - 1) / 6 + 5 / 9 * uni["X"]), abs=1e-12)
  assert bigram(BOS, "W") == pytest.approx(math.log10((1 - 2 / 3) / 6 + 5 / 9 * uni["W"]), abs=1e-12)
  assert bigram("X", "W") == pytest.approx(math.log10((1 - 2 / 3) / 2 + 2 / 3 * uni["W"]), abs=1e-12)
  assert bigram("W", EOS) == pytest.approx(math.log10(uni[EOS]), abs=1e-12)
  backoffs = {model.words[g[0]]: b for g, b in model.log_backoffs[0].items()}
  assert backoffs == pytest.approx({BOS: math.log10(5 / 9), "X": math.log10(2 / 3), "W": 0.0,
                                    "Z": math.log10((2 / 3 + 2 / 3) / 2), "Y": math.log10((2 / 3 + 2 / 3) / 2)})


def test_hand_derived_bigram_model_with_fallback_discounts(tmp_path):
  # "A B", "A": bigrams <s> A (2), A B, B </s>, A </s> (1 each). Unigram adjusted counts are continuation counts:
  # A 1 ({<s>}, though A occurs twice), B 1, </s> 2. Neither order has a count 3: fallback D = 0.5, 1, 1.5.
  # Unigrams: total 4, gamma = (2 x 0.5 + 1 x 1) / 4 = 1/2, uniform 1/4 (A, B, </s>, <unk>): p(A) = p(B) =
  # 0.5/4 + 1/8 = 1/4, p(</s>) = 1/4 + 1/8 = 3/8, p(<unk>) = 1/8.
  # Bigrams: p(A|<s>) = (2 - 1)/2 + 1/2 x 1/4 = 5/8; p(B|A) = 0.5/2 + 1/2 x 1/4 = 3/8; p(</s>|A) = 1/4 + 1/2 x 3/8
  # = 7/16; p(</s>|B) = 0.5 + 1/2 x 3/8 = 11/16; the backoffs of <s>, A and B are all 1/2.
  model, path, lm = _build(tmp_path, ["A B", "A"], 2)
  assert model.fallback_orders == (1, 2) and model.discounts == ((0.5, 1.0, 1.5),) * 2
  header, entries = _parse_arpa(path)
  assert header == {1: 5, 2: 4}
  want_1 = {(UNK,): 1 / 8, ("A",): 1 / 4, ("B",): 1 / 4, (EOS,): 3 / 8}
  want_2 = {(BOS, "A"): 5 / 8, ("A", "B"): 3 / 8, ("A", EOS): 7 / 16, ("B", EOS): 11 / 16}
  for want, n in ((want_1, 1), (want_2, 2)):
    assert {g: p for g, (p, _) in entries[n].items() if g != (BOS,)} == pytest.approx(
        {g: math.log10(p) for g, p in want.items()}, abs=1e-6)
  assert {g[0]: b for g, (_, b) in entries[1].items()} == pytest.approx(
      {BOS: math.log10(0.5), "A": math.log10(0.5), "B": math.log10(0.5), EOS: 0.0, UNK: 0.0}, abs=1e-6)
  assert lm.score("A B") == pytest.approx(math.log10(5 / 8 * 3 / 8 * 11 / 16), abs=1e-6)
  assert lm.score("B") == pytest.approx(math.log10(1 / 2 * 1 / 4 * 11 / 16), abs=1e-6)  # via the <s> backoff
  with pytest.raises(ngram.NgramError, match=r"1-grams: no 1-grams with adjusted count 3.*discount_fallback"):
    ngram.estimate(["A B", "A"], 2, discount_fallback=None)


def test_arpa_layout_for_kenlm(tmp_path):
  model, path, lm = _build(tmp_path, _markov_corpus(1), 3)
  header, entries = _parse_arpa(path)
  assert lm.order == 3 and header == {n: len(entries[n]) for n in (1, 2, 3)} == dict(enumerate(model.ngram_counts, 1))
  assert {(UNK,), (BOS,), (EOS,)} <= set(entries[1]) and entries[1][(BOS,)][0] == -99.0
  for n in (1, 2, 3):
    for gram, (prob, backoff) in entries[n].items():
      assert prob <= 0 and (backoff is None) == (n == 3)  # a backoff column below the top order, as lmplz writes
      if n > 1:  # KenLM needs the prefix and suffix of every n-gram
        assert gram[:-1] in entries[n - 1] and gram[1:] in entries[n - 1]


def test_beam_search_with_the_lm_prefers_words_it_knows(tmp_path):
  _, path, _ = _build(tmp_path, ["THE CAT SAT", "THE CAT RAN", "A CAT SAT", "THE DOG RAN"] * 3, 2)
  vocab = Vocab(("<pad>", "|", "A", "C", "E", "H", "K", "T"))
  frames = ["T", "H", "E", "|", "CK", "A", "T"]  # "C" and "K" about equally likely, K slightly ahead
  probs = np.full((len(frames), vocab.size), 1e-4)
  for i, f in enumerate(frames):
    for ch, p in (("K", 0.52), ("C", 0.47)) if f == "CK" else ((f, 0.99),):
      probs[i, vocab.token_to_id(ch)] = p
  log_probs = np.log(probs / probs.sum(1, keepdims=True))
  assert beam.BeamSearchDecoder(vocab, workers=1).decode(log_probs)[0].text == "THE KAT"
  with_lm = beam.BeamSearchDecoder(vocab, path, beam.BeamOptions(lm_weight=1.0, word_score=0.0), workers=1)
  assert with_lm.decode(log_probs)[0].text == "THE CAT"


def test_reads_transcript_files_and_corpus_splits(tmp_path):
  chapter = tmp_path / "corpus" / "train" / "1001" / "100101"
  chapter.mkdir(parents=True)
  (chapter / "1001-100101.trans.txt").write_text("1001-100101-0000 HELLO WORLD\n1001-100101-0001 GOOD DAY\n")
  (tmp_path / "train.ltr").write_text("H I | Y O U |\nO K |\n")
  (tmp_path / "train.tsv").write_text("/root\na.flac\t16000\nb.flac\t16000\n")
  (tmp_path / "lower.txt").write_text("hello there\n\n")
  assert ngram.read_sentences(tmp_path / "corpus" / "train") == ["HELLO WORLD", "GOOD DAY"]
  assert ngram.read_sentences(tmp_path / "train.ltr") == ["HI YOU", "OK"]
  assert ngram.read_sentences(tmp_path / "train.tsv") == ["HI YOU", "OK"]  # no .wrd: the .ltr
  (tmp_path / "train.wrd").write_text("HI THERE\nOK\n")
  assert ngram.read_sentences(tmp_path / "train.tsv") == ["HI THERE", "OK"]
  assert ngram.read_sentences(tmp_path / "lower.txt", case="upper") == ["HELLO THERE", ""]
  with pytest.raises(ngram.NgramError, match=r"corpus root with splits train; pass one split folder"):
    ngram.read_sentences(tmp_path / "corpus")


@pytest.mark.parametrize("content,order,message", [
    ("", 3, r"empty\.txt: no sentences"),
    ("\n  \n\n", 3, r"empty\.txt: no sentences"),
    ("A B\nA <s> B\n", 3, r"empty\.txt: sentence 2 contains <s>"),
    ("A B\n", 1, r"order must be an integer in 2\.\.6"),
    ("A B\n", 7, r"order must be an integer in 2\.\.6"),
    ("A B\nC\n", 5, r"empty\.txt: no 5-grams: every sentence has fewer than 3 words"),
])
def test_bad_input_names_the_file_and_the_fix(tmp_path, content, order, message):
  text = tmp_path / "empty.txt"
  text.write_text(content)
  with pytest.raises(ngram.NgramError, match=message):
    ngram.write_arpa(str(text), str(tmp_path / "lm.arpa"), order)
  assert not (tmp_path / "lm.arpa").exists()


def test_missing_files_and_bad_settings(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"missing\.txt: text file not found"):
    ngram.read_sentences(tmp_path / "missing.txt")
  (tmp_path / "bare.tsv").write_text("/root\na.flac\t16000\n")
  with pytest.raises(FileNotFoundError, match=r"bare\.tsv: a manifest without transcripts"):
    ngram.read_sentences(tmp_path / "bare.tsv")
  (tmp_path / "folder").mkdir()
  with pytest.raises(FileNotFoundError, match=r"folder: a folder without SPEAKER/CHAPTER/\*\.trans\.txt"):
    ngram.read_sentences(tmp_path / "folder")
  with pytest.raises(ngram.NgramError, match=r"case must be one of"):
    ngram.read_sentences(tmp_path / "bare.tsv", case="title")
  with pytest.raises(ngram.NgramError, match=r"discount_fallback must be"):
    ngram.estimate(["A B"], 2, discount_fallback=(0.5, 2.5, 1.0))


def _run_entry_point(*args):
  return subprocess.run([sys.executable, os.path.join(REPO, "experiments", "build_lm.py"), *args],
                        capture_output=True, text=True, timeout=120, check=False)


def test_entry_point_writes_a_model_and_stops_cleanly_on_bad_input(tmp_path):
  text = tmp_path / "sentences.txt"
  text.write_text("\n".join(_markov_corpus(2)) + "\n")
  out = tmp_path / "lm" / "3gram.arpa"
  result = _run_entry_point(f"--text={text}", f"--out={out}", "--order=3")
  assert result.returncode == 0, result.stderr
  assert kenlm.Model(str(out)).order == 3 and "wrote" in result.stderr
  (tmp_path / "empty.txt").write_text("")
  result = _run_entry_point(f"--text={tmp_path / 'empty.txt'}", f"--out={tmp_path / 'x.arpa'}")
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].split("] ", 1)[1].startswith(
      f"stopped: NgramError: {tmp_path / 'empty.txt'}: no sentences")
