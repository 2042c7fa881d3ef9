"""Forced alignment's text side: a transcript as CTC labels (normalised, out-of-vocabulary runs as a star label), and
a Viterbi path as timed word and character segments. The search itself is `alignment.py`; the time convention is
documented there (`FRAME_SECONDS` per frame, a segment over frames [a, b) spans [0.02 a, 0.02 b) seconds)."""

import dataclasses
import unicodedata

import numpy as np

from wav2vec_jax.inference import scoring

FRAME_SECONDS = 0.02  # 320 samples at 16 kHz: the conv feature encoder's total stride


class AlignmentError(ValueError):
  """A transcript that cannot be aligned to its audio; the message names the utterance, frames and labels."""


@dataclasses.dataclass(frozen=True)
class Transcript:
  """A normalised transcript as CTC labels.

  Attributes:
    words: the normalised words.
    labels: `[labels]` int32 ids; `vocab.size` is the star (see `encode_transcript`).
    symbols: per label, its text: a letter, the word delimiter, or the run of characters a star stands for.
    word_index: `[labels]` int32 word of each label, -1 for word delimiters.
    star: `[labels]` bool, True for star labels.
    oov_words: indices of words that hold characters outside the vocabulary.
  """

  words: tuple[str, ...]
  labels: np.ndarray
  symbols: tuple[str, ...]
  word_index: np.ndarray
  star: np.ndarray
  oov_words: tuple[int, ...]


def _fold_case(text: str, vocab) -> str:
  letters = [t for t in vocab.tokens[1:] if len(t) == 1 and t.isalpha() and t.upper() != t.lower()]
  if letters and all(t.isupper() for t in letters):
    return text.upper()
  if letters and all(t.islower() for t in letters):
    return text.lower()
  return text


def encode_transcript(text: str, vocab, *, name: str = "transcript") -> Transcript:
  """Normalises a transcript and spells it as labels, never failing on characters the vocabulary lacks.

  Normalisation: Unicode NFC (NFD where the vocabulary holds decomposed characters), whitespace collapsed
  (`scoring.normalize_text`), case folded to the vocabulary's (an upper-case alphabet upper-cases the text),
  punctuation outside the vocabulary stripped from word edges (as the corpus normaliser does; words left empty are
  dropped). Each remaining run of characters outside the vocabulary becomes one star label (id `vocab.size`,
  scored by `with_star_column`), and its word is listed in `oov_words`. Labels end every word with the delimiter,
  as `Vocab.encode`.

  Args:
    text: the transcript.
    vocab: a `data_pipelines.vocab.Vocab`.
    name: the utterance, for errors.
  Returns:
    Transcript.
  Raises:
    AlignmentError: nothing alignable is left (empty transcript).
  """
  known = set(vocab.tokens[1:])
  star = vocab.size
  words, labels, symbols, word_index, oov = [], [], [], [], []
  # Composed (NFC) text unless the vocabulary was built from decomposed characters (NFD: É as E + U+0301).
  forms = [unicodedata.normalize(form, text) for form in ("NFC", "NFD")]
  text = min(forms, key=lambda t: sum(c not in known and not c.isspace() for c in _fold_case(t, vocab)))
  for raw in _fold_case(scoring.normalize_text(text), vocab).split():
    lo, hi = 0, len(raw)
    while lo < hi and raw[lo] not in known and unicodedata.category(raw[lo]).startswith("P"):
      lo += 1
    while hi > lo and raw[hi - 1] not in known and unicodedata.category(raw[hi - 1]).startswith("P"):
      hi -= 1
    word = raw[lo:hi]
    if not word:
      continue
    w = len(words)
    words.append(word)
    for char in word:
      if char in known:
        labels.append(vocab.token_to_id(char))
        symbols.append(char)
      elif labels and labels[-1] == star and word_index[-1] == w:
        symbols[-1] += char
        continue
      else:
        labels.append(star)
        symbols.append(char)
        if not oov or oov[-1] != w:
          oov.append(w)
      word_index.append(w)
    labels.append(vocab.token_to_id(vocab.word_delimiter))
    symbols.append(vocab.word_delimiter)
    word_index.append(-1)
  if not words:
    raise AlignmentError(f"{name}: the transcript is empty after normalisation (text {text[:80]!r})")
  labels = np.asarray(labels, np.int32)
  return Transcript(tuple(words), labels, tuple(symbols), np.asarray(word_index, np.int32), labels == star,
                    tuple(oov))


