"""`Recognizer`: a CTC model with its vocabulary, turning waveforms of any length into frame log-probabilities, text
and timed words. Transcription (`experiments/transcribe.py`) and forced alignment (`experiments/align.py`) run on it.

Long audio is cut into overlapping windows whose starts fall on frame boundaries (multiples of the conv stack's hop,
320 samples), so window frame j is global frame `start / hop + j`, computed from exactly the same samples as in a
whole-file pass; each global frame is taken from the window where it lies furthest from an edge (the middle of the
overlaps is the border). The stitched log-probabilities have one row per frame of the whole file: nothing is lost or
doubled at the borders and timestamps do not drift. The last window is shifted left to end at the file's end, so
every window has one shape (one compile) and no padding (padding changes a group-norm feature encoder's output).
A file no longer than one window is processed whole, unpadded.
"""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import audio, storage
from data_pipelines.vocab import BOS, EOS, Vocab
from wav2vec_jax.inference import decoding
from wav2vec_jax.interop.loading import load_pretrained
from wav2vec_jax.models import masking
from wav2vec_jax.models.wav2vec2 import Wav2Vec2ForCTC


class RecognizerError(ValueError):
  """A checkpoint, vocabulary or audio that cannot be transcribed; the message names it and the fix."""


@dataclasses.dataclass(frozen=True)
class Transcript:
  """Attributes:
    text: the transcript, single spaces between words.
    words: Word per word (start/end seconds from the file's start, confidence in [0, 1] or nan).
    duration: seconds of audio.
  """

  text: str
  words: tuple[decoding.Word, ...]
  duration: float


def checkpoint_folder(checkpoint: str) -> str:
  """The directory of a checkpoint directory or file."""
  return checkpoint if storage.Path(checkpoint).is_dir() else os.fspath(storage.Path(checkpoint).parent)


def find_vocab(checkpoint: str, vocab_path: str | None = None) -> Vocab:
  """The vocabulary of a CTC checkpoint: `vocab_path`, else `vocab.json` or `dict.ltr.txt` beside it."""
  folder = checkpoint_folder(checkpoint)
  candidates = [vocab_path] if vocab_path else [storage.join(folder, "vocab.json"), storage.join(folder, "dict.ltr.txt")]
  for path in candidates:
    if path and storage.Path(path).exists():
      return Vocab.load(path)
  raise RecognizerError(f"{checkpoint}: no vocabulary found ({', '.join(candidates)}); pass one with --vocab "
                        "(a vocab.json or a fairseq dict.ltr.txt)")


def load_ctc_model(checkpoint: str, vocab_path: str | None = None, **config_overrides):
  """(model, variables, vocab) of a CTC checkpoint, checked to fit together.

  Raises:
    RecognizerError: the checkpoint has no CTC head, or its head's size differs from the vocabulary's.
  """
  model, variables = load_pretrained(checkpoint, **config_overrides)
  if not isinstance(model, Wav2Vec2ForCTC):
    raise RecognizerError(f"{checkpoint}: a {type(model).__name__} has no CTC head: transcribe with a fine-tuned "
                          "checkpoint (experiments/finetune.py writes one to <workdir>/best)")
  vocab = find_vocab(checkpoint, vocab_path)
  if vocab.size != model.config.vocab_size:
    raise RecognizerError(f"{checkpoint}: the CTC head has {model.config.vocab_size} outputs but the vocabulary has "
                          f"{vocab.size} symbols: pass the vocabulary the model was trained with (--vocab)")
  return model, variables, vocab


def input_normalization(checkpoint: str, model) -> bool:
  """Whether the model expects zero-mean unit-variance input: the checkpoint's own record (our `input.json`, HF's
  `preprocessor_config.json` `do_normalize`), else fairseq's convention (LARGE/XLSR layer-norm encoders normalise,
  BASE group-norm ones do not)."""
  import json  # pylint: disable=g-import-not-at-top
  folder = checkpoint_folder(checkpoint)
  for name, key in (("input.json", "normalize"), ("preprocessor_config.json", "do_normalize")):
    path = storage.join(folder, name)
    if storage.Path(path).exists():
      value = json.loads(storage.Path(path).read_text()).get(key)
      if value is not None:
        return bool(value)
  return model.config.feat_extract_norm == "layer"


def kernels_in(params, dtype: str):
  """`params` as numpy arrays with every floating parameter of 2 or more axes (matmul and conv kernels) in `dtype`
  and the rest (biases, norms) as they are: an inference model keeps its kernels in the compute dtype, so that no
  call casts them again. float32 leaves everything float32."""

  def stored(p):
    p = np.asarray(p)
    return p.astype(dtype) if p.ndim >= 2 and np.issubdtype(p.dtype, np.floating) else p

  return jax.tree_util.tree_map(stored, params)


