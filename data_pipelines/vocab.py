"""CTC character vocabulary: blank at id 0, letters, and `|` as the word boundary.

Conventions. fairseq's `dict.ltr.txt` lists one "SYMBOL COUNT" per line; fairseq's Dictionary prepends the specials
`<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3. Hugging Face swaps `<s>` and `<pad>` so that id 0, the CTC blank, is
`<pad>`: `{"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, ...}`. This module always uses the Hugging Face
order, so a fairseq dictionary loaded here gets exactly the ids of its converted Hugging Face vocab.json.

Text becomes labels as in fairseq's `.ltr` files: each word spelled out letter by letter, `|` after every word
(including the last), e.g. "HI YOU" → `H I | Y O U |`.
"""

import collections
import dataclasses
import json
import os
from typing import Iterable, Sequence

import numpy as np

from data_pipelines import storage

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)  # Hugging Face order: id 0 = <pad> = CTC blank
WORD_DELIMITER = "|"


class VocabError(ValueError):
  """Text that the vocabulary cannot encode; the message names the utterance and the characters."""


def text_to_letters(text: str, *, word_delimiter: str = WORD_DELIMITER, trailing_delimiter: bool = True) -> list[str]:
  """Splits text into label symbols: letters of each word, `word_delimiter` after each word.

  Args:
    text: a transcript; runs of whitespace separate words.
    word_delimiter: the word-boundary symbol.
    trailing_delimiter: fairseq `.ltr` files end with a delimiter; Hugging Face's tokenizer does not.

  Returns:
    The symbols, e.g. "HI YOU" → ["H", "I", "|", "Y", "O", "U", "|"].
  """
  out = []
  for word in text.split():
    out.extend(word)
    out.append(word_delimiter)
  if out and not trailing_delimiter:
    out.pop()
  return out


def to_ltr(text: str) -> str:
  """Formats a transcript as one fairseq `.ltr` line: "HI YOU" → "H I | Y O U |"."""
  return " ".join(text_to_letters(text))


def from_ltr(line: str, *, word_delimiter: str = WORD_DELIMITER) -> str:
  """Inverts `to_ltr`: "H I | Y O U |" → "HI YOU"."""
  return "".join(line.split()).replace(word_delimiter, " ").strip()


