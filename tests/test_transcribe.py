"""Transcription: an imported transformers CTC model transcribes through `experiments/transcribe.py` exactly as
transformers' pipeline does, and a model of ours exported with `experiments/export_hf.py` transcribes in
transformers exactly as here; windowed long-audio inference is stitched frame-exactly; output formats parse; bad input
stops with one line naming the file and the cause."""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest
import soundfile as sf

import hf_reference  # tests/hf_reference.py
import wav2vec_jax
from data_pipelines import storage
from data_pipelines.vocab import Vocab
from wav2vec_jax.inference import decoding, recognizer, transcript_formats
from wav2vec_jax.models.config import ModelConfig, get_variant
from wav2vec_jax.models.wav2vec2 import Wav2Vec2ForCTC

transformers = hf_reference.transformers
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LETTERS = ["<pad>", "<s>", "</s>", "<unk>", "|"] + list("ETAOINSHRDLU")


def _transcribe(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, os.path.join(REPO, "experiments", "transcribe.py"), *args],
                        capture_output=True, text=True, env=env, timeout=600, check=False)


@pytest.fixture(scope="module", name="hf_ctc")
def _hf_ctc(tmp_path_factory):
  """A random transformers Wav2Vec2ForCTC with a tokenizer and feature extractor saved by transformers, and audio."""
  root = tmp_path_factory.mktemp("hf_ctc")
  model_dir = str(root / "model")
  vocab_file = str(root / "letters.json")
  storage.write_text(vocab_file, json.dumps({t: i for i, t in enumerate(LETTERS)}))
  tokenizer = transformers.Wav2Vec2CTCTokenizer(vocab_file, word_delimiter_token="|")
  extractor = transformers.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False)
  model = hf_reference.save_reference(model_dir, "base", "Wav2Vec2ForCTC", seed=3, vocab_size=len(tokenizer),
                                      pad_token_id=tokenizer.pad_token_id)
  # A trained model never emits <s> or </s> (transformers' pipeline would print them, we drop them); make words.
  with hf_reference.torch.no_grad():
    model.lm_head.bias[1:3] = -100.0
    model.lm_head.bias[LETTERS.index("|")] += 0.4
  model.save_pretrained(model_dir)
  transformers.Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(model_dir)
  rng = np.random.default_rng(0)
  files = []
  for i, (seconds, fmt) in enumerate([(2.0, "wav"), (3.3, "flac"), (4.7, "wav")]):
    t = np.arange(int(seconds * 16000)) / 16000
    wave = 0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t * (1 + 0.3 * t)) * (1 + np.sin(2 * np.pi * 3 * t))
    wave = (wave + 0.05 * rng.normal(size=t.size)).astype(np.float32)
    path = str(root / f"clip{i}.{fmt}")
    sf.write(path, wave, 16000, subtype="PCM_16")
    files.append(path)
  return model_dir, files


def test_an_imported_transformers_model_transcribes_like_the_transformers_pipeline(hf_ctc):
  model_dir, files = hf_ctc
  asr = transformers.pipeline("automatic-speech-recognition", model=model_dir, device="cpu")
  expected = [asr({"raw": sf.read(path, dtype="float32")[0], "sampling_rate": 16000})["text"] for path in files]
  result = _transcribe(f"--checkpoint={model_dir}", f"--audio={','.join(files)}", "--format=jsonl")
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [json.loads(line) for line in result.stdout.splitlines()]
  assert [r["audio"] for r in rows] == files
  assert [r["text"] for r in rows] == [" ".join(t.split()) for t in expected]
  assert sum(len(t.split()) for t in expected) >= 3  # the random model says something, not only blanks
  for row in rows:
    starts = [w["start"] for w in row["words"]]
    assert starts == sorted(starts) and all(0 <= w["start"] < w["end"] <= row["duration"] + 0.03 for w in row["words"])
    assert all(0 < w["confidence"] <= 1 for w in row["words"])


