"""Training metrics: JSONL + TensorBoard + a console progress line (process 0 only), health checks, throughput.

In a train loop, every `log_every` steps:
  scalars = jax.device_get(metrics)  # the sync point that makes the timing honest under async dispatch
  throughput.update(step)
  writer.write(step, scalars | throughput.metrics())
  for warning in health_warnings(scalars, num_negatives, step=step, num_groups=G): logging.warning(warning)
"""

import collections
import json
import math
import time

import jax
from absl import logging

from data_pipelines import storage
from wav2vec_jax.training import flops

# A run whose contrastive loss stays within this share of chance after the warm-up is not learning.
CHANCE_TOLERANCE = 0.02
# Metric key -> progress line format, in display order.
_PROGRESS = (("loss/bits", "loss {:.3f} bits"), ("loss/ctc", "ctc {:.3f}"), ("accuracy", "acc {:.3f}"),
             ("codebook/code_perplexity", "code ppl {:.1f}"), ("val/wer", "val WER {:.3f}"),
             ("val/cer", "val CER {:.3f}"), ("throughput/steps_per_second", "{:.2f} steps/s"),
             ("throughput/audio_seconds_per_second", "{:.1f} audio-s/s"), ("throughput/mfu", "MFU {:.1%}"))


def _format_duration(seconds: float) -> str:
  if not math.isfinite(seconds) or seconds < 0:
    return "?"
  days, rest = divmod(int(seconds), 86400)
  hours, rest = divmod(rest, 3600)
  text = f"{hours:d}:{rest // 60:02d}:{rest % 60:02d}"
  return f"{days}d {text}" if days else text


class _JsonLines:
  """An append-only text log: a local file in append mode, or (object storage has no append) an object rewritten
  whole, at most every `remote_every` seconds and on close."""

  def __init__(self, path: str, remote_every: float = 10.0):
    self.path, self.remote = path, storage.is_remote(path)
    self._every, self._written = remote_every, 0.0
    if self.remote:
      self._lines = storage.Path(path).read_text().splitlines(keepends=True) if storage.Path(path).exists() else []
    else:
      self._file = storage.Path(path).open("a", encoding="utf-8")

  def write(self, line: str) -> None:
    if not self.remote:
      self._file.write(line)
      self._file.flush()
      return
    self._lines.append(line)
    if time.time() - self._written > self._every:
      self.flush()

  def flush(self) -> None:
    if self.remote:
      storage.write_text(self.path, "".join(self._lines))
      self._written = time.time()
    else:
      self._file.flush()

  def close(self) -> None:
    self.flush()
    if not self.remote:
      self._file.close()


