"""Beam-search CTC decoding: an exact CTC prefix beam search, lexicon-free, with an optional KenLM word n-gram.

Every hypothesis is a label prefix with the two CTC probabilities (ending in blank, ending in its last label), so
with a beam wide enough to hold every prefix the search returns exactly the most probable labelling (the sum over
all its frame paths): the property the tests check against brute-force enumeration. pyctcdecode's search merges
hypotheses approximately (its scores over-count on small cases and its best hypothesis differs from the exact one in
about 1 case in 6 in our check), and it pins `numpy<2`, which jax cannot install with; it is kept as the baseline in
`experiments/benchmark_decoding.py`.

Language model: the word delimiter (`|`) ends a word; the word is then scored by KenLM (log10 -> natural log, times
`lm_weight`) and `word_score` is added, as the lexicon-free decoders of pyctcdecode and flashlight do; the sentence's
last word and `</s>` are scored at the end. Hotwords get a bonus when completed, and a proportional bonus while
partially spelled (so they survive pruning).

The LM is loaded once per `BeamSearchDecoder`. Batches decode in parallel on a process pool made on first use and
kept for the decoder's lifetime (each worker loads the LM once), not one pool per call as
`Wav2Vec2ProcessorWithLM.batch_decode` does.
"""

import contextlib
import dataclasses
import heapq
import math
import multiprocessing
import os
import sys

import kenlm
import numpy as np

from data_pipelines import storage
from data_pipelines.vocab import BOS, EOS, Vocab
from wav2vec_jax.inference.decoding import Word

_LN10 = math.log(10.0)
_NEG_INF = float("-inf")


class LanguageModelError(ValueError):
  """A language model file that is missing or cannot be read; the message names the file and the fix."""


@dataclasses.dataclass(frozen=True)
class BeamOptions:
  """Search settings.

  Attributes:
    beam_width: hypotheses kept per frame.
    lm_weight: weight of the LM's natural-log probability of each word (alpha).
    word_score: added per word (beta, the word insertion bonus); applied only with a language model.
    beam_prune_logp: drop hypotheses this far (natural log) below the frame's best.
    token_min_logp: tokens below this log-probability in a frame are not tried (the frame's best always is).
    hotwords: words to favour (phrases are split into words), also ones the LM does not know.
    hotword_weight: bonus (natural log) for each completed hotword.
    unk_score: with an LM whose word list is known (ARPA): added once for a completed word outside it, and for a
      partial word that begins no known word (scaled by length/6 past 6 letters), as pyctcdecode does; without it
      every word the LM does not know costs only its `<unk>` probability, and hypotheses avoid word boundaries.
  """

  beam_width: int = 64
  lm_weight: float = 0.5
  word_score: float = 1.0
  beam_prune_logp: float = -10.0
  token_min_logp: float = -5.0
  hotwords: tuple[str, ...] = ()
  hotword_weight: float = 10.0
  unk_score: float = -10.0


@dataclasses.dataclass(frozen=True)
class Hypothesis:
  """One result of the search.

  Attributes:
    text: words separated by single spaces.
    labels: `[labels]` int32 ids of the labelling (delimiters included, no blanks).
    words: Word per word, with start/end seconds and confidence nan.
    acoustic_score: natural-log CTC probability of the labelling (summed over its frame paths, within the beam).
    score: what the beam was ranked by: acoustic + LM terms + word scores + hotword bonuses.
  """

  text: str
  labels: np.ndarray
  words: tuple[Word, ...]
  acoustic_score: float
  score: float


def _logaddexp(a: float, b: float) -> float:
  if a == _NEG_INF:
    return b
  if b == _NEG_INF:
    return a
  if a > b:
    return a + math.log1p(math.exp(b - a))
  return b + math.log1p(math.exp(a - b))


