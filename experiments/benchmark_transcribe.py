r"""Transcription and beam-search throughput against the transformers / pyctcdecode baselines, in one command.

  python experiments/benchmark_transcribe.py                 # BASE CTC, 60 s of audio, 20 s windows
  python experiments/benchmark_transcribe.py --seconds=30 --skip_beam

1. Model + greedy: random BASE `Wav2Vec2ForCTC` weights built by transformers, saved and imported here; transformers'
   ASR pipeline with `chunk_length_s` and `stride_length_s=(left, right)` against `Recognizer` with the same window
   and the same step between windows, in float32 and in bfloat16 (`--dtypes`; transformers through `torch_dtype`).
   Audio seconds per wall second, after one warm-up call each.
2. Beam search + LM: peaky CTC log-probs spelling corpus-like sentences (with confusions), decoded by our
   `BeamSearchDecoder.decode_batch` (one pool, reused) and by pyctcdecode called as transformers'
   `Wav2Vec2ProcessorWithLM.batch_decode` calls it (a new fork pool per call); needs
   `pip install --no-deps pyctcdecode pygtrie`.
3. With --parts: one window's forward time, whole and by part (conv encoder, one layer, positional conv), per dtype.
Prints one JSON line per measurement and the ratios. Needs the test extras (torch, transformers).
"""

import json
import multiprocessing
import os
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from data_pipelines import ngram, storage  # noqa: E402  pylint: disable=g-import-not-at-top
from data_pipelines.vocab import Vocab  # noqa: E402  pylint: disable=g-import-not-at-top
from wav2vec_jax.inference import beam  # noqa: E402  pylint: disable=g-import-not-at-top
from wav2vec_jax.inference.recognizer import Recognizer, kernels_in  # noqa: E402  pylint: disable=g-import-not-at-top

flags.DEFINE_float("seconds", 60.0, "Audio length.")
flags.DEFINE_float("chunk_s", 20.0, "Window length.")
flags.DEFINE_float("left_s", 4.0, "transformers' left stride (our context is (left + right) / 2 each side).")
flags.DEFINE_float("right_s", 2.0, "transformers' right stride.")
flags.DEFINE_integer("batch_size", 1, "Windows per forward pass (both sides).")
flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Compute dtypes, each run on both sides; the first is the "
                  "reference the others are compared with.")
flags.DEFINE_bool("skip_beam", False, "Skip the beam-search comparison.")
flags.DEFINE_bool("parts", False, "Also time one window's forward pass by model part (conv encoder, a layer, "
                  "positional conv) per dtype.")
flags.DEFINE_integer("utterances", 16, "Beam search: utterances of ~8 s decoded as one batch.")
flags.DEFINE_integer("beam_width", 64, "Beam search width (both).")
flags.DEFINE_integer("repeats", 2, "Timed repetitions (the best is reported).")

LETTERS = ["<pad>", "<s>", "</s>", "<unk>", "|"] + list("ETAOINSHRDLUCMFWYPVBGKQJXZ'")


def _best_time(fn, repeats):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - start)
  return min(times), out


