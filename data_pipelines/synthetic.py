"""Tiny synthetic audio datasets for tests: LibriSpeech-layout folders of tones with random transcripts.

Not speech (see `data_pipelines.corpus` for the generated speech corpus); just enough structure, written in well
under a second, to exercise every source and transform on data a test writes itself.
"""

import dataclasses
import os
from typing import Sequence

import numpy as np
import soundfile as sf

# Per-language letters, accented ones included, so vocabularies and OOV handling get exercised.
ALPHABETS = {
    "en": "ABCDEFGHIJKLMNOPQRSTUVWXYZ'",
    "fr": "ABCDEÉÈÊFGHIJLMNOPRSTUÀÇ",
    "de": "ABCDEFGHIKLMNORSTUÄÖÜß",
    "es": "ABCDEFGILMNÑOPRSTUÁÉÍÓÚ",
    "pl": "ABCDEĘFGIJKLŁMNOÓPRSŚTUWYZŻ",
}


@dataclasses.dataclass(frozen=True)
class Utterance:
  """One written utterance: id, audio path, transcript, language, samples (at the file's rate), file rate."""

  id: str
  path: str
  text: str
  language: str
  num_samples: int
  sample_rate: int


def tone(num_samples: int, sample_rate: int, seed: int, channels: int = 1) -> np.ndarray:
  """A deterministic chirp-plus-noise signal. Returns `[num_samples]` (or `[num_samples, channels]`) float32."""
  rng = np.random.default_rng(seed)
  t = np.arange(num_samples) / sample_rate
  f0 = rng.uniform(100, 400)
  x = 0.3 * np.sin(2 * np.pi * (f0 + 50 * t) * t) + 0.01 * rng.standard_normal(num_samples)
  x = x.astype(np.float32)
  return np.stack([x * (c + 1) / channels for c in range(channels)], axis=1) if channels > 1 else x


def random_text(rng: np.random.Generator, language: str, words: int = 4) -> str:
  """Uppercase pseudo-words from the language's alphabet."""
  letters = ALPHABETS[language]
  return " ".join("".join(rng.choice(list(letters), size=rng.integers(2, 7))) for _ in range(words))


def write_librispeech_folder(
    root: str | os.PathLike,
    *,
    split: str | None = "train",
    languages: Sequence[str] = ("en",),
    speakers_per_language: int = 2,
    utterances_per_speaker: int = 3,
    seconds: tuple[float, float] = (0.5, 2.0),
    sample_rate: int = 16_000,
    extension: str = "flac",
    seed: int = 0,
) -> list[Utterance]:
  """Writes `root/split/SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.<ext>` files and `SPEAKER-CHAPTER.trans.txt`.

  Speaker ids are 100·(language number + 1) + speaker number, so the language is recoverable from the id
  (`language_of`); `root/SPEAKERS.txt` lists each speaker's LANG as the generated corpus does. Returns the written
  utterances in id order.
  """
  rng = np.random.default_rng(seed)
  out = []
  base = os.path.join(os.fspath(root), split) if split else os.fspath(root)
  for li, lang in enumerate(languages):
    for s in range(speakers_per_language):
      speaker, chapter = 100 * (li + 1) + s, 7
      folder = os.path.join(base, str(speaker), str(chapter))
      os.makedirs(folder, exist_ok=True)
      lines = []
      for u in range(utterances_per_speaker):
        uid = f"{speaker}-{chapter}-{u:04d}"
        n = int(rng.uniform(*seconds) * sample_rate)
        path = os.path.join(folder, f"{uid}.{extension}")
        sf.write(path, tone(n, sample_rate, int(rng.integers(1 << 30))), sample_rate)
        text = random_text(rng, lang)
        lines.append(f"{uid} {text}\n")
        out.append(Utterance(uid, path, text, lang, n, sample_rate))
      with open(os.path.join(folder, f"{speaker}-{chapter}.trans.txt"), "w", encoding="utf-8") as f:
        f.writelines(lines)
  with open(os.path.join(os.fspath(root), "SPEAKERS.txt"), "a", encoding="utf-8") as f:
    if f.tell() == 0:
      f.write(";ID  |LANG|SPLIT\n")
    for li, lang in enumerate(languages):
      f.writelines(f"{100 * (li + 1) + s:<5}|{lang:<4}|{split}\n" for s in range(speakers_per_language))
  return sorted(out, key=lambda u: u.id)


def set_transcripts(root: str | os.PathLike, texts: dict[str, str]) -> None:
  """Replaces the transcripts of the utterance ids in `texts` ({id: new text}, "" for an empty one) in the
  `.trans.txt` files of a LibriSpeech-layout folder under `root` (e.g. to make bad input for a test)."""
  for folder, _, files in os.walk(os.fspath(root)):
    for name in (f for f in files if f.endswith(".trans.txt")):
      path = os.path.join(folder, name)
      with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
      new = [f"{uid} {texts[uid]}".rstrip() if (uid := line.split(" ", 1)[0]) in texts else line for line in lines]
      if new != lines:
        with open(path, "w", encoding="utf-8") as f:
          f.write("\n".join(new) + "\n")


def language_of(languages: Sequence[str]):
  """The utterance id → language function matching `write_librispeech_folder(languages=...)`."""
  return lambda uid: languages[int(uid.split("-")[0]) // 100 - 1]
