"""The tf.data input pipeline: planned fixed-shape batches, decoded in parallel, with a resumable position.

Data flow, per epoch e (every host computes the same global plan from lengths alone, cheap numpy):
  checked index → [multilingual resampling, p_l ∝ (n_l/N)^α] → shuffle (seed, e) → length buckets → global batches
  → this host's rows of each batch → tf.data: parallel decode (numpy_function; in worker processes with
  `decode_processes`, see `decode_pool`), mixdown, resample, normalise, crop/pad to the bucket shape, labels →
  prefetch.

Why a global plan sliced per host instead of `ds.shard` before batching: every host must produce the same batch
shape at the same step (a sharded train step needs one global shape), and a plan shared by all hosts guarantees it.
Host p of P takes rows [p·B/P, (p+1)·B/P) of each global batch of B rows (B is a multiple of P), so the result
equals `jax.make_array_from_process_local_data` of a single-host run's batch, and a run may resume on another
number of hosts. The position is (epoch, step); restoring it rebuilds that epoch's plan and skips `step` batches
without decoding them, so a resumed run sees exactly the batches an uninterrupted one would.
"""

import dataclasses
import hashlib
import json
import os
import threading
from typing import Any, Iterator, Mapping

import numpy as np
from absl import logging

from data_pipelines import audio as audio_lib
from data_pipelines import batching, checks, decode_pool, sampling
from data_pipelines import rows as rows_lib
from data_pipelines.errors import AudioInputError, Counters, DataConfigError, check_on_error
from data_pipelines.input_config import InputConfig
from data_pipelines.sources import AudioIndex
from data_pipelines.vocab import Vocab

# Name at most this many digitally silent rows in warnings; the counter carries the total.
_MAX_SILENCE_WARNINGS = 20


def _hide_gpus_from_tensorflow(tf) -> None:
  try:  # TF must not take accelerator memory that JAX needs
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:  # already initialised; nothing to do
    pass


