r"""WER and CER of a CTC checkpoint on a split, decoded and scored exactly as the trainer's validation.

  python experiments/evaluate.py --checkpoint=/tmp/wav2vec_jax/finetune/best --split=test
  python experiments/evaluate.py --checkpoint=/ckpt/wav2vec2-base-960h --source=librispeech \
      --path=/data/LibriSpeech --split=test-clean --output_dir=/tmp/eval
Writes `<output_dir>/hypotheses.jsonl` (id, reference, hypothesis, loss per utterance) and `summary.json`.
"""

import json
import os
import sys

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from wav2vec_jax.inference.checkpoint_eval import evaluate_checkpoint  # noqa: E402  pylint: disable=g-import-not-at-top
from wav2vec_jax.training import runtime  # noqa: E402  pylint: disable=g-import-not-at-top

flags.DEFINE_string("checkpoint", None, "save_pretrained dir (e.g. <workdir>/best), HF dir or fairseq .pt.")
flags.DEFINE_string("source", "corpus", "corpus, librispeech, manifest or tfds.")
flags.DEFINE_string("path", "", "Data folder, manifest folder/file or TFDS data_dir.")
flags.DEFINE_string("split", "dev", "Split(s), comma-separated.")
flags.DEFINE_string("tfds_name", "", "TFDS dataset name (source=tfds).")
flags.DEFINE_string("vocab", "", "vocab.json or dict.ltr.txt (default: next to the checkpoint).")
flags.DEFINE_integer("batch_budget", 0, "Samples per batch (default: the run's validation setting).")
flags.DEFINE_string("output_dir", "", "Where to write hypotheses.jsonl and summary.json (default: print only).")
flags.mark_flag_as_required("checkpoint")


def main(argv):
  del argv
  f = flags.FLAGS
  runtime.quiet_library_logs()
  runtime.hide_accelerators_from_tensorflow()
  result = evaluate_checkpoint(f.checkpoint, f.source, f.path, f.split, tfds_name=f.tfds_name,
                               vocab=f.vocab or None, batch_budget=f.batch_budget or None)
  summary = {"checkpoint": f.checkpoint, "source": f.source, "path": f.path, "split": f.split, **result.metrics}
  if f.output_dir:
    os.makedirs(f.output_dir, exist_ok=True)
    with open(os.path.join(f.output_dir, "hypotheses.jsonl"), "w", encoding="utf-8") as out:
      out.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in result.rows)
    with open(os.path.join(f.output_dir, "summary.json"), "w", encoding="utf-8") as out:
      json.dump(summary, out, indent=2)
  logging.info("WER %.4f  CER %.4f  over %d utterances", result.metrics["wer"], result.metrics["cer"],
               result.metrics["utterances"])
  print(json.dumps(summary))


if __name__ == "__main__":
  app.run(main)