class BeamSearchDecoder:
  """CTC prefix beam search over log-probabilities, with an optional KenLM language model."""

  def __init__(self, vocab: Vocab, lm_path: str | None = None, options: BeamOptions = BeamOptions(), *,
               seconds_per_frame: float = 0.02, workers: int | None = None):
    """Args:
      vocab: the CTC head's vocabulary (id order; blank id 0, `vocab.word_delimiter` between words).
      lm_path: KenLM model, ARPA text or KenLM binary; None for no LM. gs:// paths are copied locally.
      options: search settings.
      seconds_per_frame: frame hop, for word times (0.02 for the standard conv stack at 16 kHz).
      workers: processes for `decode_batch` (default: the CPU count, at most 8; 1 = this process only).
    Raises:
      LanguageModelError: `lm_path` missing, empty or not a KenLM model.
    """
    self.vocab, self.options, self.seconds_per_frame = vocab, options, seconds_per_frame
    self.workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
    self.lm_path = lm_path
    self.lm, words = _load_lm(lm_path) if lm_path else (None, None)
    self._words = frozenset(words) if words else None
    self._prefixes = frozenset(w[:i] for w in words for i in range(1, len(w) + 1)) if words else None
    self._pool = None
    self._delimiter = vocab.tokens.index(vocab.word_delimiter) if vocab.word_delimiter in vocab.tokens else -1
    skip = {BOS, EOS}
    self._chars = ["" if (i == vocab.blank_id or t in skip) else t for i, t in enumerate(vocab.tokens)]
    self._hotwords = tuple(sorted({w for phrase in options.hotwords for w in phrase.split()}))

  # ---- word scoring ----
  def _word_score(self, lm_state, word: str, o: BeamOptions):
    """(score added for completing `word` after the history in `lm_state`, the LM state after it)."""
    score, state = 0.0, lm_state
    if self.lm is not None:
      state = kenlm.State()
      score += o.lm_weight * self.lm.BaseScore(lm_state, word, state) * _LN10 + o.word_score
      if self._words is not None and word not in self._words:
        score += o.unk_score
    if word in self._hotwords:
      score += o.hotword_weight
    return score, state

  def _partial_bonus(self, word: str, o: BeamOptions) -> float:
    """Score terms of a partial word, replaced when it completes: hotword progress and unknown-prefix penalty."""
    score = 0.0
    if self._prefixes is not None and word not in self._prefixes:
      score += o.unk_score * max(1.0, len(word) / 6)
    if self._hotwords:
      lengths = [len(h) for h in self._hotwords if h.startswith(word)]
      score += o.hotword_weight * len(word) / min(lengths) if lengths else 0.0
    return score

  def _start_state(self):
    if self.lm is None:
      return None
    state = kenlm.State()
    self.lm.BeginSentenceWrite(state)
    return state

  def _final_score(self, entry, o: BeamOptions) -> float:
    """A beam's score with its partial word completed and `</s>` scored."""
    score = _logaddexp(entry[0], entry[1]) + entry[2]
    state = entry[3]
    if entry[4]:
      extra, state = self._word_score(state, entry[4], o)
      score += extra
    if self.lm is not None:
      score += o.lm_weight * self.lm.BaseScore(state, "</s>", kenlm.State()) * _LN10
    return score

  # ---- search ----
  def decode(self, log_probs: np.ndarray, n_best: int = 1, options: BeamOptions | None = None) -> list[Hypothesis]:
    """Decodes one utterance.

    Args:
      log_probs: `[frames, vocab]` float log-probabilities (log-softmax output) of the utterance's real frames.
      n_best: hypotheses to return, best first.
      options: settings for this call (e.g. a grid over `lm_weight`/`word_score`); default: the decoder's. Its
        hotwords are the decoder's.
    Returns:
      Up to `n_best` Hypothesis.
    """
    log_probs = np.asarray(log_probs, np.float64)
    if log_probs.ndim != 2 or log_probs.shape[1] != self.vocab.size:
      raise ValueError(f"log_probs must be [frames, {self.vocab.size}] for this vocabulary, got {log_probs.shape}")
    o, blank, delim, chars = options or self.options, self.vocab.blank_id, self._delimiter, self._chars
    # Prefixes are interned: node 0 is the empty prefix; child[(node, token)] -> node. Per node: parent, token,
    # first frame of its token and its parent's token end (for word times).
    child, parent, token_of, start_of, parent_end = {}, [-1], [-1], [0], [0]
    # A beam: node -> [p_blank, p_label, lm_score, lm_state, word, bonus, end of its last token].
    beams = {0: [0.0, _NEG_INF, 0.0, self._start_state(), "", 0.0, 0]}
    keep = log_probs >= o.token_min_logp
    keep[np.arange(len(log_probs)), np.argmax(log_probs, axis=-1)] = True
    for t, row in enumerate(log_probs.tolist()):
      tokens = np.flatnonzero(keep[t]).tolist()
      with_blank = blank in tokens
      labels = [v for v in tokens if v != blank]
      token_set = set(labels)
      nxt = {}
      for node, (p_blank, p_label, lm, state, word, bonus, end) in beams.items():
        total = _logaddexp(p_blank, p_label)
        last = token_of[node]
        if with_blank or last in token_set:
          entry = nxt.get(node)
          if entry is None:
            entry = nxt[node] = [_NEG_INF, _NEG_INF, lm, state, word, bonus, end]
          if with_blank:
            entry[0] = _logaddexp(entry[0], total + row[blank])
          if last in token_set:  # the last label continues (no blank in between)
            p = p_label + row[last]
            if p > entry[0]:
              entry[6] = t + 1
            entry[1] = _logaddexp(entry[1], p)
        for token in labels:
          p = (p_blank if token == last else total) + row[token]
          if p == _NEG_INF:
            continue
          key = (node, token)
          new = child.get(key)
          if new is None:
            new = child[key] = len(parent)
            parent.append(node)
            token_of.append(token)
            start_of.append(t)
            parent_end.append(end)
          entry = nxt.get(new)
          if entry is None:
            start_of[new], parent_end[new] = t, end
            if token == delim:
              extra, new_state = self._word_score(state, word, o) if word else (0.0, state)
              entry = [_NEG_INF, _NEG_INF, lm + extra, new_state, "", 0.0, t + 1]
            else:
              new_word = word + chars[token]
              entry = [_NEG_INF, _NEG_INF, lm, state, new_word, self._partial_bonus(new_word, o), t + 1]
            nxt[new] = entry
          entry[1] = _logaddexp(entry[1], p)
      scored = [(_logaddexp(e[0], e[1]) + e[2] + e[5], node) for node, e in nxt.items()]
      top = heapq.nlargest(o.beam_width, scored)
      floor = top[0][0] + o.beam_prune_logp
      beams = {node: nxt[node] for score, node in top if score >= floor}
    finals = sorted(((self._final_score(e, o), node) for node, e in beams.items()), reverse=True)[:n_best]
    return [self._hypothesis(node, beams[node], score, parent, token_of, start_of, parent_end)
            for score, node in finals]

  def _hypothesis(self, node, entry, score, parent, token_of, start_of, parent_end) -> Hypothesis:
    labels, starts, ends = [], [], []
    end = entry[6]
    while node > 0:
      labels.append(token_of[node])
      starts.append(start_of[node])
      ends.append(end)
      node, end = parent[node], parent_end[node]
    labels, starts, ends = labels[::-1], starts[::-1], ends[::-1]
    words, current = [], []

    def flush():
      text = "".join(self._chars[labels[i]] for i in current)
      if text:
        words.append(Word(text, starts[current[0]] * self.seconds_per_frame,
                          ends[current[-1]] * self.seconds_per_frame))
      current.clear()

    for i, token in enumerate(labels):
      if token == self._delimiter:
        flush()
      else:
        current.append(i)
    flush()
    return Hypothesis(" ".join(w.text for w in words), np.asarray(labels, np.int32), tuple(words),
                      float(_logaddexp(entry[0], entry[1])), float(score))

  def decode_batch(self, log_probs: list[np.ndarray], n_best: int = 1,
                   options: BeamOptions | None = None) -> list[list[Hypothesis]]:
    """Decodes utterances in parallel on the decoder's process pool (made on first use, then reused).

    Args:
      log_probs: per utterance `[frames_i, vocab]` float32 log-probabilities.
      options: settings for this call (see `decode`).
    Returns:
      Per utterance, up to `n_best` Hypothesis.
    """
    arrays = [np.asarray(x) for x in log_probs]
    if self.workers <= 1 or len(arrays) <= 1:
      return [self.decode(x, n_best, options) for x in arrays]
    if self._pool is None:  # spawned (forking a process running JAX threads can deadlock); each loads the LM once
      self._pool = multiprocessing.get_context("spawn").Pool(
          self.workers, _worker_init, (self.vocab, self.lm_path, self.options, self.seconds_per_frame))
    return self._pool.starmap(_worker_decode, [(x, n_best, options) for x in arrays])

  def close(self):
    """Stops the worker processes (also done when the decoder is garbage collected)."""
    if self._pool is not None:
      self._pool.terminate()
      self._pool.join()
      self._pool = None

  def __del__(self):
    try:
      self.close()
    except Exception:  # pylint: disable=broad-except
      pass

  def __getstate__(self):
    raise TypeError("BeamSearchDecoder holds a KenLM model and a process pool; it is not picklable")


