r"""Fine-tunes wav2vec 2.0 with CTC. With no flags: the tiny recipe on the generated corpus, from scratch; start from
the main job's pre-trained model with `--config.init_from=/tmp/wav2vec_jax/pretrain`.

  python experiments/finetune.py --config.init_from=/tmp/wav2vec_jax/pretrain
  python experiments/finetune.py --config=experiments/configs/finetune.py:base_100h --workdir=gs://bucket/ft \
      --config.init_from=/ckpt/wav2vec2-base --config.data.source=librispeech --config.data.path=/data/LibriSpeech \
      --config.data.split=train-clean-100 --config.data.eval_split=dev-other
The best checkpoint by validation WER (`--config.best_metric=cer`: CER; the tiny recipe's) is `<workdir>/best`
(`wav2vec_jax.load_pretrained(f"{workdir}/best")`).
"""

import os
import sys

from absl import app

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train  # noqa: E402  pylint: disable=g-import-not-at-top

if __name__ == "__main__":
  train.define_flags("finetune.py", "/tmp/wav2vec_jax/finetune")
  app.run(train.main)
