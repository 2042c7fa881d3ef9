"""Analytic FLOP count of a wav2vec 2.0 training step, XLA cross-check, measured matmul peak and MFU.

Conventions (PaLM's "model FLOPs", as MaxText reports MFU):
  * A multiply-add is 2 FLOPs. Only matmuls and convolutions are counted (the "model FLOPs"); norms, activations,
    softmax, masking, the CTC dynamic programme and the optimizer update are left out. `elementwise_forward` gives
    a rough estimate of what XLA counts for those (see `_ELEMENTWISE`), used only to cross-check small models.
  * Convolutions count the kernel taps that meet real input: the zero padding of the positional conv is not
    counted (XLA's `HloCostAnalysis` does the same; at 4 s clips that is ~30% fewer taps than frames x kernel).
    The extra frame that an even kernel yields and the model drops is counted, since it is computed.
  * A training step costs forward + backward. For a matmul `y = x @ w` the backward is two matmuls of the same
    size (dx and dw), so fwd+bwd = 3x forward. Exceptions, made explicit by `train_multiplier`:
      - conv layer 0 reads the waveform, which needs no gradient: only dw, 2x forward;
      - `feature_grad_mult == 0` stops the gradient into the conv encoder (fine-tuning): 1x forward for every conv
        layer. Any non-zero value only scales the gradient and costs the full backward.
    Activation-activation products (attention scores and values, codevector selection, the contrastive
    similarity) need both operand gradients: also 3x.
  * Rematerialisation (`remat_policy`) re-runs parts of the forward; that is hardware work, not model work, and is
    not counted, so MFU stays comparable across remat policies. Nor is a frozen transformer (the first updates of
    CTC fine-tuning): the count is that of a step that trains everything after the conv encoder.
  * Pre-training counts what the code computes: the transformer over all frames, the quantizer, heads and the
    similarity matrix over the static `max_masked_frames` slots of every row (the valid ones and the padding
    slots alike), since those are the shapes that run.
Measured against XLA:CPU's cost analysis (batch 2, 1-10 s clips), BASE and LARGE agree within ~2.5% in the forward
(with the elementwise estimate, which overcounts the attention softmax of long clips; matmuls alone within ~3%) and
within ~1.5% for the training step of `jax.grad`. tests/test_flops.py checks smaller models to what they measure.
"""

import dataclasses
import statistics
import time

import jax
import jax.numpy as jnp

from wav2vec_jax.models import masking
from wav2vec_jax.models.config import ModelConfig

SAMPLE_RATE = 16_000
KINDS = ("pretrain", "ctc")

# Rough XLA (CPU) FLOPs per element of the non-matmul work, as its cost analysis counts them: GELU through erf
# (`layers.gelu`) is 4 (erf counts as one op; jax.nn.gelu's erfc was expanded into ~64), a norm 7-8.
_ELEMENTWISE = {"gelu": 4, "norm": 8, "softmax": 5}


@dataclasses.dataclass(frozen=True)
class FlopCount:
  """FLOPs of one training step of one batch (all devices together).

  Attributes:
    kind: "pretrain" or "ctc".
    batch_size, num_samples: the batch shape `[batch, samples]`.
    num_frames: frames after the conv encoder.
    num_slots: static masked slots per row (pre-training; 0 for CTC).
    forward: component name -> forward FLOPs (matmuls and convs only).
    train_multiplier: component name -> (forward + backward) / forward.
    elementwise_forward: rough XLA-style count of the forward's non-matmul work (not part of the totals).
  """

  kind: str
  batch_size: int
  num_samples: int
  num_frames: int
  num_slots: int
  forward: dict[str, float]
  train_multiplier: dict[str, float]
  elementwise_forward: float = 0.0

  @property
  def forward_total(self) -> float:
    """Forward FLOPs of the step (model FLOPs)."""
    return float(sum(self.forward.values()))

  @property
  def xla_comparable_forward(self) -> float:
    """Forward model FLOPs plus the elementwise estimate: what XLA's cost analysis of the forward reports."""
    return self.forward_total + self.elementwise_forward

  @property
  def train_step(self) -> dict[str, float]:
    """Component name -> forward + backward FLOPs."""
    return {name: flops * self.train_multiplier[name] for name, flops in self.forward.items()}

  @property
  def per_step(self) -> float:
    """Forward + backward FLOPs of one training step: the numerator of MFU."""
    return float(sum(self.train_step.values()))

  @property
  def audio_seconds(self) -> float:
    return self.batch_size * self.num_samples / SAMPLE_RATE

  def summary(self) -> str:
    """A small table of GFLOP per component (forward and train step), for logs and notebooks."""
    lines = [f"{self.kind}: batch {self.batch_size} x {self.num_samples} samples, {self.num_frames} frames"
             + (f", {self.num_slots} masked slots" if self.num_slots else "")]
    for name, flops in self.forward.items():
      lines.append(f"  {name:28s} {flops / 1e9:12.3f} GFLOP fwd  {self.train_step[name] / 1e9:12.3f} GFLOP step")
    lines.append(f"  {'total':28s} {self.forward_total / 1e9:12.3f} GFLOP fwd  {self.per_step / 1e9:12.3f} GFLOP step")
    return "\n".join(lines)


