"""Languages, transcript alphabets and sentence sampling for the generated corpus.

Text comes from the word lists that the `faker` package ships (MIT licence): its `lorem` word list for the locale
(common words of the language), plus first names, last names and place names drawn from its person and address
providers. Sentences are random sequences of those words: grammatical sense does not matter for acoustic models, and
it keeps the corpus free of third-party text.

Transcripts are normalised to the letters a CTC vocabulary will use: upper case, the letters of the language (accented
letters kept), the apostrophe, and a single space between words. Words carrying anything else (digits, letters of
another alphabet, symbols) are dropped rather than spelled out, so audio and transcript always agree.
"""

import dataclasses
import json
import os
import pathlib
import re
import string
import subprocess
import sys
import unicodedata

import numpy as np

APOSTROPHE = "'"
WORD_SEPARATOR = " "

# Names and places to draw from each locale; enough for variety, few enough to build in well under a second.
_NUM_NAMES = 300
_NUM_PLACES = 200
# Share of sentence slots filled by a name or a place instead of a common word.
_P_NAME = 0.06
_P_PLACE = 0.04
# eSpeak NG pauses at commas, which varies the prosody; the transcript drops them.
_P_COMMA = 0.07


@dataclasses.dataclass(frozen=True)
class Language:
  """A corpus language.

  Attributes:
    code: ISO 639-1 code; the corpus' language tag.
    faker_locale: `faker` locale that provides the word lists.
    espeak_voice: eSpeak NG voice (language) name; a variant is appended as `voice+variant`.
    letters: upper-case letters of the transcript alphabet (apostrophe and space come on top).
    one_letter_words: upper-case one-letter words kept; other single letters in word lists are abbreviations or
      letter names and are dropped.
  """
  code: str
  faker_locale: str
  espeak_voice: str
  letters: str
  one_letter_words: str = ""

  @property
  def charset(self) -> str:
    """All characters a transcript in this language may contain, sorted."""
    return "".join(sorted(set(self.letters + APOSTROPHE + WORD_SEPARATOR)))


_AZ = string.ascii_uppercase
LANGUAGES = {lang.code: lang for lang in (
    Language("en", "en_US", "en", _AZ, "AI"),
    Language("de", "de_DE", "de", _AZ + "ÄÖÜ"),
    Language("fr", "fr_FR", "fr", _AZ + "ÀÂÆÇÈÉÊËÎÏÔŒÙÛÜŸ", "AÀY"),
    Language("es", "es_ES", "es", _AZ + "ÁÉÍÑÓÚÜ", "AEOUY"),
    Language("it", "it_IT", "it", _AZ + "ÀÈÉÌÍÎÒÓÙÚ", "AEIO"),
    Language("nl", "nl_NL", "nl", _AZ + "ÉÈËÏÖÜ", "U"),
    Language("pl", "pl_PL", "pl", _AZ + "ĄĆĘŁŃÓŚŹŻ", "AIOUWZ"),
    Language("cs", "cs_CZ", "cs", _AZ + "ÁČĎÉĚÍŇÓŘŠŤÚŮÝŽ", "AIKOSUVZ"),
)}
DEFAULT_LANGUAGES = tuple(LANGUAGES)

_APOSTROPHES = re.compile("[’‘`´ʼ]")
_SEPARATORS = re.compile(r"[\s\-‐‑‒–—/_]+")


def normalize_transcript(text: str, language: Language) -> str:
  """Normalises free text to a transcript in the language's alphabet.

  Args:
    text: any text, e.g. "Sainte-Élisabeth, l’homme 3 fois".
    language: the language whose alphabet applies.

  Returns:
    Upper-case words separated by single spaces, e.g. "SAINTE ÉLISABETH L'HOMME FOIS"; words with characters outside
    `language.letters` plus the apostrophe are dropped; may be empty.
  """
  text = _APOSTROPHES.sub(APOSTROPHE, unicodedata.normalize("NFC", text))
  allowed = set(language.letters + APOSTROPHE)
  words = []
  for token in _SEPARATORS.split(text):
    # str.upper maps ß to SS, which is also how it sounds; NFC again because upper() can decompose.
    word = token.strip(string.punctuation + "«»„“”¡¿…").upper()
    word = unicodedata.normalize("NFC", word).strip(APOSTROPHE)
    if not word or not set(word) <= allowed:
      continue
    if len(word) == 1 and word not in language.one_letter_words:
      continue
    words.append(word)
  return WORD_SEPARATOR.join(words)


