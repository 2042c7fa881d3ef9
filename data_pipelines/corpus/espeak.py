"""eSpeak NG in-process through ctypes, using the library and voice data that `espeakng-loader` ships.

The C library keeps one global engine per process (voice, parameters, synthesis buffers), so this module holds one
engine per process behind a lock; parallel synthesis needs processes, not threads.

Determinism: `espeak_ng_SetRandSeed` fixes the noise generator, but the wave generator also carries state from one
utterance to the next (glottal phase, flutter position) that `espeak_Terminate`/`espeak_Initialize` do not reset. The
same sequence of calls in a fresh process therefore gives the same samples, and the same text after a different
history does not. Callers that need reproducible audio synthesise each independent unit of work (a speaker) in a
fresh process.

Timing: the synthesis callback also receives eSpeak NG's events. `synthesize_timed` keeps the word events (where each
word of the text starts in the audio; always reported, they leave the samples unchanged) and, on request, the phoneme
events (where each phoneme, pauses included, starts). Phoneme events are not free: with them a few utterances (4 of
the default corpus' 812) come out with slightly different samples, though with the same length and word events,
presumably because their markers take slots in eSpeak NG's command queue, whose look-ahead shapes the waveform. Word and phoneme positions also depend on
the history (the wave generator's phase), like the samples.
"""

import ctypes
import dataclasses
import threading
from typing import NamedTuple

import espeakng_loader
import numpy as np

SAMPLE_RATE = 22050  # eSpeak NG's fixed output rate, checked against espeak_Initialize's return value.

# From speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EE_OK = 0
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
_EVENT_LIST_TERMINATED, _EVENT_WORD, _EVENT_PHONEME = 0, 1, 7
# Milliseconds of audio per callback; larger chunks mean fewer Python callbacks.
_BUFFER_MS = 1000


class _EventId(ctypes.Union):
  _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_void_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
  """speak_lib.h's espeak_EVENT."""
  _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
              ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
              ("user_data", ctypes.c_void_p), ("id", _EventId)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class WordEvent(NamedTuple):
  """Where eSpeak NG starts speaking a word of the text.

  Attributes:
    char: 0-based index of the word's first character (code point) in the text.
    length: its length in characters as eSpeak NG reports it (it may cover only part of a word, e.g. "l" of "l'homme").
    sample: index into the 22050 Hz audio where the word starts.
  """
  char: int
  length: int
  sample: int


class PhonemeEvent(NamedTuple):
  """Where eSpeak NG starts a phoneme.

  Attributes:
    name: eSpeak NG's phoneme mnemonic, e.g. "h", "'oU"; names starting with "_" are pauses ("_", "_:", "_|") or
      control phonemes ("_!" glottal stop, "_^_" language switch).
    sample: index into the 22050 Hz audio where it starts.
  """
  name: str
  sample: int


@dataclasses.dataclass(frozen=True)
class Synthesis:
  """Audio and eSpeak NG's timing events for one text.

  Attributes:
    audio: int16 `[samples]` at `SAMPLE_RATE` (22050 Hz).
    words: word events in order of time.
    phonemes: phoneme events in order of time.
  """
  audio: np.ndarray
  words: tuple[WordEvent, ...]
  phonemes: tuple[PhonemeEvent, ...]