def window_plan(num_frames: int, window: int, context: int) -> list[tuple[int, int, int]]:
  """How `num_frames` frames are covered by windows of `window` frames overlapping by `2 * context`.

  Args:
    num_frames: frames of the whole file.
    window: frames per window.
    context: frames each side of a window's kept part (dropped, except at the file's ends).
  Returns:
    (first frame of the window, first kept frame, end of kept frames) per window; the kept parts tile
    [0, num_frames) in order.
  """
  if num_frames <= window:
    return [(0, 0, num_frames)]
  step = window - 2 * context
  if step <= 0:
    raise ValueError(f"window of {window} frames leaves nothing between two contexts of {context}")
  plan, start, kept = [], 0, 0
  while True:
    if start + window >= num_frames:
      start = num_frames - window  # the last window ends at the file's end
      plan.append((start, kept, num_frames))
      return plan
    end = start + window - context
    plan.append((start, kept, end))
    kept, start = end, start + step


class Recognizer:
  """A CTC model ready for audio of any length.

  Attributes:
    model, vocab: the Wav2Vec2ForCTC and its vocabulary.
    hop: samples per frame (320); seconds_per_frame = hop / 16000.
  """

  def __init__(self, model, variables, vocab: Vocab, *, normalize: bool = False, chunk_s: float = 20.0,
               context_s: float = 3.0, batch_size: int = 4):
    """Args:
      model: Wav2Vec2ForCTC; variables: its `{"params": ...}`. With a bfloat16 compute dtype
        (`model.config.dtype`) the matmul and conv kernels (every parameter of 2 or more axes) are kept in bfloat16
        so that no call casts them again; biases and norms stay float32.
      vocab: the CTC head's vocabulary.
      normalize: zero-mean unit-variance per file (as the model was trained; see `input_normalization`).
      chunk_s: window length in seconds for long files (files up to this length run whole).
      context_s: seconds each side of a window that are computed for context and dropped (each global frame
        comes from a window where it has at least this much audio on both sides, except at the file's ends).
      batch_size: windows per forward pass.
    """
    cfg = model.config
    self.model, self.vocab, self.normalize, self.batch_size = model, vocab, normalize, batch_size
    self.params = jax.device_put(kernels_in(variables["params"], cfg.dtype))
    self.hop = int(np.prod(cfg.conv_stride))
    self.receptive_field = cfg.receptive_field
    self.seconds_per_frame = self.hop / audio.TARGET_SAMPLE_RATE
    self.window_frames = max(1, int(round(chunk_s / self.seconds_per_frame)))
    self.context_frames = int(round(context_s / self.seconds_per_frame))
    if context_s < 0 or self.window_frames <= 2 * self.context_frames:
      raise RecognizerError(f"chunk_s={chunk_s} must be longer than twice context_s={context_s} (each window keeps "
                            "what lies between its two contexts): raise --chunk_s or lower --context_s")
    self._kernels, self._strides = cfg.conv_kernel, cfg.conv_stride
    self._forward = jax.jit(self._log_probs)

  @classmethod
  def from_pretrained(cls, checkpoint: str, vocab: str | None = None, *, normalize: bool | None = None,
                      dtype: str = "float32", **kwargs):
    """Loads a CTC checkpoint (ours, Hugging Face or fairseq) and its vocabulary (`find_vocab`).

    Args:
      normalize: input normalisation; default: `input_normalization(checkpoint, model)`.
      dtype: compute dtype, "float32" or "bfloat16" (matmuls and convs in bfloat16 with float32 sums; norms,
        softmax and log-probabilities in float32). On 2 CPU cores bfloat16 transcribes about 1.5x faster
        (experiments/benchmark_transcribe.py); the log-probabilities move by bfloat16 rounding.
      **kwargs: Recognizer options (chunk_s, context_s, batch_size).
    """
    # Forward only: the direct positional conv beats the FFT one that "auto" picks on CPU for training (2.32 vs
    # 2.69 s per 20 s BASE window on 2 cores); on GPU/TPU "auto" is the direct conv anyway.
    model, variables, vocabulary = load_ctc_model(checkpoint, vocab, pos_conv_impl="conv", dtype=dtype)
    if normalize is None:
      normalize = input_normalization(checkpoint, model)
    return cls(model, variables, vocabulary, normalize=normalize, **kwargs)

  def _log_probs(self, params, waveform, attention_mask=None):
    logits = self.model.apply({"params": params}, waveform, attention_mask).logits
    return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)

  def num_frames(self, num_samples: int) -> int:
    """Frames the model makes of `num_samples` samples."""
    return int(masking.conv_output_lengths(int(num_samples), self._kernels, self._strides))

  def log_probs(self, waveform: np.ndarray, *, name: str = "audio") -> np.ndarray:
    """Frame log-probabilities of one file, windowed and stitched if it is longer than a window.

    Args:
      waveform: `[samples]` float32 mono 16 kHz (not yet normalised).
      name: how errors name the file.
    Returns:
      `[frames, vocab]` float32 log-softmax of the CTC logits, frames = `num_frames(samples)`.
    Raises:
      RecognizerError: audio shorter than the receptive field (400 samples, 25 ms).
    """
    waveform = np.asarray(waveform, np.float32).reshape(-1)
    frames = self.num_frames(waveform.size)
    if frames < 1:
      raise RecognizerError(f"{name}: {waveform.size} samples is shorter than the model's receptive field of "
                            f"{self.receptive_field} samples ({self.receptive_field / 16:.0f} ms at 16 kHz)")
    if self.normalize:
      waveform = audio.normalize(waveform)
    plan = window_plan(frames, self.window_frames, self.context_frames)
    if len(plan) == 1:
      return np.asarray(self._forward(self.params, waveform[None]))[0]
    span = (self.window_frames - 1) * self.hop + self.receptive_field
    windows = np.stack([waveform[s * self.hop: s * self.hop + span] for s, _, _ in plan])
    out = np.empty((frames, self.vocab.size), np.float32)
    for i in range(0, len(windows), self.batch_size):
      batch = windows[i:i + self.batch_size]
      real = len(batch)
      if real < self.batch_size:  # one shape for every call: repeat the last window
        batch = np.concatenate([batch, np.repeat(batch[-1:], self.batch_size - real, axis=0)])
      result = np.asarray(self._forward(self.params, batch))
      for j in range(real):
        start, kept, end = plan[i + j]
        out[kept:end] = result[j, kept - start:end - start]
    return out

  def log_probs_batch(self, waveforms, *, bucket_s: float = 2.0, batch_size: int = 8) -> list[np.ndarray]:
    """Frame log-probabilities of many short files, padded to shared lengths (multiples of `bucket_s`) with an
    attention mask, as the trainer's validation runs them: a few compiles instead of one per length. Padding shifts
    a group-norm feature encoder's statistics (as in training); `log_probs` is the exact, unpadded path.

    Args:
      waveforms: per file `[samples_i]` float32 mono 16 kHz, each at most one window long.
    Returns:
      Per file `[frames_i, vocab]` float32.
    """
    waveforms = [np.asarray(w, np.float32).reshape(-1) for w in waveforms]
    if self.normalize:
      waveforms = [audio.normalize(w) for w in waveforms]
    bucket = max(1, int(bucket_s * audio.TARGET_SAMPLE_RATE))
    order = sorted(range(len(waveforms)), key=lambda i: waveforms[i].size)
    out = [None] * len(waveforms)
    for first in range(0, len(order), batch_size):
      rows = order[first:first + batch_size]
      length = -(-max(waveforms[i].size for i in rows) // bucket) * bucket
      batch = np.zeros((batch_size, length), np.float32)
      mask = np.zeros((batch_size, length), np.int32)
      for j, i in enumerate(rows):
        batch[j, :waveforms[i].size], mask[j, :waveforms[i].size] = waveforms[i], 1
      mask[len(rows):, :self.receptive_field] = 1  # filler rows: one frame, never read
      result = np.asarray(self._forward(self.params, batch, mask))
      for j, i in enumerate(rows):
        out[i] = result[j, :self.num_frames(waveforms[i].size)]
    return out

  def transcribe(self, waveform: np.ndarray, *, decoder=None, name: str = "audio") -> Transcript:
    """Text and timed words of one file.

    Args:
      waveform: `[samples]` float32 mono 16 kHz.
      decoder: a `beam.BeamSearchDecoder` (built once, reused); None for greedy decoding.
    Returns:
      Transcript. Greedy word confidence: mean probability of the word's characters over their frames.
    """
    log_probs = self.log_probs(waveform, name=name)
    return self.decode(log_probs, waveform.size / audio.TARGET_SAMPLE_RATE, decoder=decoder)

  def decode(self, log_probs: np.ndarray, duration: float, *, decoder=None) -> Transcript:
    """Transcript from `[frames, vocab]` float32 log-probabilities (greedy, or `decoder`'s best beam)."""
    if decoder is not None:
      best = decoder.decode(log_probs)[0]
      return Transcript(best.text, best.words, duration)
    path = np.argmax(log_probs, axis=-1)
    probs = np.exp(np.take_along_axis(log_probs, path[:, None], axis=-1)[:, 0])
    words = decoding.words_from_runs(decoding.token_runs(path, self.vocab.blank_id), self.vocab.tokens,
                                     self.vocab.word_delimiter, self.seconds_per_frame, probs, skip=(BOS, EOS))
    return Transcript(" ".join(w.text for w in words), tuple(words), duration)

  def transcribe_file(self, path: str, *, decoder=None) -> Transcript:
    """`transcribe` of an audio file of any common format (wav, flac, ogg, mp3) and rate, mixed down to mono and
    resampled to 16 kHz. Raises data_pipelines.audio.AudioInputError naming the file if it cannot be read."""
    waveform = audio.load_waveform(path)
    return self.transcribe(waveform, decoder=decoder, name=path)
