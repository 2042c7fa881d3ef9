"""Word n-gram language models: interpolated modified Kneser-Ney, written as ARPA files for KenLM / pyctcdecode.

The estimate follows Chen & Goodman (1998) as KenLM's `lmplz` implements it (adjust_counts.cc,
initial_probabilities.cc, interpolate.cc), without pruning:
- every sentence is `<s> w1 ... wk </s>`; words are split on whitespace, case kept; blank lines are skipped (lmplz
  would count each as an empty sentence);
- adjusted counts: raw counts for the highest order and for n-grams that start with `<s>` (nothing can precede
  them), otherwise the number of distinct words seen to the left (continuation counts; `<s>` counts as one);
- discounts D1, D2, D3+ per order from that order's counts of adjusted counts t1..t4 (Chen & Goodman eq. 26):
  Y = t1 / (t1 + 2 t2), Dk = k - (k + 1) Y t(k+1) / tk;
- p(w | h) = (a(hw) - D(a(hw))) / sum_v a(hv) + gamma(h) p(w | h'), gamma(h) = (D1 N1(h) + D2 N2(h) + D3 N3+(h)) /
  sum_v a(hv), down to a uniform 1 / |V| over the vocabulary with `</s>` and `<unk>` (not `<s>`), so `<unk>` gets
  gamma / |V|. As the model is interpolated, the ARPA backoff weight of a context is gamma(h) itself.
The ARPA file gives `<s>` log10 p = -99 (it is never predicted; lmplz writes 0 there, which KenLM ignores alike) and
every n-gram below the top order a backoff column, 0 where it is no context, as lmplz does.

Ill-defined discounts. Where an order has no n-gram of adjusted count 1, 2 or 3, or a discount falls outside
[0, k], the estimate is undefined (typical of small or artificial text). lmplz stops there unless given
`--discount_fallback`, and then uses D = 0.5, 1, 1.5 for that order; here that fallback is the default
(`discount_fallback=None` restores lmplz's error), and `NgramModel.fallback_orders` says where it was used.

Models are of order 2..6 (what KenLM reads). The counts are held in Python dicts: about 13 s and 0.6 GB per million
words for a 3-gram, 43 s and 1.4 GB for a 5-gram (one core); fine for transcripts and LM texts of a few million
words (see `experiments/build_lm.py`), not for billions (use lmplz there).
"""

import collections
import dataclasses
import math
import os
from typing import Iterable, Sequence

from absl import logging

from data_pipelines import storage
from data_pipelines.vocab import from_ltr

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
DEFAULT_FALLBACK = (0.5, 1.0, 1.5)  # lmplz's --discount_fallback values for D1, D2, D3+
# KenLM reads orders 2..6: its query structures assume at least bigrams, and the pip `kenlm` package is compiled with
# KENLM_MAX_ORDER=6.
MIN_ORDER, MAX_ORDER = 2, 6
_LOG10_ZERO = -99.0  # ARPA's log10(0): <s> is never predicted
_CASES = ("keep", "upper", "lower")


class NgramError(ValueError):
  """Text or settings an n-gram model cannot be built from; the message names the source, the cause and the fix."""


@dataclasses.dataclass(frozen=True)
class NgramModel:
  """An estimated model, ready to write as ARPA.

  Attributes:
    order: the highest n-gram order N.
    words: the vocabulary, id -> word: `<unk>`, `<s>`, `</s>`, then words in order of first appearance.
    log_probs: per order n (index n-1), {n-gram as a tuple of word ids: log10 p(last word | the others)}.
    log_backoffs: per order n < N (index n-1), {n-gram: log10 gamma} for the n-grams seen as contexts.
    discounts: per order, (D1, D2, D3+).
    fallback_orders: the orders (1-based) whose discounts were ill-defined and replaced by the fallback.
    sentences: non-blank sentences counted.
    tokens: words counted (without `<s>` and `</s>`).
  """

  order: int
  words: tuple[str, ...]
  log_probs: tuple[dict[tuple[int, ...], float], ...]
  log_backoffs: tuple[dict[tuple[int, ...], float], ...]
  discounts: tuple[tuple[float, float, float], ...]
  fallback_orders: tuple[int, ...]
  sentences: int
  tokens: int

  @property
  def ngram_counts(self) -> tuple[int, ...]:
    """Entries per order in the ARPA file (unigrams include `<unk>`, `<s>` and `</s>`)."""
    return tuple(len(p) for p in self.log_probs)

  def to_arpa(self) -> str:
    """The model as ARPA text. Every n-gram below the highest order carries a backoff column (0 where it is not a
    context), as lmplz writes it: pyctcdecode reads its unigram list from the 3-column 1-gram lines."""
    out = ["\\data\\"] + [f"ngram {n}={c}" for n, c in enumerate(self.ngram_counts, 1)] + [""]
    for n in range(1, self.order + 1):
      out.append(f"\\{n}-grams:")
      backoffs = self.log_backoffs[n - 1] if n < self.order else None
      for gram in sorted(self.log_probs[n - 1]):
        line = f"{_fmt(self.log_probs[n - 1][gram])}\t{' '.join(self.words[i] for i in gram)}"
        if backoffs is not None:
          line += f"\t{_fmt(backoffs.get(gram, 0.0))}"
        out.append(line)
      out.append("")
    out.append("\\end\\")
    return "\n".join(out) + "\n"


