"""eSpeak NG in-process through ctypes, using the library and voice data that `espeakng-loader` ships.

The C library keeps one global engine per process (voice, parameters, synthesis buffers), so this module holds one
engine per process behind a lock; parallel synthesis needs processes, not threads.

Determinism: `espeak_ng_SetRandSeed` fixes the noise generator, but the wave generator also carries state from one
utterance to the next (glottal phase, flutter position) that `espeak_Terminate`/`espeak_Initialize` do not reset. The
same sequence of calls in a fresh process therefore gives the same samples, and the same text after a different
history does not. Callers that need reproducible audio synthesise each independent unit of work (a speaker) in a
fresh process.
"""

import ctypes
import threading

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
# Milliseconds of audio per callback; larger chunks mean fewer Python callbacks.
_BUFFER_MS = 1000

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


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
    data_path = espeakng_loader.get_data_path().encode()
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data_path, _INITIALIZE_DONT_EXIT)
    if rate != SAMPLE_RATE:
      raise RuntimeError(f"espeak_Initialize returned {rate}, expected sample rate {SAMPLE_RATE}")
    self._lib = lib
    self._chunks = []
    self._callback = _CALLBACK(self._collect)  # Kept on self: the C library holds only a raw pointer.
    lib.espeak_SetSynthCallback(self._callback)
    self.lock = threading.Lock()
    self.version = lib.espeak_Info(None).decode()

  def _collect(self, wav, num_samples, events):
    del events
    if num_samples > 0:
      self._chunks.append(ctypes.string_at(wav, 2 * num_samples))
    return 0  # 0 = continue synthesis.

  def synthesize(self, text, voice, rate, pitch, pitch_range, volume, seed):
    with self.lock:
      status = self._lib.espeak_SetVoiceByName(voice.encode())
      if status != _EE_OK:
        raise ValueError(f"eSpeak NG has no voice {voice!r} (status {status})")
      # Parameters survive voice changes, so every call sets all of them.
      for parameter, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range), (_VOLUME, volume)):
        self._lib.espeak_SetParameter(parameter, value, 0)
      self._lib.espeak_ng_SetRandSeed(seed)
      self._chunks.clear()
      data = text.encode("utf-8") + b"\0"
      status = self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
      if status != _EE_OK:
        raise RuntimeError(f"espeak_Synth failed with status {status} on {text!r}")
      audio = np.frombuffer(b"".join(self._chunks), dtype=np.int16)
      self._chunks.clear()
      return audio


_ENGINE = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> _Engine:
  global _ENGINE
  with _ENGINE_LOCK:
    if _ENGINE is None:
      _ENGINE = _Engine()
    return _ENGINE


def synthesize(text: str, voice: str, *, rate: int = 175, pitch: int = 50, pitch_range: int = 50,
               volume: int = 80, seed: int = 0) -> np.ndarray:
  """Synthesises text with eSpeak NG in this process.

  Args:
    text: UTF-8 text; lower case reads naturally (eSpeak NG may spell out all-caps words).
    voice: eSpeak NG voice name, optionally with a variant: "de", "fr+f2", "en+klatt3".
    rate: speaking rate in words per minute (80..450; eSpeak NG's default is 175).
    pitch: base pitch, 0..100 (default 50).
    pitch_range: pitch range, 0..100 (default 50; 0 is monotone).
    volume: amplitude, 0..200; eSpeak NG's default of 100 clips occasionally, 80 does not.
    seed: seed of eSpeak NG's noise generator.

  Returns:
    Audio, int16 `[samples]` at `SAMPLE_RATE` (22050 Hz).

  Raises:
    ValueError: the voice or variant does not exist.
  """
  return _engine().synthesize(text, voice, rate, pitch, pitch_range, volume, seed)


def library_version() -> str:
  """The eSpeak NG library version, e.g. "1.52.0"."""
  return _engine().version
