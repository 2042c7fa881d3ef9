r"""Trains wav2vec 2.0: pre-training or CTC fine-tuning, by the config's `task`. `pretrain.py` and `finetune.py` are
this script with their default config and workdir.

  python experiments/train.py --config=experiments/configs/finetune.py:base_10h --workdir=gs://bucket/base_10h \
      --config.init_from=/ckpt/wav2vec_small.pt
Multi-host: the same command on every host (Cloud TPU pods are detected); elsewhere add
  --coordinator_address=host0:1234 --num_processes=N --process_id=i
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout

from data_pipelines.errors import AudioInputError, DataConfigError  # noqa: E402  pylint: disable=g-import-not-at-top
from data_pipelines.vocab import VocabError  # noqa: E402  pylint: disable=g-import-not-at-top
from wav2vec_jax.interop.convert import CheckpointMismatchError  # noqa: E402  pylint: disable=g-import-not-at-top
from wav2vec_jax.training import checkpointing, loop, runtime, workdir_lock  # noqa: E402  pylint: disable=g-import-not-at-top

# Errors whose message names the file or field and the fix (bad input, config, checkpoints, runaway runs; a stage of
# a multi-stage job stopped by a termination request).
EXPECTED_ERRORS = (AudioInputError, DataConfigError, VocabError, CheckpointMismatchError,
                   checkpointing.CheckpointError, workdir_lock.WorkdirLockedError, loop.BadStepsError,
                   loop.ConfigError, loop.TrainingStopped, FileNotFoundError)


def define_flags(default_config: str, default_workdir: str) -> None:
  """The launch flags; `default_config` is a path relative to experiments/configs (file[:variant])."""
  config_flags.DEFINE_config_file("config", os.path.join(REPO, "experiments", "configs", default_config),
                                  "Experiment config (file[:variant]).", lock_config=True)
  flags.DEFINE_string("workdir", default_workdir, "Checkpoints, metrics and TensorBoard logs (local or gs://).")
  flags.DEFINE_string("coordinator_address", "", "host:port of process 0 for multi-process runs.")
  flags.DEFINE_integer("num_processes", 1, "Processes in a multi-process run.")
  flags.DEFINE_integer("process_id", 0, "This process's rank in a multi-process run.")
  flags.DEFINE_bool("cpu_collectives", False, "Use gloo collectives (several CPU processes).")
  flags.DEFINE_string("compilation_cache_dir", os.path.expanduser("~/.cache/wav2vec_jax/xla"),
                      "Persistent XLA compilation cache (local or gs:// path; empty: off): relaunches skip compiling.")


def main(argv):
  del argv
  f = flags.FLAGS
  runtime.start_entry_point(f.compilation_cache_dir)
  runtime.initialize(f.coordinator_address, f.num_processes, f.process_id, f.cpu_collectives)
  # The cause and the fix are in the message: no 250-line traceback after it.
  final = runtime.stop_on(EXPECTED_ERRORS, loop.train_and_evaluate, f.config, f.workdir)
  logging.info("final metrics: %s", final)


if __name__ == "__main__":
  define_flags("pretrain.py", "/tmp/wav2vec_jax/train")
  app.run(main)