def _fmt(x: float) -> str:
  return f"{x:.7g}"


def _log10(p: float) -> float:
  # lmplz clamps rounding above 1 to log 0; a probability of exactly 0 (a zero discount) is ARPA's -99.
  return min(0.0, math.log10(p)) if p > 0 else _LOG10_ZERO


def _discounts(order: int, adjusted: dict, fallback) -> tuple[tuple[float, float, float], bool]:
  """(D1, D2, D3+) of one order from its counts of adjusted counts, and whether the fallback replaced them."""
  t = collections.Counter(a for a in adjusted.values() if 1 <= a <= 4)
  problem = None
  if not all(t[k] for k in (1, 2, 3)):
    problem = f"no {order}-grams with adjusted count {min(k for k in (1, 2, 3) if not t[k])}"
  else:
    y = t[1] / (t[1] + 2 * t[2])
    d = tuple(k - (k + 1) * y * t[k + 1] / t[k] for k in (1, 2, 3))
    bad = [k for k in (1, 2, 3) if not 0 <= d[k - 1] <= k]
    if not bad:
      return d, False
    problem = f"D{bad[0]} = {d[bad[0] - 1]:.4g} is outside [0, {bad[0]}]"
  if fallback is None:
    raise NgramError(f"cannot estimate Kneser-Ney discounts for {order}-grams: {problem} (counts of adjusted counts "
                     f"t1..t4 = {[t[k] for k in (1, 2, 3, 4)]}); typical of small or artificial text: use more text, "
                     f"a lower order, or discount_fallback=(0.5, 1.0, 1.5) (experiments/build_lm.py: "
                     f"--discount_fallback=0.5,1,1.5; lmplz: --discount_fallback)")
  return tuple(float(x) for x in fallback), True


def _adjusted_counts(sentences: Sequence[tuple[int, ...]], order: int, bos: int, eos: int) -> list[dict]:
  """Per order n (index n-1): {n-gram of word ids: adjusted count} (see the module docstring)."""
  adjusted = [{} for _ in range(order)]
  for ids in sentences:
    tokens = (bos,) + ids + (eos,)
    for i in range(1, len(tokens)):  # the n-gram predicting tokens[i]; shorter at the start, from <s>
      gram = tokens[max(0, i - order + 1):i + 1]
      table = adjusted[len(gram) - 1]
      table[gram] = table.get(gram, 0) + 1
  for n in range(order, 1, -1):  # each distinct n-gram v+s is one left extension of its suffix s
    lower = adjusted[n - 2]
    for gram in adjusted[n - 1]:
      lower[gram[1:]] = lower.get(gram[1:], 0) + 1
  return adjusted


def _to_ids(sentences: Iterable[str], source: str) -> tuple[list[str], list[tuple[int, ...]], int]:
  """(words by id, sentences as id tuples, token count); blank sentences skipped, reserved words refused."""
  index = {UNK: 0, BOS: 1, EOS: 2}
  out, tokens = [], 0
  for lineno, sentence in enumerate(sentences, 1):
    words = sentence.split()
    if not words:
      continue
    reserved = sorted({w for w in words if w in (BOS, EOS, UNK)})
    if reserved:
      raise NgramError(f"{source}: sentence {lineno} contains {', '.join(reserved)}, which the model adds itself; "
                       f"remove them from the text (lmplz refuses them too)")
    out.append(tuple(index.setdefault(w, len(index)) for w in words))
    tokens += len(words)
  if not out:
    raise NgramError(f"{source}: no sentences (empty, or only blank lines); expected one sentence per line")
  return list(index), out, tokens