def _valid_taps(length: int, kernel: int, pad: int, out_length: int) -> int:
  """Kernel taps that meet real input, summed over output positions, for a stride-1 conv padded `pad` left."""
  total = 0
  for out in range(out_length):
    first, last = out - pad, out - pad + kernel - 1  # input positions the kernel covers
    total += max(0, min(last, length - 1) - max(first, 0) + 1)
  return total


def count_flops(config: ModelConfig, batch_size: int, num_samples: int, kind: str = "pretrain") -> FlopCount:
  """Counts the FLOPs of one training step.

  Args:
    config: the model configuration.
    batch_size: utterances per step (global batch; divide by the device count for per-device numbers).
    num_samples: samples per utterance (16 kHz; the padded batch length).
    kind: "pretrain" (Wav2Vec2ForPreTraining.pretrain + contrastive loss) or "ctc" (Wav2Vec2ForCTC + CTC head).
  Returns:
    FlopCount with per-component forward FLOPs and the per-step total.
  """
  if kind not in KINDS:
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
  cfg, b = config, batch_size
  forward, multiplier = {}, {}
  elementwise = 0.0
  conv_multiplier = 1.0 if cfg.feature_grad_mult == 0.0 else 3.0

  length, c_in = num_samples, 1
  for i, (c_out, kernel, stride) in enumerate(zip(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride)):
    length = masking.conv_output_lengths(length, (kernel,), (stride,))
    forward[f"conv_encoder/layer_{i}"] = 2.0 * b * length * kernel * c_in * c_out
    # Layer 0's input is the waveform: no input gradient, only the weight gradient.
    multiplier[f"conv_encoder/layer_{i}"] = min(conv_multiplier, 2.0) if i == 0 else conv_multiplier
    norm = cfg.feat_extract_norm == "layer" or i == 0
    elementwise += b * length * c_out * (_ELEMENTWISE["gelu"] + (_ELEMENTWISE["norm"] if norm else 0))
    c_in = c_out
  frames = length
  if frames < 1:
    raise ValueError(f"{num_samples} samples are fewer than the receptive field ({cfg.receptive_field})")
  d, f, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
  forward["feature_projection"] = 2.0 * b * frames * c_in * d

  kernel, groups = cfg.num_conv_pos_embeddings, cfg.num_conv_pos_embedding_groups
  taps = _valid_taps(frames, kernel, kernel // 2, frames + 2 * (kernel // 2) - kernel + 1)
  forward["positional_conv"] = 2.0 * b * taps * (d // groups) * d
  forward["attention/projections"] = layers * 4 * 2.0 * b * frames * d * d
  forward["attention/scores_values"] = layers * 2 * 2.0 * b * frames * frames * d
  forward["ffn"] = layers * 2 * 2.0 * b * frames * d * f
  elementwise += b * frames * (c_in * _ELEMENTWISE["norm"] + d * _ELEMENTWISE["gelu"])
  elementwise += layers * b * frames * (2 * d * _ELEMENTWISE["norm"] + f * _ELEMENTWISE["gelu"]
                                        + cfg.num_heads * frames * _ELEMENTWISE["softmax"])

  slots = 0
  if kind == "pretrain":
    slots = masking.max_masked_frames(frames, cfg.mask_time_prob, cfg.mask_time_length, cfg.mask_time_min_masks)
    g, v, cv, fd = cfg.num_codevector_groups, cfg.num_codevectors_per_group, cfg.codevector_dim, cfg.final_dim
    forward["quantizer/weight_proj"] = 2.0 * b * slots * c_in * g * v
    forward["quantizer/codevectors"] = 2.0 * b * slots * v * cv  # one-hot [G, V] x codevectors [G, V, cv / G]
    forward["project_q"] = 2.0 * b * slots * cv * fd
    forward["project_hid"] = 2.0 * b * slots * d * fd
    forward["contrastive_similarity"] = 2.0 * b * slots * slots * fd
    elementwise += b * slots * g * v * 2 * _ELEMENTWISE["softmax"] + b * slots * slots * 2
  else:
    forward["ctc_head"] = 2.0 * b * frames * d * cfg.vocab_size
  for name in forward:
    multiplier.setdefault(name, 3.0)
  return FlopCount(kind=kind, batch_size=b, num_samples=num_samples, num_frames=frames, num_slots=slots,
                   forward=forward, train_multiplier=multiplier, elementwise_forward=float(elementwise))


def xla_flops(compiled) -> float:
  """The 'flops' of `compiled.cost_analysis()` (a dict, or a list of per-program dicts in some jax versions).

  For a program partitioned over several devices this is the per-device program's count (one shard's work).
  """
  analysis = compiled.cost_analysis()
  if analysis is None:
    raise ValueError("this backend's compiled executable has no cost analysis")
  if isinstance(analysis, dict):
    analysis = [analysis]
  return float(sum(entry.get("flops", 0.0) for entry in analysis))


def cross_check(compiled, analytic_forward: float, num_devices: int = 1) -> float:
  """Ratio analytic / XLA of forward FLOPs; ~1 when the analytic count is right.

  Args:
    compiled: a `jax.jit(f).lower(...).compile()` result of the forward computation.
    analytic_forward: `FlopCount.xla_comparable_forward` (or `forward_total`: matmuls only) of the global batch.
    num_devices: devices the program is partitioned over; XLA counts one device's share, so it is scaled up
      (exact for data parallelism; replicated work is counted once per device).
  Returns:
    analytic_forward / (XLA's 'flops' x num_devices).
  """
  return analytic_forward / (xla_flops(compiled) * num_devices)


def measure_matmul_peak(dtype=jnp.float32, size: int | None = None, iters: int | None = None,
                        repeats: int = 5) -> float:
  """Achievable matmul FLOP/s of one default device, the denominator of an honest MFU on this machine.

  Times `iters` chained `[size, size] @ [size, size]` products in one jitted loop (so dispatch overhead is
  amortised), after a warm-up call, and takes the median over `repeats`. Without `size`, the best of several sizes
  is returned (on a 2-core CPU a 1024 matmul runs ~10% faster than a 2048 one; a low peak would flatter the MFU).

  Args:
    dtype: operand dtype (float32 uses the backend's default matmul precision, as the model does).
    size: matrix side; default the best of 1024, 2048 and 3072 on CPU, of 4096 and 8192 on accelerators.
    iters: chained matmuls per timed call; default 1 on CPU (a 2048 matmul takes ~0.1 s on 2 cores), 20 on
      accelerators (one 8192 matmul takes ~2 ms on an H100, comparable to launch overheads).
    repeats: timed calls.
  Returns:
    FLOP/s (float).
  """
  device = jax.devices()[0]
  on_cpu = device.platform == "cpu"
  if size is None:
    sizes = (1024, 2048, 3072) if on_cpu else (4096, 8192)
    return max(measure_matmul_peak(dtype, s, iters, repeats) for s in sizes)
  iters = iters or (1 if on_cpu else 20)
  kx, kw = jax.random.split(jax.random.PRNGKey(0))
  x = jax.device_put(jax.random.normal(kx, (size, size), dtype), device)
  # Variance 1/size keeps the chained product's scale stable (no overflow, no denormals).
  w = jax.device_put((jax.random.normal(kw, (size, size), jnp.float32) / size**0.5).astype(dtype), device)

  @jax.jit
  def chain(x, w):
    # float32 accumulation: XLA:CPU's bfloat16 dot kernels (AVX512-BF16) run ~2x faster with it than with a
    # bfloat16 result, and it is what accelerators do anyway.
    body = lambda _, y: jnp.dot(y, w, preferred_element_type=jnp.float32).astype(dtype)  # noqa: E731
    return jax.lax.fori_loop(0, iters, body, x)

  chain(x, w).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    chain(x, w).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2.0 * size**3 * iters / statistics.median(times)


# Dense bf16 matmul FLOP/s of one device by datasheet, matched against `device_kind` (first match wins).
DATASHEET_BF16 = (("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("TPU v6", 918e12),
                  ("TPU v5p", 459e12), ("TPU v5", 197e12), ("TPU v4", 275e12))


def datasheet_bf16_peak(device_kind: str) -> float | None:
  """The datasheet dense bf16 FLOP/s of a device kind (e.g. "NVIDIA H200", "TPU v4"), None when unknown."""
  return next((peak for name, peak in DATASHEET_BF16 if name.lower() in device_kind.lower()), None)


def mfu(flops_per_step: float, step_seconds: float, peak_flops_per_device: float, num_devices: int = 1) -> float:
  """Model FLOPs utilisation: achieved FLOP/s over the devices' peak.

  Args:
    flops_per_step: `FlopCount.per_step` of the global batch.
    step_seconds: wall time of one step.
    peak_flops_per_device: FLOP/s of one device (datasheet, or `measure_matmul_peak`).
    num_devices: devices that shared the step.
  Returns:
    A fraction in [0, 1] for a plausible measurement.
  """
  if step_seconds <= 0 or peak_flops_per_device <= 0 or num_devices < 1:
    raise ValueError(f"need positive step time, peak and device count, got {step_seconds}, "
                     f"{peak_flops_per_device}, {num_devices}")
  return flops_per_step / step_seconds / (peak_flops_per_device * num_devices)