class InputIterator:
  """Iterates over one host's batches: dicts of numpy arrays.

  Each batch has
    waveform `[B, S]` float32, attention_mask `[B, S]` int32 (1 = real sample), language `[B]` int32 (index into
    `languages`; -1: empty row), utterance `[B]` int32 (position in `data.index`, -1: empty row), and in
    fine-tuning mode labels `[B, L]` int32 (0-padded) and label_lengths `[B]` int32,
  where `(B, S)` is one of `self.shapes` and `B = batch_size / process_count`.
  """

  def __init__(self, index: AudioIndex, config: InputConfig, *, vocab: Vocab | None = None, process_index: int = 0,
               process_count: int = 1):
    self.config = config
    check_on_error(config.on_error)
    if config.mode not in ("pretrain", "finetune"):
      raise ValueError(f"mode must be 'pretrain' or 'finetune', got {config.mode!r}")
    if config.mode == "finetune" and vocab is None:
      raise ValueError("fine-tuning needs a vocabulary for the labels")
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    self.process_index, self.process_count = process_index, process_count
    self.decode_processes = _decode_processes(config)
    self._crop = config.mode == "pretrain"
    self._counters = Counters()
    self.data = checks.check_index(
        index, counters=self._counters, on_error=config.on_error, target_sample_rate=config.sample_rate,
        allow_resample=config.allow_resample, mono_mixdown=config.mono_mixdown,
        min_sample_size=max(config.min_sample_size, audio_lib.RECEPTIVE_FIELD),
        max_sample_size=None if self._crop else config.max_sample_size,
        vocab=vocab if config.mode == "finetune" else None, on_unknown=config.on_unknown)
    if len(self.data.index) == 0:
      raise ValueError(f"no usable utterances left after checks and filters: {self._counters.as_dict()}")
    label_counts = None if self.data.labels is None else np.asarray([len(x) for x in self.data.labels])
    self.spec = batching.make_buckets(
        self.data.num_samples, crop=self._crop, batch_budget=config.batch_budget, num_buckets=config.num_buckets,
        lengths=config.bucket_lengths, max_sample_size=config.max_sample_size if self._crop else None,
        batch_multiple=int(np.lcm(config.batch_multiple, process_count)), max_batch_size=config.max_batch_size,
        label_lengths=label_counts, label_multiple=config.label_multiple)
    self._bucket_of = self.spec.assign(self.data.num_samples)
    self._counters.add("filtered/no_bucket", int(np.sum(self._bucket_of < 0)))
    self.languages = tuple(sorted(set(self.data.index.languages)))
    self._language_ids = np.searchsorted(self.languages, np.asarray(self.data.index.languages, dtype=object))
    self.language_sizes = sampling.language_sizes(self.data.index.languages, self.data.num_samples, config.size_by)
    alpha = 1.0 if config.multilingual_alpha is None else config.multilingual_alpha
    self.language_probabilities = sampling.language_probabilities(self.language_sizes, alpha)
    self._fingerprint = self._make_fingerprint()
    self._lock = threading.Lock()
    self._epoch, self._step = 0, 0
    self._plan_lock = threading.Lock()
    self._plans: dict[int, batching.EpochPlan] = {}
    self._batches: Iterator | None = None
    self._pending_error: AudioInputError | decode_pool.DecodeWorkerError | None = None
    self._cache = rows_lib.AudioCache(config.cache_audio_bytes) if config.cache_audio_bytes > 0 else None
    self._pool: decode_pool.DecodePool | None = None  # started with the first batch when decode_processes > 0
    self._pool_lock = threading.Lock()
    self.epoch_plan(0)  # fail now, not inside a tf.data thread, if the data cannot fill a single batch

  # ---- shapes, plans and state ----
  @property
  def shapes(self) -> tuple[tuple[int, int], ...]:
    """This host's possible `(batch, samples)` waveform shapes (`batch = global batch / process_count`)."""
    return tuple((b // self.process_count, s) for b, s in self.spec.shapes)

  def batch_specs(self) -> list[dict[str, tuple[tuple[int, ...], Any]]]:
    """Shape and dtype of every field of every possible batch (one dict per bucket), for ahead-of-time compiles."""
    specs = []
    for k, (b, s) in enumerate(self.shapes):
      spec = {"waveform": ((b, s), np.float32), "attention_mask": ((b, s), np.int32), "language": ((b,), np.int32),
              "utterance": ((b,), np.int32)}
      if not self._crop:
        spec |= {"labels": ((b, self.spec.label_lengths[k]), np.int32), "label_lengths": ((b,), np.int32)}
      specs.append(spec)
    return specs

  def epoch_plan(self, epoch: int) -> batching.EpochPlan:
    """The global batches of `epoch` (identical on every host)."""
    with self._plan_lock:
      if epoch in self._plans:
        return self._plans[epoch]
      cfg = self.config
      items = np.arange(len(self.data.index))
      if cfg.multilingual_alpha is not None:
        probs = [self.language_probabilities[name] for name in self.languages]
        items = sampling.sample_epoch(self._language_ids, probs, np.random.default_rng([cfg.seed, epoch, 0]))
      rng = np.random.default_rng([cfg.seed, epoch, 1]) if cfg.shuffle else None
      plan = batching.plan_epoch(items, self._bucket_of[items], self.spec, rng=rng, drop_remainder=cfg.drop_remainder)
      if len(plan) == 0:
        raise ValueError(f"epoch {epoch} has no batch: shapes {self.spec.shapes} need more utterances than the "
                         f"{len(items)} available; lower batch_budget or set drop_remainder=False")
      self._plans = {e: p for e, p in self._plans.items() if e >= epoch - 1}  # the decode thread runs ahead
      self._plans[epoch] = plan
      return plan

  def get_state(self) -> dict[str, Any]:
    """The position: `{"epoch", "step", "fingerprint", "counters"}` (small, JSON-serialisable, for Orbax)."""
    with self._lock:
      return {"epoch": self._epoch, "step": self._step, "fingerprint": self._fingerprint,
              "counters": self._counters.as_dict()}

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Moves to a position from `get_state`; the next batch is the one that followed it.

    Raises:
      ValueError: the state comes from a different dataset or batching configuration.
    """
    if state.get("fingerprint") != self._fingerprint:
      raise ValueError("input state was saved for another dataset, seed or batching configuration "
                       f"({state.get('fingerprint')} != {self._fingerprint})")
    with self._lock:
      self._epoch, self._step = int(state["epoch"]), int(state["step"])
      self._counters = Counters(state.get("counters", {}))
      self._batches, self._pending_error = None, None

  def close(self) -> None:
    """Releases the tf.data iterator and stops the decode worker processes, if any, now (the position is kept: the
    next batch restarts from it, in new workers). Call when done:
    an iterator left to interpreter shutdown is finalised after Python is gone, and TensorFlow prints "Error
    occurred when finalizing GeneratorDataset iterator" on a clean exit."""
    with self._lock:
      self._batches = None  # first: the iterator's decodes in flight finish in the pool
    with self._pool_lock:
      pool, self._pool = self._pool, None
    if pool is not None:
      pool.close()

  def counters(self) -> dict[str, int]:
    """Counts so far: `index/*`, `skipped/<kind>`, `filtered/*`, `input/*`, `language/<name>/utterances`, and
    `warned/digital_silence`: rows fed whose samples are all exactly 0 (an all-zero clip, a pre-training crop of
    one's silent stretch, or with `normalize` a constant clip), each epoch; the first 20 are named in warnings."""
    return self._counters.as_dict()

  def _make_fingerprint(self) -> str:
    cfg = dataclasses.asdict(self.config)
    for key in ("num_parallel_calls", "prefetch", "use_tf_data", "num_epochs", "cache_audio_bytes",
                "decode_processes"):
      cfg.pop(key)
    h = hashlib.sha1(json.dumps([cfg, dataclasses.asdict(self.spec)], sort_keys=True, default=str).encode())
    h.update("\n".join(self.data.index.ids).encode())
    return h.hexdigest()[:16]

  # ---- decoding one planned batch ----
  def _host_rows(self, rows: np.ndarray) -> tuple[np.ndarray, int]:
    per_host = rows.size // self.process_count
    start = self.process_index * per_host
    return rows[start:start + per_host], start

  def load_batch(self, epoch: int, step: int) -> dict[str, np.ndarray]:
    """Decodes this host's rows of global batch `step` of `epoch` (eagerly, outside tf.data)."""
    plan = self.epoch_plan(epoch)
    rows, offset = self._host_rows(plan.rows[step])
    self._decoder()
    return self._assemble(*self._load(epoch, step, int(plan.buckets[step]), rows, offset))[0]

  def _decoder(self) -> decode_pool.DecodePool | None:
    """The worker pool when `decode_processes` > 0 (started here, in the caller's thread, if not running), else
    None (decode in this thread)."""
    if not self.decode_processes:
      return None
    with self._pool_lock:
      if self._pool is None:
        self._pool = decode_pool.DecodePool(self.decode_processes, self.data, self._language_ids, self.spec,
                                            self.config, self._crop,
                                            max_batch_samples=max(b * s for b, s in self.shapes))
      return self._pool

  def _load(self, epoch, step, bucket, rows, row_offset):
    try:
      if self.decode_processes:
        pool = self._pool  # started by the caller; never from a tf.data thread, which may outlive `close`
        if pool is None:
          raise RuntimeError("the input iterator was closed while this batch was being decoded")
        return pool.load(epoch, step, bucket, rows, row_offset)
      return rows_lib.load_rows(self.data, self._language_ids, self.spec, self.config, epoch=epoch, step=step,
                                bucket=bucket, rows=rows, row_offset=row_offset, crop=self._crop,
                                cache=self._cache)
    except (AudioInputError, decode_pool.DecodeWorkerError) as e:  # kept so __next__ raises it cleanly out of tf.data
      self._pending_error = self._pending_error or e
      raise

  def _assemble(self, wave, mask, language, utterance, labels, label_lengths, errors):
    batch = {"waveform": wave, "attention_mask": mask, "language": language, "utterance": utterance}
    if not self._crop:
      batch["labels"], batch["label_lengths"] = labels, label_lengths
    return batch, errors

  def _count(self, batch: dict[str, np.ndarray], errors: np.ndarray) -> None:
    c, mask, language = self._counters, batch["attention_mask"], batch["language"]
    c.add("input/batches")
    c.add("input/utterances", int(np.sum(language >= 0)))
    real = int(np.count_nonzero(mask))
    c.add("input/audio_samples", real)
    c.add("input/padded_samples", mask.size - real)
    c.add("skipped/decode_error", int(errors.sum()))
    # Digital silence (peak exactly 0) is valid audio, so it is kept, but a corpus full of it is broken: count it.
    for item in batch["utterance"][(batch["utterance"] >= 0) & ~batch["waveform"].any(axis=1)]:
      c.add("warned/digital_silence")
      if c.get("warned/digital_silence") <= _MAX_SILENCE_WARNINGS:
        logging.warning("Digital silence (every sample exactly 0) fed to the model, kept: %s",
                        self.data.index.name(int(item)))
    for lang, n in zip(*np.unique(language[language >= 0], return_counts=True)):
      c.add(f"language/{self.languages[lang]}/utterances", int(n))

  # ---- iteration ----
  def _schedule(self, epoch: int, step: int):
    """Yields (epoch, step, bucket, host rows, row offset) from a position on."""
    while self.config.num_epochs is None or epoch < self.config.num_epochs:
      plan = self.epoch_plan(epoch)
      for s in range(step, len(plan)):
        rows, offset = self._host_rows(plan.rows[s])
        yield epoch, s, int(plan.buckets[s]), rows, offset
      epoch, step = epoch + 1, 0

  def tf_dataset(self, epoch: int, step: int):
    """The `tf.data.Dataset` of this host's batches from a position on (as tuples of arrays; `__next__` assembles
    them): planned jobs, decoded `usable_cores()` (or `num_parallel_calls`) batches at a time, in order, prefetched,
    with tf.data's autotuning off."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    _hide_gpus_from_tensorflow(tf)
    scalar = tf.TensorSpec((), tf.int64)
    ds = tf.data.Dataset.from_generator(lambda: self._schedule(epoch, step),
                                        output_signature=(scalar, scalar, scalar, tf.TensorSpec((None,), tf.int64),
                                                          scalar))
    tout = (tf.float32, tf.int32, tf.int32, tf.int32, tf.int32, tf.int32, tf.int32)

    @tf.autograph.experimental.do_not_convert
    def load(*job):
      return tuple(tf.numpy_function(lambda e, s, b, rows, off: self._load(int(e), int(s), int(b), rows, int(off)),
                                     job, tout, stateful=False))

    parallel = self.config.num_parallel_calls if self.config.num_parallel_calls > 0 else usable_cores()
    parallel = max(parallel, self.decode_processes)  # with workers, a call only waits: keep every worker busy
    ds = ds.map(load, num_parallel_calls=parallel, deterministic=True).prefetch(self.config.prefetch)
    # No autotuning: its model thread made releasing the iterator take 30-60 s at the end of long runs on a busy
    # machine (tf.data's RootDataset waits for it), and every parallelism here is explicit.
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)

  def __iter__(self) -> "InputIterator":
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self._batches is None:
      self._decoder()  # start the workers here, so that a setting they cannot work with raises here, not in tf.data
      if self.config.use_tf_data:
        self._batches = self.tf_dataset(self._epoch, self._step).as_numpy_iterator()
      else:
        self._batches = (self._load(*job[:3], job[3], job[4]) for job in self._schedule(self._epoch, self._step))
    try:
      arrays = next(self._batches)
    except StopIteration:
      raise
    except Exception as e:  # tf.errors.OpError from inside the decode: surface the clean AudioInputError
      if self._pending_error is not None:
        raise self._pending_error from e
      raise
    with self._lock:
      batch, errors = self._assemble(*arrays)
      self._count(batch, errors)
      self._step += 1
      if self._step >= len(self.epoch_plan(self._epoch)):
        self._epoch, self._step = self._epoch + 1, 0
    return batch


def _decode_processes(config: InputConfig) -> int:
  """The worker processes `config.decode_processes` asks for (-1: `usable_cores()`), checked against the cache."""
  n = config.decode_processes
  if n < -1:
    raise DataConfigError(f"data.input.decode_processes must be -1 (one per core), 0 (threads) or a count, got {n}")
  n = usable_cores() if n == -1 else n
  if n and config.cache_audio_bytes > 0:
    raise DataConfigError("data.input.cache_audio_bytes and data.input.decode_processes cannot both be set: each "
                          "worker process would keep its own copy of the audio. The cache is for small corpora, "
                          "where threads keep up: set data.input.decode_processes=0, or cache_audio_bytes=0.")
  return n


def usable_cores(cap: int = 16) -> int:
  """The CPU cores this process may run on (its affinity mask, so `taskset` counts), at most `cap`: the number of
  batches decoded at once when `InputConfig.num_parallel_calls` is -1."""
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
  return max(1, min(cores, cap))


def make_iterator(index: AudioIndex, config: InputConfig | Mapping[str, Any], *, vocab: Vocab | None = None,
                  process_index: int = 0, process_count: int = 1) -> InputIterator:
  """Builds the input iterator for one host.

  Args:
    index: the utterances (from `sources`, `manifest` or `tfds_source`; `sources.concat` for several corpora).
    config: an `InputConfig`, or a dict / ConfigDict of its fields.
    vocab: the CTC vocabulary (fine-tuning).
    process_index: this host (`jax.process_index()`).
    process_count: hosts (`jax.process_count()`).

  Returns:
    The `InputIterator` (batches: dicts of numpy arrays, see its docstring).
  """
  if not isinstance(config, InputConfig):
    config = InputConfig.from_dict(config)
  return InputIterator(index, config, vocab=vocab, process_index=process_index, process_count=process_count)