@dataclasses.dataclass(frozen=True)
class Lexicon:
  """Normalised word material of one language; each entry is one or more transcript words.

  Attributes:
    words: common words (and a few fixed multi-word expressions).
    names: first and last names.
    places: place names.
  """
  words: tuple[str, ...]
  names: tuple[str, ...]
  places: tuple[str, ...]


def _build_lexicon(code):
  import faker  # Local import: only corpus generation needs it, and it takes ~0.1 s per locale.

  language = LANGUAGES[code]
  fake = faker.Faker(language.faker_locale)
  fake.seed_instance(0)

  def clean(entries):
    # Entries with a full stop are abbreviations ("np.", "St. Gallen"), read as something other than their letters.
    return tuple(sorted({w for w in (normalize_transcript(e, language) for e in entries if "." not in e) if w}))

  names = [fake.first_name() for _ in range(_NUM_NAMES)] + [fake.last_name() for _ in range(_NUM_NAMES)]
  return Lexicon(words=clean(fake.get_words_list()), names=clean(names),
                 places=clean(fake.city() for _ in range(_NUM_PLACES)))


def _print_lexicons(codes):
  lexicons = {code: dataclasses.asdict(_build_lexicon(code)) for code in codes}
  sys.stdout.write(json.dumps(lexicons, ensure_ascii=False))


def build_lexicons(codes: tuple[str, ...]) -> dict[str, Lexicon]:
  """Builds the lexicons of languages from `faker`'s word, person and address providers.

  Some faker providers draw from lists built from sets (it_IT's cities), whose order depends on Python's string hash
  seed; so the lexicons are built in a subprocess with PYTHONHASHSEED=0, which makes them a function of the faker
  version alone.

  Args:
    codes: keys of `LANGUAGES`.

  Returns:
    Language code -> `Lexicon`, entries normalised, duplicates removed, sorted.
  """
  if os.environ.get("PYTHONHASHSEED") == "0":
    return {code: _build_lexicon(code) for code in codes}
  package_root = str(pathlib.Path(__file__).resolve().parents[2])
  env = dict(os.environ, PYTHONHASHSEED="0",
             PYTHONPATH=os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
  program = f"import sys; from {__name__} import _print_lexicons; _print_lexicons(sys.argv[1:])"
  result = subprocess.run([sys.executable, "-c", program, *codes], env=env, capture_output=True, encoding="utf-8")
  if result.returncode:
    raise RuntimeError(f"building the lexicons of {codes} failed:\n{result.stderr}")
  lexicons = json.loads(result.stdout)
  return {code: Lexicon(**{k: tuple(v) for k, v in fields.items()}) for code, fields in lexicons.items()}


@dataclasses.dataclass(frozen=True)
class Sentence:
  """One sentence to synthesise.

  Attributes:
    spoken: what eSpeak NG reads: lower case (all-caps words would be spelled out), with commas and a full stop.
    transcript: the normalised transcript of exactly those words.
  """
  spoken: str
  transcript: str


def sample_sentence(rng: np.random.Generator, lexicon: Lexicon, num_entries: int) -> Sentence:
  """Draws a random sentence of `num_entries` lexicon entries.

  Args:
    rng: the caller's generator (advanced in place).
    lexicon: the language's material.
    num_entries: number of entries, >= 1 (names, places and expressions may contribute several words).

  Returns:
    A `Sentence` with a non-empty transcript.
  """
  pools = (lexicon.names, lexicon.places, lexicon.words)
  kinds = rng.choice(3, size=num_entries, p=(_P_NAME, _P_PLACE, 1.0 - _P_NAME - _P_PLACE))
  entries = [pools[k][rng.integers(len(pools[k]))] for k in kinds]
  commas = rng.random(num_entries) < _P_COMMA
  spoken = " ".join(e.lower() + ("," if comma and i < num_entries - 1 else "")
                    for i, (e, comma) in enumerate(zip(entries, commas)))
  return Sentence(spoken=spoken + ".", transcript=WORD_SEPARATOR.join(entries))