def estimate(sentences: Iterable[str], order: int = 3, *, discount_fallback: Sequence[float] | None = DEFAULT_FALLBACK,
             source: str = "sentences") -> NgramModel:
  """Estimates an interpolated modified Kneser-Ney model of `order` from sentences.

  Args:
    sentences: one sentence per item, words separated by whitespace (case kept; blank items skipped).
    order: the highest n-gram order, MIN_ORDER..MAX_ORDER.
    discount_fallback: (D1, D2, D3+) for orders whose discounts are ill-defined; None raises instead (lmplz's
      default).
    source: a name for the text in error messages (the file it came from).

  Returns:
    The `NgramModel`.

  Raises:
    NgramError: no sentences, a sentence with `<s>`, `</s>` or `<unk>`, an order out of range or longer than every
      sentence allows, or ill-defined discounts without a fallback.
  """
  if not isinstance(order, int) or not MIN_ORDER <= order <= MAX_ORDER:
    raise NgramError(f"order must be an integer in {MIN_ORDER}..{MAX_ORDER} (KenLM reads models of those orders), "
                     f"got {order!r}")
  if discount_fallback is not None and (len(discount_fallback) != 3 or
                                        not all(0 <= d <= k for k, d in enumerate(discount_fallback, 1))):
    raise NgramError(f"discount_fallback must be (D1, D2, D3+) with 0 <= Dk <= k, got {discount_fallback!r}")
  words, ids, tokens = _to_ids(sentences, source)
  unk, bos, eos = 0, 1, 2
  adjusted = _adjusted_counts(ids, order, bos, eos)
  if not adjusted[-1]:
    raise NgramError(f"{source}: no {order}-grams: every sentence has fewer than {order - 2} words; use a lower order")
  adjusted[0].setdefault((unk,), 0)
  adjusted[0].setdefault((bos,), 0)
  discounts, fallback_orders, log_probs, log_backoffs = [], [], [], []
  probs = {(): None}  # order n-1's interpolated probabilities; the order-0 "model" is uniform
  uniform = 1.0 / (len(adjusted[0]) - 1)  # over the vocabulary with </s> and <unk>, without <s>
  for n in range(1, order + 1):
    d, fell_back = _discounts(n, adjusted[n - 1], discount_fallback)
    discounts.append(d)
    if fell_back:
      fallback_orders.append(n)
    context = {}  # h -> [sum_v a(hv), N1(h), N2(h), N3+(h)]
    for gram, a in adjusted[n - 1].items():
      stats = context.setdefault(gram[:-1], [0, 0, 0, 0])
      stats[0] += a
      if a:
        stats[min(a, 3)] += 1
    gamma = {h: (d[0] * s[1] + d[1] * s[2] + d[2] * s[3]) / s[0] for h, s in context.items()}
    if n > 1:
      log_backoffs.append({h: _log10(g) for h, g in gamma.items()})
    current = {}
    for gram, a in adjusted[n - 1].items():
      lower = uniform if n == 1 else probs[gram[1:]]
      current[gram] = (a - (d[min(a, 3) - 1] if a else 0.0)) / context[gram[:-1]][0] + gamma[gram[:-1]] * lower
    log_probs.append({g: _LOG10_ZERO if g == (bos,) else _log10(p) for g, p in current.items()})
    probs = current
  if fallback_orders:
    logging.warning("%s: Kneser-Ney discounts of orders %s are ill-defined (too little text); using the fallback %s",
                    source, fallback_orders, tuple(discount_fallback))
  return NgramModel(order, tuple(words), tuple(log_probs), tuple(log_backoffs), tuple(discounts),
                    tuple(fallback_orders), len(ids), tokens)


def build_arpa(sentences: Iterable[str], order: int = 3, **kwargs) -> str:
  """ARPA text of the model `estimate(sentences, order, **kwargs)` builds (see there for arguments and errors)."""
  return estimate(sentences, order, **kwargs).to_arpa()