class MetricWriter:
  """Writes scalar metrics to `<workdir>/metrics.jsonl`, `<workdir>/tensorboard` and the console (process 0).

  Other processes construct it too (same code everywhere) and every call is a no-op there.
  """

  def __init__(self, workdir: str, total_steps: int | None = None, tensorboard: bool = True):
    """Args:
      workdir: run directory (created if missing).
      total_steps: for the progress line's "step/total" and ETA.
      tensorboard: also write TensorBoard event files (imports TensorFlow on first use).
    """
    self.workdir = workdir
    self.total_steps = total_steps
    self.active = jax.process_index() == 0
    self._jsonl = None
    self._tb = None
    self._last = None  # (step, time) of the previous write, for steps/s when the metrics carry none
    if not self.active:
      return
    storage.Path(workdir).mkdir(parents=True, exist_ok=True)
    self._jsonl = _JsonLines(storage.join(workdir, "metrics.jsonl"))
    if tensorboard:
      import tensorflow as tf  # pylint: disable=import-outside-toplevel  # lazy: TF is slow to import
      try:  # TF must not grab the accelerators that JAX uses
        tf.config.set_visible_devices([], "GPU")
      except RuntimeError:  # TF already initialised its devices elsewhere
        pass
      self._tf = tf
      self._tb = tf.summary.create_file_writer(storage.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: dict[str, float]) -> None:
    """Records scalar metrics of one step.

    Args:
      step: the training step the metrics belong to.
      metrics: flat dict of scalars (Python or NumPy floats/ints, 0-d arrays), e.g. `loss/bits`, `accuracy`,
        `codebook/code_perplexity` and `Throughput.metrics()`.
    """
    if not self.active:
      return
    scalars = {name: float(value) for name, value in metrics.items()}
    # Strict JSON has no NaN/Infinity: write null, which pandas reads back as NaN.
    record = {"step": int(step), "time": time.time()}
    record.update({name: value if math.isfinite(value) else None for name, value in scalars.items()})
    self._jsonl.write(json.dumps(record, allow_nan=False) + "\n")  # a live record, flushed: dashboards tail it
    if self._tb is not None:
      with self._tb.as_default():
        for name, value in scalars.items():
          self._tf.summary.scalar(name, value, step=int(step))
    logging.info("%s", self._progress_line(int(step), scalars))

  def _progress_line(self, step: int, scalars: dict[str, float]) -> str:
    now = time.monotonic()
    if "throughput/steps_per_second" not in scalars and self._last and step > self._last[0] and now > self._last[1]:
      scalars = scalars | {"throughput/steps_per_second": (step - self._last[0]) / (now - self._last[1])}
    self._last = (step, now)
    parts = [f"step {step}/{self.total_steps}" if self.total_steps else f"step {step}"]
    steps_per_second = scalars.get("throughput/steps_per_second")
    if self.total_steps and steps_per_second:
      parts.append(f"ETA {_format_duration((self.total_steps - step) / steps_per_second)}")
    parts += [fmt.format(scalars[key]) for key, fmt in _PROGRESS if key in scalars]
    return " | ".join(parts)

  def plot(self) -> str | None:
    """Redraws `<workdir>/curves.png` from every row written so far (process 0; others return None). A plotting
    failure is logged, never raised: plots must not stop a run."""
    if not self.active:
      return None
    self.flush()
    try:
      from wav2vec_jax.training import plots  # pylint: disable=g-import-not-at-top  # matplotlib only when plotting
      return plots.plot_workdir(self.workdir)
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("could not write the plots of %s: %s", self.workdir, e)
      return None

  def flush(self) -> None:
    if self._jsonl is not None:
      self._jsonl.flush()
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    """Flushes and closes the files; further writes are dropped."""
    self.flush()
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()
    self._jsonl, self._tb, self.active = None, None, False

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def truncate_after(workdir: str, step: int) -> int:
  """Drops the rows of `<workdir>/metrics.jsonl` past `step` (a run resumed from an earlier checkpoint re-runs
  them; without this, plots double back). Returns the number of rows dropped."""
  path = storage.Path(storage.join(workdir, "metrics.jsonl"))
  if not path.exists():
    return 0
  lines = [line for line in path.read_text().splitlines(keepends=True) if line.strip()]
  keep = []
  for line in lines:
    try:
      if json.loads(line)["step"] <= step:
        keep.append(line)
    except (ValueError, KeyError):  # a line cut by a kill mid-write
      continue
  if len(keep) != len(lines):
    storage.write_text(path, "".join(keep))
  return len(lines) - len(keep)


