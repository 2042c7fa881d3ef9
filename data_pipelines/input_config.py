"""`InputConfig`: every setting of the input pipeline, one frozen dataclass built at the edge from a ConfigDict."""

import dataclasses
from typing import Any, Mapping


@dataclasses.dataclass(frozen=True)
class InputConfig:
  """Input pipeline settings (fairseq names in brackets)."""

  mode: str = "pretrain"  # "pretrain": crop to bucket length, no padding, no labels; "finetune": pad, labels
  sample_rate: int = 16_000  # target rate, Hz
  batch_budget: int = 1_400_000  # samples per global batch [max_tokens × data-parallel devices]
  batch_multiple: int = 1  # batch sizes are multiples of this (data-parallel devices; also of process_count)
  max_batch_size: int | None = None  # [max_sentences]
  num_buckets: int = 10  # the most distinct batch shapes (= compiles); 10 keeps padding < 10% on spread lengths
  bucket_lengths: tuple[int, ...] = ()  # explicit bucket lengths instead of the data-driven choice
  min_sample_size: int = 32_000  # [min_sample_size]; BASE and LARGE recipes use 32k
  max_sample_size: int = 250_000  # [max_sample_size]; pre-training crops to it, fine-tuning drops longer clips
  normalize: bool = False  # per-utterance zero mean / unit variance (LARGE/XLSR: True)
  allow_resample: bool = True  # False: another sample rate is bad input
  mono_mixdown: bool = True  # False: multichannel is bad input
  shuffle: bool = True
  seed: int = 0
  drop_remainder: bool = True  # False: last partial batch of each bucket is filled with empty rows (mask 0)
  num_epochs: int | None = None  # None: repeat forever
  on_error: str = "skip"  # bad input: "skip" (count) or "raise"
  on_unknown: str = "raise"  # out-of-vocabulary characters: "raise" (bad input) or "unk"
  label_multiple: int = 8  # label slots rounded up to a multiple of this
  multilingual_alpha: float | None = None  # resample languages with p_l ∝ (n_l/N)^α (XLSR: 0.5); None: as is
  size_by: str = "utterances"  # n_l counts "utterances" (fairseq) or "samples" (the paper's hours)
  cache_audio_bytes: int = 0  # keep decoded audio in memory up to this many bytes (small corpora); 0: off
  num_parallel_calls: int = -1  # batches decoded at once; -1 = one per usable CPU core, at most 16
  decode_processes: int = 0  # 0: decode in this process's threads; N: in N worker processes; -1: one per core
  prefetch: int = 4  # batches prefetched
  use_tf_data: bool = True  # False: plain Python loop (same batches; for debugging and tests)

  @classmethod
  def from_dict(cls, config: Mapping[str, Any]) -> "InputConfig":
    """Builds the config from a dict or `ml_collections.ConfigDict` (lists become tuples; unknown keys fail)."""
    values = dict(config.to_dict() if hasattr(config, "to_dict") else config)
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