def _sentence_lines(path: str) -> list[str]:
  """The sentences of one file, by kind: `.trans.txt` (LibriSpeech: "ID TEXT"), `.ltr` (fairseq letters "H I |"),
  `.tsv` (a fairseq manifest: its `.wrd`, else its `.ltr`), anything else plain text (`.wrd`, `.txt`)."""
  name = storage.Path(path).name
  if name.endswith(".tsv"):
    stem = path[:-len(".tsv")]
    labels = next((f"{stem}.{ext}" for ext in ("wrd", "ltr") if storage.Path(f"{stem}.{ext}").exists()), None)
    if labels is None:
      raise FileNotFoundError(f"{path}: a manifest without transcripts: neither {stem}.wrd nor {stem}.ltr exists; "
                              "pass a text file of sentences instead")
    return _sentence_lines(labels)
  lines = storage.Path(path).read_text(encoding="utf-8").splitlines()
  if name.endswith(".trans.txt"):
    return [line.strip().partition(" ")[2] for line in lines]
  if name.endswith(".ltr"):
    return [from_ltr(line) for line in lines]
  return lines


def read_sentences(path: str | os.PathLike, *, case: str = "keep") -> list[str]:
  """Reads LM training sentences from a file or a LibriSpeech-layout split folder (local or gs://).

  Args:
    path: a text file with one sentence per line, a `.trans.txt`, `.ltr`, `.wrd` or fairseq `.tsv` transcript
      file, or a split folder (`SPLIT/SPEAKER/CHAPTER/*.trans.txt`, e.g. the generated corpus' `train`).
    case: "keep", "upper" (the project's transcripts are upper case) or "lower".

  Returns:
    The sentences, in file order (blank ones included; `estimate` skips them).

  Raises:
    FileNotFoundError: no such file or folder, or a folder without transcripts.
    NgramError: an unknown `case`, or a corpus root (its dev and test text must not train the LM).
  """
  if case not in _CASES:
    raise NgramError(f"case must be one of {_CASES}, got {case!r}")
  path = os.fspath(path)
  root = storage.Path(path)
  if not root.exists():
    raise FileNotFoundError(f"{path}: text file not found; pass a file of sentences (one per line), a transcript "
                            "file or a corpus split folder")
  if root.is_dir():
    files = sorted(os.fspath(f) for f in root.glob("*/*/*.trans.txt"))  # no recursive glob: object stores lack it
    if not files:
      splits = sorted({f.parent.parent.parent.name for f in root.glob("*/*/*/*.trans.txt")})
      if splits:
        raise NgramError(f"{path}: a corpus root with splits {', '.join(splits)}; pass one split folder, e.g. "
                         f"{storage.join(path, splits[-1])} (an LM trained on dev or test text inflates their scores)")
      raise FileNotFoundError(f"{path}: a folder without SPEAKER/CHAPTER/*.trans.txt transcripts; pass a text file or "
                              "a LibriSpeech-layout split folder")
  else:
    files = [path]
  sentences = [s for f in files for s in _sentence_lines(f)]
  return [s.upper() if case == "upper" else s.lower() if case == "lower" else s for s in sentences]


def write_arpa(text: str | os.PathLike | Iterable[str], out_path: str | os.PathLike, order: int = 3, *,
               case: str = "keep", **kwargs) -> NgramModel:
  """Builds a model from a text file (see `read_sentences`) or from sentences, and writes it as ARPA.

  Args:
    text: a path for `read_sentences`, or the sentences themselves (strings).
    out_path: the `.arpa` file to write (local or gs://; folders are created; written whole or not at all).
    order: the highest n-gram order.
    case: for a path, as in `read_sentences`.
    **kwargs: passed to `estimate` (`discount_fallback`, `source`: the path by default).

  Returns:
    The `NgramModel` written.
  """
  if isinstance(text, (str, os.PathLike)):
    kwargs.setdefault("source", os.fspath(text))
    model = estimate(read_sentences(text, case=case), order, **kwargs)
  else:
    model = estimate(text, order, **kwargs)
  storage.Path(out_path).parent.mkdir(parents=True, exist_ok=True)
  storage.write_text(out_path, model.to_arpa())
  return model