def health_warnings(metrics: dict[str, float], num_negatives: int, step: int | None = None,
                    warmup_steps: int = 1000, num_groups: int = 2) -> list[str]:
  """Warnings for the known failure modes of wav2vec 2.0 pre-training (empty list when healthy).

  * Non-finite metrics.
  * Stuck at chance: after `warmup_steps`, the contrastive loss (`loss/contrastive` in nats per masked frame, else
    `loss/bits`) is within CHANCE_TOLERANCE (2%) of log2(K + 1) bits or above it (6.658 bits for K = 100).
    `loss/bits` also holds the weighted diversity and feature terms, so it sits slightly above the contrastive term.
  * Codebook collapse: `codebook/code_perplexity` < 2 + 0.5 G. The code perplexity sums each group's exp(entropy),
    so G means every group emits a single code; the threshold flags groups using about 1.5 codes or fewer
    (3.0 for G = 2), while healthy runs climb into the hundreds (of at most G·V).

  Args:
    metrics: flat dict of scalars from the train step.
    num_negatives: K, distractors per masked frame.
    step: current step; None checks the loss regardless of the warm-up.
    warmup_steps: steps before a loss at chance counts as stuck (a fresh model starts at chance).
    num_groups: G, codebook groups.
  Returns:
    Human-readable warnings.
  """
  warnings = []
  bad = sorted(name for name, value in metrics.items() if not math.isfinite(float(value)))
  if bad:
    warnings.append(f"non-finite metrics: {', '.join(bad)}")
  chance = math.log2(num_negatives + 1)
  if "loss/contrastive" in metrics:
    bits, name = float(metrics["loss/contrastive"]) / math.log(2), "contrastive loss"
  else:
    bits, name = float(metrics.get("loss/bits", math.nan)), "loss/bits"
  if (step is None or step >= warmup_steps) and math.isfinite(bits) and bits >= (1 - CHANCE_TOLERANCE) * chance:
    warnings.append(f"{name} {bits:.3f} bits is at chance log2(K+1) = {chance:.3f} (K = {num_negatives})"
                    + (f" after {step} steps" if step is not None else "") + ": the model is not learning")
  perplexity = float(metrics.get("codebook/code_perplexity", math.nan))
  threshold = 2.0 + 0.5 * num_groups
  if math.isfinite(perplexity) and perplexity < threshold:
    warnings.append(f"codebook collapse: code perplexity {perplexity:.2f} < {threshold:.1f} "
                    f"({num_groups} groups; {num_groups} means one code per group)")
  return warnings


class Throughput:
  """Step time, audio seconds per second, per-device TFLOP/s and MFU over a window of recent steps.

  Call `update(step)` at sync points (after fetching a step's metrics). The first call only starts the clock, so
  the first step, which includes compilation, is never counted.
  """

  def __init__(self, flops_per_step: float, samples_per_step: int, num_devices: int = 1,
               peak_flops_per_device: float | None = None, sample_rate: int = flops.SAMPLE_RATE, window: int = 20):
    """Args:
      flops_per_step: `FlopCount.per_step` of the global batch.
      samples_per_step: audio samples per global batch (batch * samples, padding included).
      num_devices: devices sharing a step.
      peak_flops_per_device: FLOP/s of one device, e.g. `flops.measure_matmul_peak()`; None leaves MFU out.
      sample_rate: Hz.
      window: number of recent intervals averaged.
    """
    self.flops_per_step = flops_per_step
    self.audio_seconds_per_step = samples_per_step / sample_rate
    self.num_devices = num_devices
    self.peak = peak_flops_per_device
    self._intervals = collections.deque(maxlen=window)  # (steps, seconds)
    self._last = None

  def update(self, step: int, now: float | None = None) -> None:
    """Marks that `step` has finished (`now`: time.perf_counter() seconds, for tests)."""
    now = time.perf_counter() if now is None else now
    if self._last is not None and step > self._last[0]:
      self._intervals.append((step - self._last[0], now - self._last[1]))
    self._last = (step, now)

  def restart(self) -> None:
    """Stops the clock (after an eval, a checkpoint save or a recompile): the next `update` starts it again."""
    self._last = None

  @property
  def step_seconds(self) -> float:
    """Mean wall time per step over the window (NaN before two updates)."""
    steps = sum(n for n, _ in self._intervals)
    return sum(t for _, t in self._intervals) / steps if steps else math.nan

  def metrics(self) -> dict[str, float]:
    """`throughput/...` scalars; empty until two updates have been seen."""
    seconds = self.step_seconds
    if not math.isfinite(seconds) or seconds <= 0:
      return {}
    out = {
        "throughput/step_seconds": seconds,
        "throughput/steps_per_second": 1.0 / seconds,
        "throughput/audio_seconds_per_second": self.audio_seconds_per_step / seconds,
        "throughput/tflops_per_device": self.flops_per_step / seconds / self.num_devices / 1e12,
    }
    if self.peak:
      out["throughput/mfu"] = flops.mfu(self.flops_per_step, seconds, self.peak, self.num_devices)
    return out
