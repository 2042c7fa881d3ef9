r"""Pre-trains wav2vec 2.0. With no flags: the tiny model on the generated multilingual corpus, on this machine.

  python experiments/pretrain.py                                     # tiny, default corpus, workdir /tmp/wav2vec_jax
  python experiments/pretrain.py --config=experiments/configs/pretrain.py:base --workdir=gs://bucket/base \
      --config.data.source=librispeech --config.data.path=/data/LibriSpeech --config.data.split=train-clean-100
Multi-host: the same command on every host (Cloud TPU pods are detected); elsewhere add
  --coordinator_address=host0:1234 --num_processes=N --process_id=i
"""

import os
import sys

from absl import app

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train  # noqa: E402  pylint: disable=g-import-not-at-top

if __name__ == "__main__":
  train.define_flags("pretrain.py", "/tmp/wav2vec_jax/pretrain")
  app.run(train.main)
