r"""Exports a fine-tuned CTC model as a Hugging Face directory (model + processor) that `transformers` loads.

  python experiments/export_hf.py --checkpoint=/tmp/wav2vec_jax/finetune/best --out=/tmp/wav2vec_jax/hf
  # then, in PyTorch:
  #   asr = transformers.pipeline("automatic-speech-recognition", model="/tmp/wav2vec_jax/hf")
"""

import os
import sys

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from data_pipelines.vocab import VocabError  # noqa: E402  pylint: disable=g-import-not-at-top
from wav2vec_jax.inference.recognizer import RecognizerError  # noqa: E402  pylint: disable=g-import-not-at-top
from wav2vec_jax.interop import hf_export  # noqa: E402  pylint: disable=g-import-not-at-top
from wav2vec_jax.interop.convert import CheckpointMismatchError  # noqa: E402  pylint: disable=g-import-not-at-top
from wav2vec_jax.training import runtime  # noqa: E402  pylint: disable=g-import-not-at-top

flags.DEFINE_string("checkpoint", None, "CTC checkpoint: a fine-tuning run's <workdir>/best, a workdir, an HF "
                    "directory or a fairseq .pt.")
flags.DEFINE_string("out", None, "Output directory (local or gs://).")
flags.mark_flags_as_required(["checkpoint", "out"])


def main(argv):
  del argv
  runtime.start_entry_point(tensorflow=False)  # reads and writes checkpoints only
  f = flags.FLAGS
  written = runtime.stop_on((RecognizerError, VocabError, CheckpointMismatchError, FileNotFoundError),
                            hf_export.export_ctc, f.checkpoint, f.out)
  for path in written:
    logging.info("wrote %s", path)
  print(f.out)


if __name__ == "__main__":
  app.run(main)
