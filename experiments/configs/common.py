"""Fields every training config has (model, data, optimiser, loop, mesh, fault injection); the recipe files
`pretrain.py` and `finetune.py` fill in their values."""

import dataclasses

import ml_collections

from data_pipelines.input_config import InputConfig
from wav2vec_jax.models.config import get_variant


def base_config(task: str, variant: str) -> ml_collections.ConfigDict:
  """The shared skeleton of a `task` ("pretrain" or "ctc") config on model `variant`."""
  c = ml_collections.ConfigDict()
  c.task = task
  c.model_variant = variant
  # Every ModelConfig field, so `--config.model.layerdrop=0.1` works and a typo fails.
  c.model = ml_collections.ConfigDict(dataclasses.asdict(get_variant(variant)))
  if variant != "tiny":
    # Layers scanned with matmul outputs saved (`experiments/benchmark_compile.py`, 2 CPU cores): the LARGE step
    # compiles in 13 s instead of 65 s and runs 0.68-0.79x the unrolled step's time; BASE 12 s instead of 24 s,
    # 0.94-1.09x. Checkpoints keep the layers stacked; every import and export converts.
    c.model.scan_layers = True
    c.model.remat_policy = "dots"

  c.data = ml_collections.ConfigDict()
  c.data.source = "corpus"  # "corpus" (generated default), "librispeech" (folder), "manifest" (.tsv), "tfds"
  c.data.path = ""  # folder, manifest file (or folder of <split>.tsv), or TFDS data_dir
  c.data.split = "train"  # comma-separated sub-folders / TFDS split
  c.data.eval_split = ""  # held-out split validated every `eval_every` updates ("" = none)
  c.data.tfds_name = ""  # e.g. "librispeech"
  c.data.labels = "auto"  # manifests: "ltr", "wrd" or "auto"
  c.data.vocab = ""  # CTC: dict.ltr.txt or vocab.json ("" = the init checkpoint's, else built from transcripts)
  c.data.train_seconds = 0.0  # CTC: train on a fixed random subset of this much audio (600 = 10 min; 0 = all)
  c.data.languages = ""  # comma-separated languages kept in every split and the vocabulary ("" = all)
  c.data.language_seconds = ""  # training audio per language, e.g. "cs=60,pl=180": a fixed random subset ("" = all)
  c.data.input = ml_collections.ConfigDict(dataclasses.asdict(InputConfig()))

  c.optim = ml_collections.ConfigDict()
  c.optim.schedule = "linear"  # "linear" (warm-up + linear decay, pre-training) or "tri_stage" (fine-tuning)
  c.optim.peak_lr = 5e-4
  c.optim.warmup_steps = 0  # linear schedule only
  c.optim.phase_ratio = (0.1, 0.4, 0.5)  # tri-stage: warm-up, hold, decay shares of total_steps
  c.optim.init_lr_scale = 0.01  # tri-stage: warm-up starts at this share of peak_lr
  c.optim.final_lr_scale = 0.05  # tri-stage: decay ends at this share of peak_lr
  c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.98, 1e-6
  c.optim.weight_decay = 0.0
  c.optim.clip_norm = 0.0  # 0 = off
  c.optim.grad_accum = 1  # fairseq update_freq: microbatches per update

  c.total_steps = 1000
  c.freeze_finetune_updates = 0  # CTC: only the head trains for this many updates
  c.seed = 0
  c.log_every = 100
  c.eval_every = 0  # validate every this many updates (and at the end) when data.eval_split is set
  c.validate_after = 0  # no validation before this update (fairseq validate_after_updates)
  c.best_metric = "wer"  # CTC: what <workdir>/best minimises, "wer" (fairseq) or "cer"; the other breaks ties
  c.checkpoint_every = 5_000
  c.keep_checkpoints = 3
  c.async_checkpoints = True
  c.plots = True  # <workdir>/curves.png (matplotlib), redrawn at every validation, at the end and every 5 min
  c.tensorboard = True  # TensorBoard event files beside metrics.jsonl (TF writes gs:// itself)
  c.measure_peak_flops = True  # time a matmul at start-up so MFU is reported against this machine's peak
  c.warn_at_chance_after = 5_000  # pre-training: steps before a loss at chance is "stuck"
  c.max_consecutive_bad_steps = 20  # stop when this many updates in a row had a non-finite loss or gradient
  c.init_from = ""  # weights to start from: HF dir, fairseq .pt, save_pretrained dir or training workdir

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # -1: all devices not used by fsdp x tensor
  c.mesh.fsdp = 1
  c.mesh.tensor = 1
  c.mesh.rules = "fsdp"  # "data", "fsdp" or "fsdp_tensor" (see wav2vec_jax/training/partitioning.py)

  c.fault_injection = ml_collections.ConfigDict()
  c.fault_injection.nan_steps = ()  # steps whose batch is replaced by NaN (tests of the skip path)
  return c
