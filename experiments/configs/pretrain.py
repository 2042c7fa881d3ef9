"""wav2vec 2.0 pre-training configs: `tiny` (CPU, generated corpus), `base`, `large`, `xlsr_53`.

  python experiments/pretrain.py --workdir=/tmp/w2v                                   # tiny on the default corpus
  python experiments/pretrain.py --config=experiments/configs/pretrain.py:base \\
      --config.data.source=librispeech --config.data.path=/data/LibriSpeech \\
      --config.data.split=train-clean-100,train-clean-360,train-other-500 --workdir=gs://bucket/w2v_base

Recipes (fairseq examples/wav2vec/config/pretraining, arXiv 2006.11477 / 2006.13979):
  BASE:  batch 1.4M samples x 64 GPUs, 400k updates, warmup 32k, peak lr 5e-4, crop 250k samples.
  LARGE: batch 1.2M samples x 128 GPUs, 600k updates (paper), warmup 32k, peak lr 3e-4 (paper), crop 320k,
         per-utterance normalisation.
  XLSR-53: the LARGE recipe on a multilingual mix sampled with p_l ~ (n_l/N)^0.5.
`data.input.batch_budget` is the *global* batch in samples; with fewer chips, raise `optim.grad_accum` to keep the
effective batch of the recipe (e.g. BASE on 8 chips: budget 11.2M, grad_accum 8).
"""

import dataclasses

import ml_collections

from data_pipelines.pipeline import InputConfig
from wav2vec_jax.models.config import get_variant


def _recipe(variant: str):
  return {
      #             budget       crop     lr     warmup  steps     normalize  alpha  rules
      "tiny": dict(budget=256_000, crop=32_000, lr=5e-3, warmup=10, steps=1500, normalize=True, alpha=None,
                   rules="fsdp"),
      "base": dict(budget=1_400_000 * 64, crop=250_000, lr=5e-4, warmup=32_000, steps=400_000, normalize=False,
                   alpha=None, rules="fsdp"),
      "large": dict(budget=1_200_000 * 128, crop=320_000, lr=3e-4, warmup=32_000, steps=600_000, normalize=True,
                    alpha=None, rules="fsdp"),
      "xlsr_53": dict(budget=1_200_000 * 128, crop=320_000, lr=3e-4, warmup=32_000, steps=600_000, normalize=True,
                      alpha=0.5, rules="fsdp"),
  }[variant]


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the pre-training config of a variant ("tiny" by default)."""
  variant = arg or "tiny"
  recipe = _recipe(variant)
  c = ml_collections.ConfigDict()
  c.model_variant = variant
  # Every ModelConfig field, so `--config.model.layerdrop=0.1` works and a typo fails.
  c.model = ml_collections.ConfigDict(dataclasses.asdict(get_variant(variant)))
  # The tiny model sits at chance for 400-700 updates (varies with the seed), then learns (~2.3 bits, accuracy
  # ~0.4 by step 1000-1200).
  if variant == "tiny":  # no dropout, full gradient into the conv encoder
    for name in ("hidden_dropout", "attention_dropout", "dropout_input", "dropout_features", "layerdrop"):
      c.model[name] = 0.0
    c.model.feature_grad_mult = 1.0

  c.data = ml_collections.ConfigDict()
  c.data.source = "corpus"  # "corpus" (generated default), "librispeech" (folder), "manifest" (.tsv), "tfds"
  c.data.path = ""  # folder, manifest file, or TFDS data_dir
  c.data.split = "train"  # comma-separated sub-folders / TFDS split
  c.data.tfds_name = ""  # e.g. "librispeech"
  c.data.input = ml_collections.ConfigDict(dataclasses.asdict(InputConfig()))
  c.data.input.batch_budget = recipe["budget"]
  c.data.input.max_sample_size = recipe["crop"]
  c.data.input.normalize = recipe["normalize"]
  c.data.input.multilingual_alpha = recipe["alpha"]
  if variant == "tiny":
    c.data.input.min_sample_size = 16_000
    c.data.input.num_buckets = 4

  c.optim = ml_collections.ConfigDict()
  c.optim.peak_lr = recipe["lr"]
  c.optim.warmup_steps = recipe["warmup"]
  c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.98, 1e-6
  c.optim.weight_decay = 0.01
  c.optim.clip_norm = 0.0  # 0 = off (fairseq's pre-training default)
  c.optim.grad_accum = 1  # fairseq update_freq

  c.total_steps = recipe["steps"]
  c.seed = 0
  c.log_every = 50 if variant == "tiny" else 100
  c.checkpoint_every = 100 if variant == "tiny" else 5_000
  c.keep_checkpoints = 3
  c.async_checkpoints = True
  c.measure_peak_flops = True  # time a matmul at start-up so MFU is reported against this machine's peak
  c.warn_at_chance_after = 1000 if variant == "tiny" else 5_000  # steps before a loss at chance is "stuck"
  c.max_consecutive_bad_steps = 20  # stop when this many updates in a row had a non-finite loss or gradient
  c.init_from = ""  # optional weights to start from: HF dir, fairseq .pt or wav2vec_jax checkpoint

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # -1: all devices not used by fsdp x tensor
  c.mesh.fsdp = 1
  c.mesh.tensor = 1
  c.mesh.rules = recipe["rules"]  # "data", "fsdp" or "fsdp_tensor" (see wav2vec_jax/partitioning.py)

  c.fault_injection = ml_collections.ConfigDict()
  c.fault_injection.nan_steps = ()  # steps whose batch is replaced by NaN (tests of the skip path)
  return c