def test_bfloat16_transcription_keeps_kernels_in_bfloat16_and_stays_close(hf_ctc):
  model_dir, files = hf_ctc
  full = recognizer.Recognizer.from_pretrained(model_dir)
  low = recognizer.Recognizer.from_pretrained(model_dir, dtype="bfloat16")
  dtypes = {p.dtype.name for p in jax.tree_util.tree_leaves(low.params) if p.ndim >= 2}
  assert dtypes == {"bfloat16"}  # matmul and conv kernels stored once in bfloat16
  assert {p.dtype.name for p in jax.tree_util.tree_leaves(low.params) if p.ndim == 1} == {"float32"}
  waveform = sf.read(files[2], dtype="float32")[0]
  expected, got = full.log_probs(waveform), low.log_probs(waveform)
  assert got.dtype == np.float32 and got.shape == expected.shape
  error = np.abs(np.exp(got) - np.exp(expected)).max()
  assert 1e-4 < error < 0.05  # bfloat16 rounding shows in the probabilities, and stays small
  assert np.mean(got.argmax(-1) == expected.argmax(-1)) > 0.95


def _local_model(num_layers=0):
  """A CTC model whose frames see only nearby audio (without attention layers: per-frame norms and a 16-frame
  positional conv)."""
  cfg = ModelConfig(conv_dim=(16,) * 7, feat_extract_norm="layer", conv_bias=True, hidden_size=32,
                    num_layers=num_layers, num_heads=2, intermediate_size=32, num_conv_pos_embeddings=16,
                    num_conv_pos_embedding_groups=4, vocab_size=len(LETTERS), mask_time_prob=0.0, layer_norm_first=True)
  return Wav2Vec2ForCTC(cfg)


def test_windowed_inference_is_stitched_frame_exactly():
  # Each window keeps >= 40 frames of context, so the stitched output must equal the whole-file pass frame for frame.
  model = _local_model()
  waveform = np.random.default_rng(1).normal(size=7 * 16000 + 123).astype(np.float32)
  variables = model.init(jax.random.PRNGKey(0), waveform[None, :16000])
  vocab = Vocab(tuple(LETTERS))
  whole = recognizer.Recognizer(model, variables, vocab, chunk_s=60.0)
  windowed = recognizer.Recognizer(model, variables, vocab, chunk_s=2.0, context_s=0.8, batch_size=3)
  expected = whole.log_probs(waveform)
  got = windowed.log_probs(waveform)
  assert len(recognizer.window_plan(len(expected), windowed.window_frames, windowed.context_frames)) >= 5
  assert got.shape == expected.shape == (whole.num_frames(waveform.size), len(LETTERS))
  np.testing.assert_allclose(got, expected, atol=2e-5)


def test_padded_batches_of_short_files_match_one_by_one():
  model = _local_model(num_layers=2)  # attention: padded frames must be masked out
  rng = np.random.default_rng(2)
  waveforms = [rng.normal(size=n).astype(np.float32) for n in (16000, 9000, 23456, 401, 30000)]
  variables = model.init(jax.random.PRNGKey(1), waveforms[0][None])
  ours = recognizer.Recognizer(model, variables, Vocab(tuple(LETTERS)), normalize=True)
  batched = ours.log_probs_batch(waveforms, bucket_s=1.0, batch_size=2)
  for waveform, got in zip(waveforms, batched):
    np.testing.assert_allclose(got, ours.log_probs(waveform), atol=2e-5)


@pytest.mark.parametrize("frames", [1, 99, 100, 101, 157, 250, 1000, 1001])
def test_window_plans_tile_the_file_and_keep_context(frames):
  window, context = 100, 20
  plan = recognizer.window_plan(frames, window, context)
  kept = [(k, e) for _, k, e in plan]
  assert kept[0][0] == 0 and kept[-1][1] == frames
  assert all(a[1] == b[0] for a, b in zip(kept, kept[1:]))  # no gap, no overlap
  for i, (start, first, end) in enumerate(plan):
    assert 0 <= start <= first < end <= start + min(window, frames)
    if i > 0:
      assert first - start >= context
    if i < len(plan) - 1:
      assert start + window - end >= context


def test_subtitles_and_json_lines_parse():
  words = (decoding.Word("HELLO", 0.5, 0.9, 0.8), decoding.Word("THERE", 1.0, 1.4, 0.7),
           decoding.Word("AGAIN", 3.0, 3.5, float("nan")))
  transcript = recognizer.Transcript("HELLO THERE AGAIN", words, 4.0)
  srt = transcript_formats.render("srt", "a.wav", transcript)
  assert srt.split("\n\n")[0] == "1\n00:00:00,500 --> 00:00:01,400\nHELLO THERE"  # the 1.6 s pause starts a new cue
  assert "2\n00:00:03,000 --> 00:00:03,500\nAGAIN" in srt
  vtt = transcript_formats.render("vtt", "a.wav", transcript)
  assert vtt.startswith("WEBVTT\n\n00:00:00.500 --> 00:00:01.400\nHELLO THERE\n")
  row = json.loads(transcript_formats.render("jsonl", "a.wav", transcript))
  assert row["words"][2] == {"word": "AGAIN", "start": 3.0, "end": 3.5, "confidence": None}
  assert transcript_formats.render("txt", "a.wav", transcript) == "HELLO THERE AGAIN\n"