@dataclasses.dataclass(frozen=True)
class Vocab:
  """A CTC vocabulary. Id i is `tokens[i]`; `tokens[0]` is the blank/padding symbol.

  Attributes:
    tokens: all symbols in id order, specials first.
    word_delimiter: the word-boundary symbol (`|`).
    counts: optional occurrence counts aligned with `tokens` (kept for `dict.ltr.txt`).
  """

  tokens: tuple[str, ...]
  word_delimiter: str = WORD_DELIMITER
  counts: tuple[int, ...] | None = None

  def __post_init__(self):
    if len(set(self.tokens)) != len(self.tokens):
      raise ValueError("vocabulary has duplicate tokens")
    if not self.tokens or self.tokens[0] not in (PAD, "[PAD]"):
      raise ValueError(f"id 0 must be the blank/pad token, got {self.tokens[:1]}")
    object.__setattr__(self, "_ids", {t: i for i, t in enumerate(self.tokens)})

  @property
  def size(self) -> int:
    """Number of symbols (the CTC head's output dimension)."""
    return len(self.tokens)

  def __len__(self) -> int:
    return len(self.tokens)

  @property
  def blank_id(self) -> int:
    """The CTC blank: always 0."""
    return 0

  @property
  def pad_id(self) -> int:
    """Label padding id: the blank (0)."""
    return 0

  @property
  def unk_id(self) -> int | None:
    """Id of `<unk>` (or `[UNK]`), None if the vocabulary has none."""
    return self._ids.get(UNK, self._ids.get("[UNK]"))

  def token_to_id(self, token: str) -> int:
    """Id of `token`; KeyError if absent."""
    return self._ids[token]

  @classmethod
  def from_transcripts(cls, transcripts: Iterable[str], *, word_delimiter: str = WORD_DELIMITER) -> "Vocab":
    """Builds the vocabulary of all characters in `transcripts` (fairseq order: most frequent first).

    Args:
      transcripts: texts, whitespace between words.
      word_delimiter: the word-boundary symbol.

    Returns:
      specials, then symbols by decreasing count (ties by code point), `|` counted once per word.
    """
    counter = collections.Counter()
    for text in transcripts:
      counter.update(text_to_letters(text, word_delimiter=word_delimiter))
    symbols = sorted(counter, key=lambda s: (-counter[s], s))
    return cls(SPECIALS + tuple(symbols), word_delimiter, (0,) * len(SPECIALS) + tuple(counter[s] for s in symbols))

  def encode(self, text: str, *, on_unknown: str = "raise", name: str | None = None) -> np.ndarray:
    """Text → label ids, fairseq `.ltr` style (trailing `|`).

    Args:
      text: the transcript.
      on_unknown: "raise" (VocabError) or "unk" (map to `<unk>`) for characters outside the vocabulary.
      name: utterance id or file for the error message.

    Returns:
      `[num_labels]` int32, no blanks.

    Raises:
      VocabError: characters outside the vocabulary with on_unknown="raise" (or the vocabulary has no `<unk>`).
    """
    letters = text_to_letters(text, word_delimiter=self.word_delimiter)
    unknown = sorted({c for c in letters if c not in self._ids})
    if unknown:
      if on_unknown not in ("raise", "unk"):
        raise ValueError(f"on_unknown must be 'raise' or 'unk', got {on_unknown!r}")
      if on_unknown == "raise" or self.unk_id is None:
        raise VocabError(f"{name or 'transcript'}: characters {''.join(unknown)!r} are not in the vocabulary "
                         f"(text {text[:80]!r})")
    unk = self.unk_id
    return np.asarray([self._ids.get(c, unk) for c in letters], np.int32)

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """Label ids → text: drops specials (blank/pad, `<s>`, `</s>`), `|` becomes a space.

    Args:
      ids: `[num_labels]` integers (no CTC collapsing is done here; see decoding).

    Returns:
      The text, single spaces between words, no leading/trailing space.
    """
    skip = {PAD, BOS, EOS, "[PAD]"}
    chars = [self.tokens[int(i)] for i in np.asarray(ids).reshape(-1)]
    text = "".join(" " if c == self.word_delimiter else c for c in chars if c not in skip)
    return " ".join(text.split())

  # ---- Hugging Face vocab.json ----
  def save_hf(self, path: str | os.PathLike) -> None:
    """Writes a Hugging Face `vocab.json` ({token: id})."""
    with storage.Path(path).open("w", encoding="utf-8") as f:
      json.dump({t: i for i, t in enumerate(self.tokens)}, f, ensure_ascii=False, indent=1)

  @classmethod
  def load_hf(cls, path: str | os.PathLike, *, word_delimiter: str = WORD_DELIMITER) -> "Vocab":
    """Reads a Hugging Face `vocab.json`; ids must be 0..n-1 with the pad/blank at 0."""
    with storage.Path(path).open(encoding="utf-8") as f:
      mapping = json.load(f)
    tokens = sorted(mapping, key=mapping.get)
    if [mapping[t] for t in tokens] != list(range(len(tokens))):
      raise ValueError(f"{path}: ids are not contiguous from 0")
    return cls(tuple(tokens), word_delimiter)

  # ---- fairseq dict.ltr.txt ----
  def save_fairseq(self, path: str | os.PathLike) -> None:
    """Writes a fairseq `dict.ltr.txt` ("SYMBOL COUNT" lines, specials omitted as fairseq adds them itself)."""
    if self.tokens[:4] != SPECIALS:
      raise ValueError(f"fairseq dictionaries need the specials {SPECIALS} first, got {self.tokens[:4]}")
    counts = self.counts or (0,) * self.size
    with storage.Path(path).open("w", encoding="utf-8") as f:
      for token, count in zip(self.tokens[4:], counts[4:]):
        f.write(f"{token} {count}\n")

  @classmethod
  def load_fairseq(cls, path: str | os.PathLike, *, word_delimiter: str = WORD_DELIMITER) -> "Vocab":
    """Reads a fairseq `dict.ltr.txt`, with `<s>`/`<pad>` swapped so that id 0 is the blank (as Hugging Face)."""
    tokens, counts = list(SPECIALS), [0] * len(SPECIALS)
    with storage.Path(path).open(encoding="utf-8") as f:
      for lineno, line in enumerate(f, 1):
        if not line.strip():
          continue
        fields = line.rstrip("\n").rsplit(" ", 1)
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
          raise ValueError(f"{path}:{lineno}: expected 'SYMBOL COUNT', got {line.rstrip()!r}")
        if fields[0] in SPECIALS:  # some dictionaries list specials explicitly; keep them at their fixed ids
          continue
        tokens.append(fields[0])
        counts.append(int(fields[1]))
    return cls(tuple(tokens), word_delimiter, tuple(counts))

  @classmethod
  def load(cls, path: str | os.PathLike) -> "Vocab":
    """Loads `vocab.json` (Hugging Face) or anything else as a fairseq dictionary."""
    return cls.load_hf(path) if os.fspath(path).endswith(".json") else cls.load_fairseq(path)