class _Engine:
  """The process' eSpeak NG engine in synchronous (retrieval) mode."""

  def __init__(self):
    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetPhonemeEvents.argtypes = [ctypes.c_int, ctypes.c_int]
    data_path = espeakng_loader.get_data_path().encode()
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data_path, _INITIALIZE_DONT_EXIT)
    if rate != SAMPLE_RATE:
      raise RuntimeError(f"espeak_Initialize returned {rate}, expected sample rate {SAMPLE_RATE}")
    self._lib = lib
    self._chunks = []
    self._words = []
    self._phonemes = []
    self._callback = _CALLBACK(self._collect)  # Kept on self: the C library holds only a raw pointer.
    lib.espeak_SetSynthCallback(self._callback)
    self.lock = threading.Lock()
    self.version = lib.espeak_Info(None).decode()

  def _collect(self, wav, num_samples, events):
    if num_samples > 0:
      self._chunks.append(ctypes.string_at(wav, 2 * num_samples))
    i = 0
    while events[i].type != _EVENT_LIST_TERMINATED:
      event = events[i]
      if event.type == _EVENT_WORD:  # text_position counts characters from 1.
        self._words.append(WordEvent(event.text_position - 1, event.length, event.sample))
      elif event.type == _EVENT_PHONEME:
        self._phonemes.append(PhonemeEvent(event.id.string.decode("utf-8", "replace"), event.sample))
      i += 1
    return 0  # 0 = continue synthesis.

  def synthesize(self, text, voice, rate, pitch, pitch_range, volume, seed, phoneme_events):
    with self.lock:
      # Events per callback are capped (about 200 per second of buffer) and the excess dropped silently; phonemes come
      # at about 10-40 a second, far below that.
      self._lib.espeak_ng_SetPhonemeEvents(int(phoneme_events), 0)
      status = self._lib.espeak_SetVoiceByName(voice.encode())
      if status != _EE_OK:
        raise ValueError(f"eSpeak NG has no voice {voice!r} (status {status})")
      # Parameters survive voice changes, so every call sets all of them.
      for parameter, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range), (_VOLUME, volume)):
        self._lib.espeak_SetParameter(parameter, value, 0)
      self._lib.espeak_ng_SetRandSeed(seed)
      for buffer in (self._chunks, self._words, self._phonemes):
        buffer.clear()
      data = text.encode("utf-8") + b"\0"
      status = self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
      if status != _EE_OK:
        raise RuntimeError(f"espeak_Synth failed with status {status} on {text!r}")
      result = Synthesis(np.frombuffer(b"".join(self._chunks), dtype=np.int16), tuple(self._words),
                         tuple(self._phonemes))
      for buffer in (self._chunks, self._words, self._phonemes):
        buffer.clear()
      return result


_ENGINE = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> _Engine:
  global _ENGINE
  with _ENGINE_LOCK:
    if _ENGINE is None:
      _ENGINE = _Engine()
    return _ENGINE


def synthesize_timed(text: str, voice: str, *, rate: int = 175, pitch: int = 50, pitch_range: int = 50,
                     volume: int = 80, seed: int = 0, phoneme_events: bool = False) -> Synthesis:
  """Synthesises text with eSpeak NG in this process, with its word events and optionally its phoneme events.

  Args:
    text: UTF-8 text; lower case reads naturally (eSpeak NG may spell out all-caps words).
    voice: eSpeak NG voice name, optionally with a variant: "de", "fr+f2", "en+klatt3".
    rate: speaking rate in words per minute (80..450; eSpeak NG's default is 175).
    pitch: base pitch, 0..100 (default 50).
    pitch_range: pitch range, 0..100 (default 50; 0 is monotone).
    volume: amplitude, 0..200; eSpeak NG's default of 100 clips occasionally, 80 does not.
    seed: seed of eSpeak NG's noise generator.
    phoneme_events: also report phoneme events; this changes the samples of a few utterances slightly (see the module
      docstring), so audio meant to be stored is synthesised without.

  Returns:
    The audio (int16 `[samples]` at `SAMPLE_RATE`, 22050 Hz) and eSpeak NG's word and phoneme events, whose sample
    indices count from the start of this text's audio; `phonemes` is empty without `phoneme_events`.

  Raises:
    ValueError: the voice or variant does not exist.
  """
  return _engine().synthesize(text, voice, rate, pitch, pitch_range, volume, seed, phoneme_events)


def synthesize(text: str, voice: str, *, rate: int = 175, pitch: int = 50, pitch_range: int = 50,
               volume: int = 80, seed: int = 0) -> np.ndarray:
  """Synthesises text with eSpeak NG in this process: `synthesize_timed(...).audio`, without phoneme events.

  Args: as `synthesize_timed`.

  Returns:
    Audio, int16 `[samples]` at `SAMPLE_RATE` (22050 Hz).

  Raises:
    ValueError: the voice or variant does not exist.
  """
  return synthesize_timed(text, voice, rate=rate, pitch=pitch, pitch_range=pitch_range, volume=volume,
                          seed=seed).audio


def library_version() -> str:
  """The eSpeak NG library version, e.g. "1.52.0"."""
  return _engine().version