@dataclasses.dataclass(frozen=True)
class Segment:
  """One aligned word or character.

  Attributes:
    label: the word, the character, or the out-of-vocabulary run a star stood for.
    start, end: seconds, `FRAME_SECONDS` x the first frame and x one past the last.
    start_frame, end_frame: the frames [start_frame, end_frame).
    score: mean per-frame probability (exp log-prob) of the aligned frames' token, in [0, 1] (a star's column is
      the best letter's, so out-of-vocabulary text scores as the model's best guess).
    oov: the segment holds characters outside the vocabulary (aligned through the star token).
  """

  label: str
  start: float
  end: float
  start_frame: int
  end_frame: int
  score: float
  oov: bool = False


@dataclasses.dataclass(frozen=True)
class Alignment:
  """A transcript aligned to one recording.

  Attributes:
    utterance: its id.
    words, chars: segments in order (chars are letters and stars; the word delimiter is not listed).
    log_prob: total log-prob of the Viterbi path.
    num_frames: CTC frames of the recording (duration = num_frames x FRAME_SECONDS).
  """

  utterance: str
  words: tuple[Segment, ...]
  chars: tuple[Segment, ...]
  log_prob: float
  num_frames: int

  @property
  def duration(self) -> float:
    """Seconds covered by the frames."""
    return _seconds(self.num_frames)


def _seconds(frame) -> float:
  return round(float(frame) * FRAME_SECONDS, 6)  # 0.02 k without float noise (0.06, not 0.060000000000000005)


def _spans(groups: np.ndarray, frame_ids: np.ndarray, probs: np.ndarray, count: int):
  """First frame, one past the last, and mean probability of each group id in [0, count) over the frames."""
  start = np.full(count, -1, np.int64)
  end = np.full(count, -1, np.int64)
  order = np.argsort(groups, kind="stable")
  g, f = groups[order], frame_ids[order]
  first = np.r_[True, g[1:] != g[:-1]]
  last = np.r_[g[1:] != g[:-1], True]
  start[g[first]] = f[first]
  end[g[last]] = f[last] + 1
  totals = np.bincount(groups, weights=probs, minlength=count)
  counts = np.bincount(groups, minlength=count)
  return start, end, totals / np.maximum(counts, 1)


def segments(label_index: np.ndarray, frame_log_probs: np.ndarray, transcript: Transcript, *, utterance: str,
             log_prob: float, num_frames: int) -> Alignment:
  """Turns one row's Viterbi path into word and character segments.

  Args:
    label_index: `[frames]` int label index per frame (-1 blank or padding), from `ViterbiPath`.
    frame_log_probs: `[frames]` float log-prob of the path's token per frame.
    transcript: the labels that were aligned.
    utterance, log_prob, num_frames: recorded in the result.
  Returns:
    Alignment.
  """
  label_index = np.asarray(label_index)[:num_frames]
  frames = np.flatnonzero(label_index >= 0)
  labels = label_index[frames]
  probs = np.exp(np.asarray(frame_log_probs, np.float64)[:num_frames][frames])
  start, end, score = _spans(labels, frames, probs, transcript.labels.size)
  chars = tuple(Segment(transcript.symbols[j], _seconds(start[j]), _seconds(end[j]), int(start[j]),
                        int(end[j]), float(score[j]), bool(transcript.star[j]))
                for j in np.flatnonzero(transcript.word_index >= 0))
  word_of_frame = transcript.word_index[labels]
  in_word = word_of_frame >= 0
  w_start, w_end, w_score = _spans(word_of_frame[in_word], frames[in_word], probs[in_word], len(transcript.words))
  oov = set(transcript.oov_words)
  words = tuple(Segment(word, _seconds(w_start[w]), _seconds(w_end[w]), int(w_start[w]), int(w_end[w]),
                        float(w_score[w]), w in oov) for w, word in enumerate(transcript.words))
  return Alignment(utterance, words, chars, float(log_prob), int(num_frames))
