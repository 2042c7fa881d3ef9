r"""Forced alignment: word and character times of known transcripts in audio files, with a CTC checkpoint.

  python experiments/align.py --checkpoint=/tmp/wav2vec_jax/finetune/best --audio=talk.flac \
      --transcript=talk.txt --out=/tmp/talk.TextGrid --format=textgrid
  python experiments/align.py --checkpoint=/ckpt/wav2vec2-base-960h --audio=a.wav,b.mp3 \
      --transcript="HELLO WORLD" --transcript=b.txt --out=/tmp/ab.ctm --format=ctm
One --transcript per audio file, in order: the text itself, or a file holding it. Long recordings are fine (the model
runs in stitched windows, the Viterbi search in checkpointed blocks; see wav2vec_jax/inference/alignment.py).
Characters outside the vocabulary align through a wildcard token and are flagged `oov`. Without --out the result
is printed. Bad input (unreadable audio, a transcript too long for its audio, a missing checkpoint) stops with one
line `stopped: ...` and exit status 1.
"""

import os
import sys

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from data_pipelines import audio, storage  # noqa: E402  pylint: disable=g-import-not-at-top
from data_pipelines.errors import AudioInputError  # noqa: E402  pylint: disable=g-import-not-at-top
from data_pipelines.vocab import VocabError  # noqa: E402  pylint: disable=g-import-not-at-top
from wav2vec_jax.inference import alignment, alignment_formats  # noqa: E402  pylint: disable=g-import-not-at-top
from wav2vec_jax.inference.recognizer import Recognizer, RecognizerError  # noqa: E402  pylint: disable=g-import-not-at-top
from wav2vec_jax.interop.convert import CheckpointMismatchError  # noqa: E402  pylint: disable=g-import-not-at-top
from wav2vec_jax.training import runtime  # noqa: E402  pylint: disable=g-import-not-at-top

flags.DEFINE_string("checkpoint", None, "CTC checkpoint: save_pretrained dir (e.g. <workdir>/best), HF dir or "
                    "fairseq .pt.")
flags.DEFINE_list("audio", None, "Audio files, comma-separated (any format and rate; mixed down to mono 16 kHz).")
flags.DEFINE_multi_string("transcript", None, "One per audio file, in order: the text, or a file holding it.")
flags.DEFINE_string("out", "", "Output file (a directory for several files in textgrid format); empty: print.")
flags.DEFINE_enum("format", "json", alignment_formats.FORMATS, "Output format.")
flags.DEFINE_string("vocab", "", "vocab.json or dict.ltr.txt (default: next to the checkpoint).")
flags.DEFINE_enum("normalize", "auto", ["auto", "true", "false"], "Input normalisation (auto: as the checkpoint).")
flags.DEFINE_float("chunk_s", 20.0, "Model window seconds for long files.")
flags.DEFINE_float("context_s", 3.0, "Seconds of context each side of a window's kept part.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype of the model pass (bfloat16: ~1.5x "
                  "faster on CPU).")
flags.mark_flags_as_required(["checkpoint", "audio", "transcript"])

# Bad input: the message names the file, the cause and the fix; the run stops with it, not a traceback.
EXPECTED_ERRORS = (alignment.AlignmentError, RecognizerError, AudioInputError, VocabError, CheckpointMismatchError,
                   FileNotFoundError)
_TEXT_SUFFIXES = (".txt", ".lab", ".ltr", ".wrd", ".trn")


def read_transcript(value: str) -> str:
  """The text of a --transcript value: a file's contents if it names a file, else the value itself."""
  if storage.Path(value).is_file():
    return storage.Path(value).read_text(encoding="utf-8")
  if value.lower().endswith(_TEXT_SUFFIXES):
    raise FileNotFoundError(f"{value}: transcript file not found (to align this literal text, drop the suffix)")
  return value


def align_files(recognizer: Recognizer, paths: list[str], transcripts: list[str]) -> list[alignment.Alignment]:
  """Aligns each audio file to its transcript text; utterance ids are the file names without extension."""
  if recognizer.seconds_per_frame != alignment.FRAME_SECONDS:
    raise RecognizerError(f"the model makes a frame every {recognizer.seconds_per_frame} s; alignment times assume "
                          f"{alignment.FRAME_SECONDS} s (a 320-sample conv stride at 16 kHz)")
  results = []
  for path, text in zip(paths, transcripts):
    log_probs = recognizer.log_probs(audio.load_waveform(path), name=path)
    results.append(alignment.align(log_probs, text, recognizer.vocab, name=storage.Path(path).stem))
    logging.info("%s: %.1f s, %d words, path log-prob %.1f", path, results[-1].duration, len(results[-1].words),
                 results[-1].log_prob)
  return results


def run(f) -> None:
  """Aligns every --audio file with the flags' settings and writes or prints the result."""
  if len(f.transcript) != len(f.audio):
    raise app.UsageError(f"{len(f.audio)} audio files but {len(f.transcript)} --transcript values: give one each")
  if f.format == "textgrid" and len(f.audio) > 1 and not f.out:
    raise app.UsageError("several TextGrids need --out (a directory)")
  transcripts = [read_transcript(t) for t in f.transcript]
  normalize = None if f.normalize == "auto" else f.normalize == "true"
  recognizer = Recognizer.from_pretrained(f.checkpoint, f.vocab or None, normalize=normalize, chunk_s=f.chunk_s,
                                          context_s=f.context_s, dtype=f.dtype)
  results = align_files(recognizer, f.audio, transcripts)
  if f.out:
    for path in alignment_formats.write_alignments(results, f.out, f.format):
      logging.info("wrote %s", path)
  elif f.format == "textgrid":
    sys.stdout.write(alignment_formats.to_textgrid(results[0]))
  else:
    sys.stdout.write(alignment_formats.to_json(results) if f.format == "json" else alignment_formats.to_ctm(results))
  sys.stdout.flush()


def main(argv):
  del argv
  runtime.start_entry_point()
  runtime.stop_on(EXPECTED_ERRORS, run, flags.FLAGS)


if __name__ == "__main__":
  app.run(main)