def test_bad_input_stops_with_the_file_and_the_cause(hf_ctc, tmp_path):
  model_dir, files = hf_ctc
  garbage = str(tmp_path / "garbage.wav")
  storage.Path(garbage).write_bytes(b"RIFF not really a wave file" * 10)
  empty = str(tmp_path / "empty.flac")
  storage.Path(empty).write_bytes(b"")
  short = str(tmp_path / "short.wav")
  sf.write(short, np.zeros(200, np.float32), 16000)
  bare = str(tmp_path / "bare")
  hf_reference.save_reference(bare, "base", "Wav2Vec2Model")
  wrong_vocab = str(tmp_path / "vocab.json")
  storage.write_text(wrong_vocab, json.dumps({t: i for i, t in enumerate(LETTERS[:8])}))
  cases = [
      ([f"--audio={garbage}"], f"stopped: AudioInputError: {garbage}"),
      ([f"--audio={empty}"], f"stopped: AudioInputError: {empty}"),
      ([f"--audio={short}"],
       f"AudioInputError: {short}: too_short: 200 samples, fewer than the 400-sample receptive field"),
      ([f"--audio={files[0]}", "--chunk_s=5"], "chunk_s=5.0 must be longer than twice context_s=3.0"),
      ([f"--audio={files[0]}", f"--vocab={wrong_vocab}"], "the CTC head has 17 outputs but the vocabulary has 8"),
      ([f"--audio={files[0]}", f"--lm={tmp_path / 'missing.arpa'}"], "missing.arpa: language model file not found"),
  ]
  for args, message in cases:
    result = _transcribe(f"--checkpoint={model_dir}", *args)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr, (
        args, result.stderr[-2000:])
  result = _transcribe(f"--checkpoint={bare}", f"--audio={files[0]}")
  assert result.returncode == 1 and "has no CTC head" in result.stderr and "Traceback" not in result.stderr


def test_an_exported_model_transcribes_in_transformers_as_it_does_here(hf_ctc, tmp_path):
  _, files = hf_ctc  # the fixture's audio
  model = Wav2Vec2ForCTC(get_variant("tiny", vocab_size=len(LETTERS)))  # group norm: no attention mask in HF
  params = jax.tree_util.tree_map(np.asarray, nn.unbox(model.init(jax.random.PRNGKey(5), np.zeros((1, 16000))))["params"])
  params["lm_head"]["bias"] = params["lm_head"]["bias"].copy()
  params["lm_head"]["bias"][1:3] = -100.0  # no <s> / </s>, as a trained model (the pipeline would print them)
  params["lm_head"]["bias"][LETTERS.index("|")] += 0.3
  ours = str(tmp_path / "best")  # laid out as a fine-tuning run's best checkpoint
  wav2vec_jax.save_pretrained(ours, model, {"params": params})
  Vocab(tuple(LETTERS)).save_hf(os.path.join(ours, "vocab.json"))
  storage.write_text(os.path.join(ours, "input.json"), json.dumps({"normalize": True}))
  out = str(tmp_path / "hf")
  done = subprocess.run([sys.executable, os.path.join(REPO, "experiments", "export_hf.py"), f"--checkpoint={ours}",
                         f"--out={out}"], capture_output=True, text=True, check=False, timeout=600,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert done.returncode == 0, done.stderr[-3000:]
  processor = transformers.Wav2Vec2Processor.from_pretrained(out)
  assert processor.feature_extractor.do_normalize and not processor.feature_extractor.return_attention_mask
  assert processor.tokenizer.convert_ids_to_tokens(list(range(len(LETTERS)))) == LETTERS
  asr = transformers.pipeline("automatic-speech-recognition", model=out, device="cpu")
  expected = [asr({"raw": sf.read(path, dtype="float32")[0], "sampling_rate": 16000})["text"] for path in files]
  here = recognizer.Recognizer.from_pretrained(ours)
  assert [here.transcribe_file(path).text for path in files] == [" ".join(t.split()) for t in expected]
  assert sum(len(t.split()) for t in expected) >= 3, expected  # words, not only blanks
