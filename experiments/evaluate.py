r"""WER and CER of a CTC checkpoint on a split, decoded and scored exactly as the trainer's validation.

  python experiments/evaluate.py --checkpoint=/tmp/wav2vec_jax/finetune/best --split=test
  python experiments/evaluate.py --checkpoint=/ckpt/wav2vec2-base-960h --source=librispeech \
      --path=/data/LibriSpeech --split=test-clean --output_dir=/tmp/eval
  # beam search with a 4-gram; pick LM weight and word score on dev, then use them on test:
  python experiments/evaluate.py --checkpoint=... --split=dev --lm=/data/4gram.arpa \
      --grid_lm_weights=0,0.5,1,1.5,2 --grid_word_scores=-1,0,1,2
  python experiments/evaluate.py --checkpoint=... --split=test --lm=/data/4gram.arpa --lm_weight=1 --word_score=0
Greedy by default (the trainer's validation); beam search with --lm or --beam_width. Writes
`<output_dir>/hypotheses.jsonl` (id, reference, hypothesis, loss per utterance) and `summary.json`.
"""

import json
import os
import sys

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from data_pipelines.errors import AudioInputError, DataConfigError  # noqa: E402  pylint: disable=g-import-not-at-top
from data_pipelines.vocab import VocabError  # noqa: E402  pylint: disable=g-import-not-at-top
from wav2vec_jax.inference import beam  # noqa: E402  pylint: disable=g-import-not-at-top
from wav2vec_jax.inference.checkpoint_eval import evaluate_checkpoint, write_evaluation  # noqa: E402  pylint: disable=g-import-not-at-top
from wav2vec_jax.inference.recognizer import RecognizerError  # noqa: E402  pylint: disable=g-import-not-at-top
from wav2vec_jax.interop.convert import CheckpointMismatchError  # noqa: E402  pylint: disable=g-import-not-at-top
from wav2vec_jax.training import runtime  # noqa: E402  pylint: disable=g-import-not-at-top

flags.DEFINE_string("checkpoint", None, "save_pretrained dir (e.g. <workdir>/best), HF dir or fairseq .pt.")
flags.DEFINE_string("source", "corpus", "corpus, librispeech, manifest or tfds.")
flags.DEFINE_string("path", "", "Data folder, manifest folder/file or TFDS data_dir.")
flags.DEFINE_string("split", "dev", "Split(s), comma-separated.")
flags.DEFINE_string("tfds_name", "", "TFDS dataset name (source=tfds).")
flags.DEFINE_string("vocab", "", "vocab.json or dict.ltr.txt (default: next to the checkpoint).")
flags.DEFINE_integer("batch_budget", 0, "Samples per batch (default: the run's validation setting).")
flags.DEFINE_enum("normalize", "auto", ["auto", "true", "false"], "Per-utterance zero mean, unit variance input. "
                  "auto: the run's input.json, else the checkpoint's preprocessor_config.json do_normalize, else on "
                  "for layer-norm encoders (LARGE, XLSR) as fairseq.")
flags.DEFINE_string("output_dir", "", "Where to write hypotheses.jsonl and summary.json (default: print only).")
flags.DEFINE_string("lm", "", "KenLM n-gram (ARPA or binary) for beam search (experiments/build_lm.py makes one).")
flags.DEFINE_integer("beam_width", 0, "Beam search width (0: greedy, or 64 with --lm).")
flags.DEFINE_string("languages", "", "Comma-separated languages to score (default: all); several languages are "
                    "also scored each on their own.")
flags.DEFINE_float("lm_weight", 0.5, "LM weight (alpha).")
flags.DEFINE_float("word_score", 1.0, "Word insertion score (beta).")
flags.DEFINE_list("grid_lm_weights", [], "LM weights to try (with --grid_word_scores): reports the best pair.")
flags.DEFINE_list("grid_word_scores", [], "Word scores to try.")
flags.DEFINE_bool("progress", True, "A progress bar.")
flags.mark_flag_as_required("checkpoint")

EXPECTED_ERRORS = (RecognizerError, AudioInputError, DataConfigError, beam.LanguageModelError, VocabError,
                   CheckpointMismatchError, FileNotFoundError)


def main(argv):
  del argv
  runtime.start_entry_point()
  runtime.stop_on(EXPECTED_ERRORS, evaluate, flags.FLAGS)


def evaluate(f):
  """Evaluates --checkpoint on --split with the flags' decoding; writes and prints the summary."""
  grid = [(float(a), float(b)) for a in f.grid_lm_weights for b in f.grid_word_scores]
  if bool(f.grid_lm_weights) != bool(f.grid_word_scores):
    raise app.UsageError("--grid_lm_weights and --grid_word_scores go together (the grid is their product)")
  options = None
  if f.lm or f.beam_width or grid:
    options = beam.BeamOptions(beam_width=f.beam_width or 64, lm_weight=f.lm_weight, word_score=f.word_score)
  result = evaluate_checkpoint(f.checkpoint, f.source, f.path, f.split, tfds_name=f.tfds_name,
                               languages=f.languages, vocab=f.vocab or None, batch_budget=f.batch_budget or None,
                               normalize=None if f.normalize == "auto" else f.normalize == "true", lm=f.lm or None,
                               beam_options=options, grid=grid, progress=f.progress)
  decoding = "greedy" if options is None else f"beam {options.beam_width}" + (f" + {f.lm}" if f.lm else "")
  summary = {"checkpoint": f.checkpoint, "source": f.source, "path": f.path, "split": f.split, "decoding": decoding,
             **result.metrics}
  if f.output_dir:
    write_evaluation(f.output_dir, result, summary)
  logging.info("WER %.4f  CER %.4f  over %d utterances%s", result.metrics["wer"], result.metrics["cer"],
               result.metrics["utterances"],
               f" ({int(result.metrics['not_scored'])} not scored: see the warning above)"
               if result.metrics["not_scored"] else "")
  for name, rates in result.metrics.get("languages", {}).items():
    logging.info("  %-8s WER %.4f  CER %.4f  over %d utterances", name, rates["wer"], rates["cer"],
                 rates["utterances"])
  print(json.dumps(summary))


if __name__ == "__main__":
  app.run(main)