def _build_hf(directory):
  """Random BASE `Wav2Vec2ForCTC` weights and a letter processor saved by transformers into `directory`."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  vocab_file = os.path.join(directory, "letters.json")
  storage.write_text(vocab_file, json.dumps({t: i for i, t in enumerate(LETTERS)}))
  tokenizer = transformers.Wav2Vec2CTCTokenizer(vocab_file)
  extractor = transformers.Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=False)
  torch.manual_seed(0)
  model = transformers.Wav2Vec2ForCTC(transformers.Wav2Vec2Config(vocab_size=len(LETTERS))).eval()
  model.save_pretrained(directory)
  transformers.Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(directory)


def _hf_pipeline(directory, dtype):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  return transformers.pipeline("automatic-speech-recognition", model=directory, device="cpu",
                               torch_dtype=getattr(torch, dtype))


def _cer(a: str, b: str) -> float:
  import jiwer  # pylint: disable=g-import-not-at-top
  return float(jiwer.cer(a, b)) if a else float(bool(b))


def transcription(f):
  """Audio seconds per second: transformers' chunked pipeline vs Recognizer, same weights and windows.

  For each dtype in --dtypes both sides run in that dtype (transformers through `torch_dtype`); every row also gives
  our speed against transformers in float32 (the pipeline's default) and how far each side's text moved from its
  own float32 text (CER).
  """
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count())
  rng = np.random.default_rng(0)
  audio = (0.1 * rng.normal(size=int(f.seconds * 16000))).astype(np.float32)
  kwargs = dict(chunk_length_s=f.chunk_s, stride_length_s=(f.left_s, f.right_s), batch_size=f.batch_size)
  base = {}
  with tempfile.TemporaryDirectory() as directory:
    _build_hf(directory)
    for dtype in f.dtypes:
      asr = _hf_pipeline(directory, dtype)
      hf = lambda: asr({"raw": audio, "sampling_rate": 16000}, **kwargs)["text"]  # pylint: disable=cell-var-from-loop
      hf()  # warm-up
      hf_time, hf_text = _best_time(hf, f.repeats)
      ours = Recognizer.from_pretrained(directory, chunk_s=f.chunk_s, context_s=(f.left_s + f.right_s) / 2,
                                        batch_size=f.batch_size, dtype=dtype)
      start = time.perf_counter()
      ours.transcribe(audio)
      compile_s = time.perf_counter() - start
      our_time, our_text = _best_time(lambda: ours.transcribe(audio).text, f.repeats)  # pylint: disable=cell-var-from-loop
      base.setdefault("hf_time", hf_time)
      base.setdefault("hf_text", hf_text)
      base.setdefault("our_text", our_text)
      row = {"case": "transcribe BASE", "seconds": f.seconds, "chunk_s": f.chunk_s, "dtype": dtype,
             "transformers_audio_s_per_s": round(f.seconds / hf_time, 2),
             "ours_audio_s_per_s": round(f.seconds / our_time, 2), "ratio": round(hf_time / our_time, 3),
             "ratio_vs_transformers_" + f.dtypes[0]: round(base["hf_time"] / our_time, 3),
             "ours_first_call_s": round(compile_s, 1)}
      if dtype != f.dtypes[0]:
        row.update({"transformers_cer_vs_" + f.dtypes[0]: round(_cer(base["hf_text"], hf_text), 4),
                    "ours_cer_vs_" + f.dtypes[0]: round(_cer(base["our_text"], our_text), 4)})
      print(json.dumps(row), flush=True)


def window_parts(f):
  """Forward time of one window of random BASE CTC weights, whole and by part, per dtype (best of --repeats)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from wav2vec_jax.models import Wav2Vec2ForCTC, get_variant  # pylint: disable=g-import-not-at-top
  from wav2vec_jax.models.feature_encoder import FeatureEncoder  # pylint: disable=g-import-not-at-top
  from wav2vec_jax.models.transformer import EncoderLayer, PositionalConvEmbedding  # pylint: disable=g-import-not-at-top

  samples = int(f.chunk_s * 16000)
  waveform = jnp.asarray(np.random.default_rng(0).normal(size=(1, samples)).astype(np.float32) * 0.1)
  hidden = jnp.ones((1, samples // 320 - 1, 768), jnp.float32)
  for dtype in f.dtypes:
    cfg = get_variant("base", vocab_size=len(LETTERS), pos_conv_impl="conv", dtype=dtype)
    row = {"case": "one window, forward", "chunk_s": f.chunk_s, "dtype": dtype}
    for name, module, args in [("model_s", Wav2Vec2ForCTC(cfg), (waveform,)),
                               ("conv_encoder_s", FeatureEncoder(cfg), (waveform,)),
                               ("one_layer_s", EncoderLayer(cfg), (hidden, jnp.ones(hidden.shape[:2], bool))),
                               ("pos_conv_s", PositionalConvEmbedding(cfg), (hidden,))]:
      params = jax.device_put(kernels_in(jax.jit(module.init)(jax.random.PRNGKey(0), *args), dtype))  # as Recognizer
      forward = jax.jit(module.apply)
      jax.block_until_ready(forward(params, *args))
      row[name] = round(_best_time(lambda: jax.block_until_ready(forward(params, *args)), f.repeats)[0], 3)  # pylint: disable=cell-var-from-loop
    print(json.dumps(row), flush=True)


def _peaky(sentences, vocab, rng):
  """CTC log-probs spelling `sentences`: 2-4 frames per label then blanks, 10% of letters confused."""
  rows = []
  for label in vocab.encode(" ".join(sentences)):
    for _ in range(int(rng.integers(1, 3))):
      row = rng.normal(0.0, 1.0, vocab.size)
      row[label] += 6.0
      if label > 4 and rng.random() < 0.1:
        row[int(rng.integers(5, vocab.size))] += 6.5
      rows.append(row)
    for _ in range(int(rng.integers(1, 3))):
      row = rng.normal(0.0, 1.0, vocab.size)
      row[0] += 7.0
      rows.append(row)
  logits = np.array(rows)
  return (logits - np.log(np.exp(logits).sum(-1, keepdims=True))).astype(np.float32)


def beam_search(f):
  """Utterances per second: our decoder (pool kept) vs pyctcdecode as Wav2Vec2ProcessorWithLM calls it."""
  vocab = Vocab(tuple(LETTERS))
  rng = np.random.default_rng(1)
  words = ["".join(rng.choice(list("ETAOINSHRDLU"), size=int(rng.integers(2, 8)))) for _ in range(300)]
  sentences = [" ".join(rng.choice(words, size=int(rng.integers(4, 12)))) for _ in range(2000)]
  utterances = [_peaky([sentences[i]], vocab, rng) for i in range(f.utterances)]
  audio_s = sum(len(u) for u in utterances) * 0.02
  with tempfile.TemporaryDirectory() as directory:
    lm = os.path.join(directory, "lm.arpa")
    ngram.write_arpa(sentences, lm, order=3)
    options = beam.BeamOptions(beam_width=f.beam_width, lm_weight=0.5, word_score=1.0)
    ours = beam.BeamSearchDecoder(vocab, lm, options)
    ours.decode_batch(utterances[:2])  # starts the pool (as a long-lived decoder would have)
    our_time, ours_out = _best_time(lambda: [h[0].text for h in ours.decode_batch(utterances)], f.repeats)
    ours.close()
    row = {"case": "beam+LM", "utterances": f.utterances, "audio_s": round(audio_s, 1), "beam_width": f.beam_width,
           "ours_audio_s_per_s": round(audio_s / our_time, 1)}
    try:
      import pyctcdecode  # pylint: disable=g-import-not-at-top
    except ImportError:
      row["pyctcdecode"] = "not installed: pip install --no-deps pyctcdecode==0.5.0 pygtrie"
      print(json.dumps(row), flush=True)
      return
    labels = ["" if i == 0 else " " if t == "|" else "⁇" if t == "<unk>" else t for i, t in enumerate(LETTERS)]
    decoder = pyctcdecode.build_ctcdecoder(labels, lm, alpha=0.5, beta=1.0)

    def transformers_style():  # Wav2Vec2ProcessorWithLM.batch_decode: a fresh fork pool for every call
      with multiprocessing.get_context("fork").Pool(os.cpu_count()) as pool:
        return [b[0][0] for b in decoder.decode_beams_batch(pool, utterances, beam_width=f.beam_width)]

    theirs_time, theirs_out = _best_time(transformers_style, f.repeats)
    agree = np.mean([" ".join(a.split()) == " ".join(b.split()) for a, b in zip(ours_out, theirs_out)])
    row.update({"pyctcdecode_audio_s_per_s": round(audio_s / theirs_time, 1), "ratio": round(theirs_time / our_time, 3),
                "same_text_fraction": round(float(agree), 3)})
    print(json.dumps(row), flush=True)


def main(argv):
  del argv
  f = flags.FLAGS
  if f.parts:
    window_parts(f)
  transcription(f)
  if not f.skip_beam:
    beam_search(f)


if __name__ == "__main__":
  app.run(main)
