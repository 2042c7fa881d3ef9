r"""Transcribes audio files (wav, flac, ogg, mp3; any rate, stereo mixed down) with a CTC checkpoint.

  python experiments/transcribe.py --checkpoint=/tmp/wav2vec_jax/finetune/best --audio=talk.flac
  python experiments/transcribe.py --checkpoint=/ckpt/wav2vec2-base-960h --audio=a.wav,b.mp3 \
      --lm=/data/lm.arpa --format=srt --output_dir=/tmp/subs
Long files run in overlapping windows (--chunk_s, --context_s) stitched frame by frame. Prints the text (or, with
--format=jsonl, one JSON line per file); with --output_dir writes `<name>.<format>` per file.
"""

import os
import sys

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from data_pipelines import storage  # noqa: E402  pylint: disable=g-import-not-at-top
from data_pipelines.errors import AudioInputError  # noqa: E402  pylint: disable=g-import-not-at-top
from data_pipelines.vocab import VocabError  # noqa: E402  pylint: disable=g-import-not-at-top
from wav2vec_jax.inference import beam, transcript_formats  # noqa: E402  pylint: disable=g-import-not-at-top
from wav2vec_jax.inference.recognizer import Recognizer, RecognizerError  # noqa: E402  pylint: disable=g-import-not-at-top
from wav2vec_jax.interop.convert import CheckpointMismatchError  # noqa: E402  pylint: disable=g-import-not-at-top
from wav2vec_jax.training import runtime  # noqa: E402  pylint: disable=g-import-not-at-top

flags.DEFINE_string("checkpoint", None, "CTC checkpoint: save_pretrained dir (e.g. <workdir>/best), HF dir or "
                    "fairseq .pt.")
flags.DEFINE_list("audio", None, "Audio files, comma-separated.")
flags.DEFINE_string("vocab", "", "vocab.json or dict.ltr.txt (default: next to the checkpoint).")
flags.DEFINE_enum("format", "txt", transcript_formats.FORMATS, "Output format.")
flags.DEFINE_string("output_dir", "", "Write <audio name>.<format> here (default: print to stdout).")
flags.DEFINE_float("chunk_s", 20.0, "Window seconds for long files.")
flags.DEFINE_float("context_s", 3.0, "Seconds of context each side of a window's kept part.")
flags.DEFINE_integer("batch_size", 4, "Windows per forward pass.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype: bfloat16 matmuls with float32 sums "
                  "run ~1.5x faster on CPU (README, Speed).")
flags.DEFINE_enum("normalize", "auto", ["auto", "true", "false"], "Input normalisation (auto: as the checkpoint).")
flags.DEFINE_string("lm", "", "KenLM n-gram (ARPA or binary) for beam search; empty: greedy unless --beam_width.")
flags.DEFINE_integer("beam_width", 0, "Beam search width (0: greedy, or 64 with --lm).")
flags.DEFINE_float("lm_weight", 0.5, "LM weight (alpha).")
flags.DEFINE_float("word_score", 1.0, "Word insertion score (beta).")
flags.DEFINE_list("hotwords", [], "Words to favour in beam search.")
flags.DEFINE_float("hotword_weight", 10.0, "Hotword bonus.")
flags.mark_flags_as_required(["checkpoint", "audio"])

# Bad input: the message names the file, the cause and the fix; the run stops with it, not a traceback.
EXPECTED_ERRORS = (RecognizerError, AudioInputError, beam.LanguageModelError, VocabError, CheckpointMismatchError,
                   FileNotFoundError)


def make_decoder(f, vocab, seconds_per_frame):
  """A BeamSearchDecoder from the flags, or None for greedy decoding."""
  if not (f.lm or f.beam_width or f.hotwords):
    return None
  options = beam.BeamOptions(beam_width=f.beam_width or 64, lm_weight=f.lm_weight, word_score=f.word_score,
                             hotwords=tuple(f.hotwords), hotword_weight=f.hotword_weight)
  return beam.BeamSearchDecoder(vocab, f.lm or None, options, seconds_per_frame=seconds_per_frame, workers=1)


def main(argv):
  del argv
  runtime.start_entry_point(tensorflow=False)  # files are read with soundfile/librosa, not tf.data
  runtime.stop_on(EXPECTED_ERRORS, transcribe, flags.FLAGS)


def transcribe(f):
  """Transcribes every --audio file with the flags' settings."""
  normalize = None if f.normalize == "auto" else f.normalize == "true"
  recognizer = Recognizer.from_pretrained(f.checkpoint, f.vocab or None, normalize=normalize, chunk_s=f.chunk_s,
                                          context_s=f.context_s, batch_size=f.batch_size, dtype=f.dtype)
  decoder = make_decoder(f, recognizer.vocab, recognizer.seconds_per_frame)
  for path in f.audio:
    transcript = recognizer.transcribe_file(path, decoder=decoder)
    text = transcript_formats.render(f.format, path, transcript)
    if f.output_dir:
      storage.Path(f.output_dir).mkdir(parents=True, exist_ok=True)
      stem = storage.Path(path).name.rsplit(".", 1)[0]
      out = storage.join(f.output_dir, f"{stem}.{f.format}")
      storage.write_text(out, text)
      logging.info("%s: %.1f s of audio, %d words -> %s", path, transcript.duration, len(transcript.words), out)
    else:
      sys.stdout.write(text if f.format != "txt" else f"{path}\t{text}")
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(main)
