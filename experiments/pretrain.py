r"""Pre-trains wav2vec 2.0. With no flags: the tiny model on the generated multilingual corpus, on this machine.

  python experiments/pretrain.py                                     # tiny, default corpus, workdir /tmp/wav2vec_jax
  python experiments/pretrain.py --config=experiments/configs/pretrain.py:base --workdir=gs://bucket/base \
      --config.data.source=librispeech --config.data.path=/data/LibriSpeech --config.data.split=train-clean-100
Multi-host: the same command on every host (Cloud TPU pods are detected); elsewhere add
  --coordinator_address=host0:1234 --num_processes=N --process_id=i
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from wav2vec_jax import pretrain, runtime  # noqa: E402  pylint: disable=g-import-not-at-top

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "pretrain.py")
config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG, "Experiment config (file[:variant]).", lock_config=True)
flags.DEFINE_string("workdir", "/tmp/wav2vec_jax/pretrain", "Checkpoints, metrics and TensorBoard logs.")
flags.DEFINE_string("coordinator_address", "", "host:port of process 0 for multi-process runs.")
flags.DEFINE_integer("num_processes", 1, "Processes in a multi-process run.")
flags.DEFINE_integer("process_id", 0, "This process's rank in a multi-process run.")
flags.DEFINE_bool("cpu_collectives", False, "Use gloo collectives (several CPU processes).")
flags.DEFINE_string("compilation_cache_dir", os.path.expanduser("~/.cache/wav2vec_jax/xla"),
                    "Persistent XLA compilation cache (local or gs:// path; empty: off): relaunches skip compiling.")


def main(argv):
  del argv
  runtime.quiet_library_logs()
  runtime.hide_accelerators_from_tensorflow()
  runtime.enable_compilation_cache(flags.FLAGS.compilation_cache_dir)
  runtime.initialize(flags.FLAGS.coordinator_address, flags.FLAGS.num_processes, flags.FLAGS.process_id,
                     flags.FLAGS.cpu_collectives)
  final = pretrain.train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
  logging.info("final metrics: %s", final)


if __name__ == "__main__":
  app.run(main)