_worker = {}  # the decoder inside a pool worker (set by its initializer; one per process)


def _worker_init(vocab, lm_path, options, seconds_per_frame):
  _worker["decoder"] = BeamSearchDecoder(vocab, lm_path, options, seconds_per_frame=seconds_per_frame, workers=1)


def _worker_decode(log_probs, n_best, options):
  return _worker["decoder"].decode(log_probs, n_best, options)


@contextlib.contextmanager
def _c_stderr_silenced():
  """Sends file descriptor 2 to /dev/null while inside (C++ libraries that print notices with no option to stop;
  their errors still arrive as Python exceptions)."""
  sys.stderr.flush()
  saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  try:
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


def _load_lm(lm_path: str):
  """(kenlm.Model, its words or None) from an ARPA or KenLM binary file (a binary file does not list its words);
  LanguageModelError naming the file otherwise."""
  if not storage.Path(lm_path).exists():
    raise LanguageModelError(f"{lm_path}: language model file not found; build one with experiments/build_lm.py "
                             "--text=<sentences.txt> --out=<lm.arpa>, or decode without --lm")
  with storage.local_file(lm_path) as local:
    if os.path.getsize(local) == 0:
      raise LanguageModelError(f"{lm_path}: the language model file is empty; rebuild it with experiments/build_lm.py")
    try:
      config = kenlm.Config()
      config.show_progress = False  # no "Reading ... ****" progress bar per decoding process
      with _c_stderr_silenced():  # nor "Loading the LM will be faster if you build a binary file" (C++, no option)
        model = kenlm.Model(local, config)
    except (OSError, RuntimeError) as e:
      reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise LanguageModelError(f"{lm_path}: not a KenLM model (ARPA text or KenLM binary): {reason}; rebuild it "
                               "with experiments/build_lm.py") from e
    return model, _arpa_words(local)


def _arpa_words(local: str) -> list[str] | None:
  """The words of an ARPA file's 1-gram section (without <s>, </s>, <unk>); None for a binary file."""
  with open(local, "rb") as f:  # noqa: a local copy made by storage.local_file
    if not f.read(64).lstrip().startswith(b"\\data\\"):
      return None
  words, inside = [], False
  with open(local, encoding="utf-8") as f:  # noqa: a local copy made by storage.local_file
    for line in f:
      line = line.strip()
      if line == "\\1-grams:":
        inside = True
      elif inside and line.startswith("\\"):
        break
      elif inside and line:
        fields = line.split()
        if len(fields) >= 2 and fields[1] not in ("<s>", "</s>", "<unk>"):
          words.append(fields[1])
  return words
