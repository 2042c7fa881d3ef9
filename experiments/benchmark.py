r"""Speed of one full training step (forward, loss, backward, AdamW update) on a fixed batch of random audio.

  python experiments/benchmark.py --variant=tiny,base --kind=pretrain,ctc --compare=transformers
  python experiments/benchmark.py --variant=large --kind=pretrain --scan_layers --remat=dots --dtype=bfloat16
  for m in glibc reuse glibc reuse; do python experiments/benchmark.py --kind=pretrain --host_memory=$m; done

Prints one JSON line per (variant, kind): median ms per step after warm-up, compile seconds, compiled memory,
audio-seconds per second, analytic GFLOP per step and MFU against a matmul peak measured in this process. The
step is the real one (`training/step.train_step` with `PretrainingTask` or `CTCTask`), jitted on a 1-device mesh
with donated state. `--compare=transformers` builds transformers' PyTorch model from the same config and weights and
times its step on the same batch (pre-training: the same mask and negatives as the JAX step's first update; CTC: the
same labels), alternating JAX and torch steps so that both see the same machine load.

CTC cases fine-tune as the recipes do after `freeze_finetune_updates`: `feature_grad_mult=0` and CTCTask's "frozen"
group (the conv encoder never trains; transformers' `freeze_feature_encoder()`), the trunk and head training (phase
"train"), SpecAugment time masks, Adam without weight decay.
"""

import dataclasses
import functools
import json
import os
import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

# pylint: disable=g-import-not-at-top
from wav2vec_jax.interop import convert  # noqa: E402
from wav2vec_jax.models import Wav2Vec2ForCTC, Wav2Vec2ForPreTraining, get_variant, masking  # noqa: E402
from wav2vec_jax.tasks.ctc import CTCTask  # noqa: E402
from wav2vec_jax.tasks.pretraining import PretrainingTask  # noqa: E402
from experiments import host_memory as host_memory_lib  # noqa: E402
from wav2vec_jax.training import flops, optim, partitioning, train_state  # noqa: E402
from wav2vec_jax.training import step as step_lib  # noqa: E402

flags.DEFINE_list("variant", ["tiny"], "Model variants: tiny, base, large, xlsr_53.")
flags.DEFINE_list("kind", ["pretrain", "ctc"], "Step kinds: pretrain, ctc.")
flags.DEFINE_integer("batch", 4, "Utterances per step.")
flags.DEFINE_integer("samples", 64000, "Samples per utterance (16 kHz; 64000 = 4 s).")
flags.DEFINE_integer("steps", 5, "Timed steps after warm-up (the median is reported; use >= 5).")
flags.DEFINE_integer("warmup", 1, "Untimed steps after the first (compiling) step.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype (parameters stay float32).")
flags.DEFINE_bool("scan_layers", False, "nn.scan over the transformer layers.")
flags.DEFINE_enum("remat", "none", ["none", "full", "dots"], "Rematerialisation policy of the layers.")
flags.DEFINE_enum("pos_conv_impl", "auto", ["auto", "fft", "conv"], "Positional conv: FFT or one conv per group.")
flags.DEFINE_enum("compare", "", ["", "transformers"], "Also time transformers' PyTorch model, interleaved.")
flags.DEFINE_integer("seed", 0, "Seed of the weights, the batch and the step keys.")
flags.DEFINE_enum("attention", "auto", ["auto", "batched", "per_head", "fused"], "Our attention implementation.")
flags.DEFINE_enum("torch_attention", "eager", ["eager", "sdpa"], "transformers' attention implementation.")


ARCHITECTURES = {"pretrain": "Wav2Vec2ForPreTraining", "ctc": "Wav2Vec2ForCTC"}
LEARNING_RATE = 1e-4  # constant, so that every timed step is a full update on both sides
LABELS_PER_SECOND = 15  # about LibriSpeech's characters per second of speech
_MB = 2.0**20


@dataclasses.dataclass(frozen=True)
class Case:
  """One benchmark case."""

  variant: str
  kind: str  # "pretrain" or "ctc"
  batch: int = 4
  samples: int = 64000
  dtype: str = "float32"
  scan_layers: bool = False
  remat: str = "none"
  pos_conv_impl: str = "auto"
  attention: str = "auto"  # ModelConfig.attention_impl
  scan_unroll: int = 1  # ModelConfig.scan_unroll


def model_config(case: Case):
  """The ModelConfig of a case (CTC: conv encoder frozen by feature_grad_mult=0, as in fine-tuning; per_head and
  fused attention: no attention dropout)."""
  overrides = {"dtype": case.dtype, "scan_layers": case.scan_layers, "scan_unroll": case.scan_unroll,
               "remat_policy": case.remat, "pos_conv_impl": case.pos_conv_impl, "attention_impl": case.attention}
  if case.kind == "ctc":
    overrides["feature_grad_mult"] = 0.0
  if case.attention in ("per_head", "fused"):  # neither drops attention weights (transformers' side gets the same)
    overrides["attention_dropout"] = 0.0
  return get_variant(case.variant, **overrides)


def make_batch(cfg, case: Case, seed: int) -> dict[str, np.ndarray]:
  """Random audio `[batch, samples]` float32, an all-ones int32 attention mask and, for CTC, random labels."""
  rng = np.random.RandomState(seed)
  batch = {"waveform": rng.randn(case.batch, case.samples).astype(np.float32),
           "attention_mask": np.ones((case.batch, case.samples), np.int32)}
  if case.kind == "ctc":
    max_labels = int(LABELS_PER_SECOND * case.samples / flops.SAMPLE_RATE)
    lengths = rng.randint(max_labels // 2, max_labels + 1, size=case.batch).astype(np.int32)
    labels = rng.randint(1, cfg.vocab_size, size=(case.batch, max_labels)).astype(np.int32)
    batch["labels"] = labels * (np.arange(max_labels)[None, :] < lengths[:, None])
    batch["label_lengths"] = lengths
  return batch


def build_jax_step(cfg, case: Case, seed: int):
  """Task, optimiser, sharded initial state and the jitted real train step on a 1-device mesh.

  Returns:
    (jitted step, state, batch shardings, mesh, rules).
  """
  schedule = optax.constant_schedule(LEARNING_RATE)
  if case.kind == "pretrain":
    task = PretrainingTask(Wav2Vec2ForPreTraining(cfg))
    # fairseq pre-training: AdamW (0.9, 0.98), eps 1e-6, weight decay 0.01, one group.
    eps, weight_decay = 1e-6, 0.01
  else:
    task = CTCTask(Wav2Vec2ForCTC(cfg), freeze_updates=0)  # phase "train": trunk and head train, conv frozen
    eps, weight_decay = 1e-8, 0.0
  phase = "train"
  tx = optim.adam(schedule, eps=eps, weight_decay=weight_decay, labels=task.parameter_labels, groups=task.groups,
                  held=task.held(phase))
  step = functools.partial(step_lib.train_step, task=task, tx=tx, schedule=schedule, phase=phase)
  mesh = partitioning.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  rules = partitioning.logical_axis_rules("data")
  state = train_state.create_train_state(task.model, tx, jax.random.PRNGKey(seed), mesh, rules)
  shardings = train_state.state_shardings(task.model, tx, mesh, rules)
  ndims = {"waveform": 2, "attention_mask": 2, "labels": 2, "label_lengths": 1}
  batch_shardings = {k: partitioning.batch_sharding(mesh, rules, ndim=ndims[k]) for k in task.batch_keys}
  jitted = jax.jit(step, in_shardings=(shardings, batch_shardings, None), out_shardings=(shardings, None),
                   donate_argnums=0)
  return jitted, state, batch_shardings, mesh, rules


def hf_negatives(masked: masking.MaskedFrames, negatives, frames: int) -> np.ndarray:
  """Our slot-indexed negatives `[batch, slots, K]` as transformers' flat indices `[batch, frames, K]` int64."""
  positions, negatives, valid = (np.asarray(x) for x in (masked.positions, negatives, masked.valid))
  batch = positions.shape[0]
  targets = np.take_along_axis(positions, negatives.reshape(batch, -1), axis=1).reshape(negatives.shape)
  flat = targets + (np.arange(batch) * frames)[:, None, None]
  out = np.zeros((batch, frames, negatives.shape[-1]), np.int64)
  for b in range(batch):
    out[b, positions[b][valid[b]]] = flat[b][valid[b]]
  return out


def torch_device() -> str | None:
  """Where transformers' step runs beside ours: "cuda" when JAX runs on a GPU that torch sees too, "cpu" when JAX
  runs on CPU, None otherwise (a TPU, or a GPU torch cannot use: no comparison across devices)."""
  import torch
  backend = jax.default_backend()
  if backend == "cpu":
    return "cpu"
  return "cuda" if backend == "gpu" and torch.cuda.is_available() else None


def build_torch_step(cfg, case: Case, params, batch: dict, rng, device: str = "cpu", attention: str = "eager"):
  """transformers' model with our weights, AdamW, and a closure running one full training step.

  Args:
    device: torch device ("cpu" or "cuda"); attention: transformers' attention implementation ("eager", "sdpa").

  Pre-training uses the mask and negatives of the JAX step's first update (without accumulation,
  `PretrainingTask.loss` draws them from `split(fold_in(rng, step), 4)[:2]`). The optimiser is torch's fused AdamW,
  the default of transformers' Trainer for torch >= 2.8 (the per-tensor loop is ~20x slower on CPU: ~2 s per step
  for BASE on 2 cores).
  """
  import torch
  import transformers

  torch.set_num_threads(os.cpu_count())
  architecture = ARCHITECTURES[case.kind]
  hf_config = transformers.Wav2Vec2Config.from_dict(cfg.to_hf_dict(architecture))
  hf_config._attn_implementation = attention  # pylint: disable=protected-access
  model = getattr(transformers, architecture)(hf_config)
  state_dict = convert.params_to_hf(params, cfg, architecture)
  model.load_state_dict({k: torch.tensor(v) for k, v in state_dict.items()}, strict=True)
  model.to(device).train()
  inputs = {"input_values": torch.from_numpy(batch["waveform"]),
            "attention_mask": torch.from_numpy(batch["attention_mask"]).long()}
  if case.kind == "pretrain":
    frames = masking.conv_output_lengths(case.samples, cfg.conv_kernel, cfg.conv_stride)
    k_mask, k_neg, _, _ = jax.random.split(jax.random.fold_in(rng, 0), 4)
    masked = masking.compute_time_mask(k_mask, jnp.ones((case.batch, frames), bool), cfg.mask_time_prob,
                                       cfg.mask_time_length, cfg.mask_time_min_masks)
    negatives = masking.sample_negatives(k_neg, masked.count, masked.valid, cfg.num_negatives)
    inputs["mask_time_indices"] = torch.tensor(np.asarray(masked.mask))
    inputs["sampled_negative_indices"] = torch.from_numpy(hf_negatives(masked, negatives, frames))
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, betas=(0.9, 0.98), eps=1e-6,
                                  weight_decay=0.01, fused=True)
  else:
    model.freeze_feature_encoder()
    labels = batch["labels"].astype(np.int64)
    labels[np.arange(labels.shape[1])[None, :] >= batch["label_lengths"][:, None]] = -100
    inputs["labels"] = torch.from_numpy(labels)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE,
                                  betas=(0.9, 0.98), eps=1e-8, weight_decay=0.0, fused=True)
  inputs = {k: v.to(device) for k, v in inputs.items()}
  autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=case.dtype == "bfloat16")
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

  def step() -> float:
    sync()
    start = time.perf_counter()
    with autocast:
      loss = model(**inputs).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    sync()
    return time.perf_counter() - start

  return step


def benchmark_case(case: Case, *, steps: int, warmup: int, compare: str, peak_flops: float,
                   seed: int = 0, torch_attention: str = "eager", host_memory: str = "") -> dict:
  """Times one case; returns the fields of its JSON line (times in ms, memory in MiB; `host_memory`: how the
  process's allocator was set, "reuse" or "glibc", a label for the line).

  `compare="transformers"` also times transformers' step on the same device (`torch_device`; a "torch" field says
  why not where it cannot), with `torch_attention` as its attention implementation and bf16 autocast for bfloat16.
  """
  cfg = model_config(case)
  batch = make_batch(cfg, case, seed)
  rng = jax.random.PRNGKey(seed + 1)
  jitted, state, batch_shardings, mesh, rules = build_jax_step(cfg, case, seed)
  torch_step, device = None, None
  if compare == "transformers":  # export the weights before the first (donating) JAX step
    device = torch_device()
    if device:
      torch_step = build_torch_step(cfg, case, state.params, batch, rng, device, torch_attention)
  holder = {"state": state}
  del state

  with partitioning.activate(mesh, rules):
    device_batch = jax.device_put(batch, batch_shardings)
    start = time.perf_counter()
    compiled = jitted.lower(holder["state"], device_batch, rng).compile()
    compile_s = time.perf_counter() - start
    holder["state"], metrics = compiled(holder["state"], device_batch, rng)
    jax.block_until_ready(metrics)
    first_ms = (time.perf_counter() - start) * 1e3

    def jax_step() -> float:
      begin = time.perf_counter()
      holder["state"], out = compiled(holder["state"], device_batch, rng)
      jax.block_until_ready((holder["state"], out))
      return time.perf_counter() - begin

    torch_first_ms = torch_step() * 1e3 if torch_step else None
    for _ in range(warmup):
      jax_step()
      if torch_step:
        torch_step()
    jax_times, torch_times = [], []
    for _ in range(steps):  # interleaved: both sides see the same machine load
      jax_times.append(jax_step())
      if torch_step:
        torch_times.append(torch_step())

  count = flops.count_flops(cfg, case.batch, case.samples, case.kind)
  jax_s = statistics.median(jax_times)
  memory = compiled.memory_analysis()
  result = {
      "variant": case.variant, "kind": case.kind, "batch": case.batch, "samples": case.samples,
      "dtype": case.dtype, "scan_layers": case.scan_layers, "remat": case.remat,
      "pos_conv_impl": case.pos_conv_impl, "attention": case.attention, "steps": steps,
      "host_memory": host_memory,
      "jax_ms": round(jax_s * 1e3, 2), "jax_ms_min": round(min(jax_times) * 1e3, 2),
      "jax_ms_first_step": round(first_ms, 1), "compile_s": round(compile_s, 2),
      "audio_s_per_s": round(count.audio_seconds / jax_s, 3),
      "gflop_per_step": round(count.per_step / 1e9, 3), "peak_gflops": round(peak_flops / 1e9, 2),
      "mfu": round(flops.mfu(count.per_step, jax_s, peak_flops), 4),
      "mfu_datasheet": _datasheet_mfu(count.per_step, jax_s, case.dtype),
      "params_m": round(sum(x.size for x in jax.tree_util.tree_leaves(holder["state"].params)) / 1e6, 3),
      "loss_finite": bool(float(metrics["skipped"]) == 0.0),
  }
  if memory is not None:
    parts = {"temp": memory.temp_size_in_bytes, "argument": memory.argument_size_in_bytes,
             "output": memory.output_size_in_bytes}
    result["memory_mb"] = round(sum(parts.values()) / _MB, 1)  # temp + argument + output
    result.update({f"memory_{name}_mb": round(value / _MB, 1) for name, value in parts.items()})
    result["memory_alias_mb"] = round(memory.alias_size_in_bytes / _MB, 1)  # donated: output reuses argument
  result["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # whole process
  result["device_kind"] = jax.devices()[0].device_kind
  if compare == "transformers" and not torch_step:
    result["torch"] = f"not compared: torch cannot run on this {jax.default_backend()} device"
  if torch_step:
    import torch
    import transformers

    torch_s = statistics.median(torch_times)
    result.update({
        "torch_ms": round(torch_s * 1e3, 2), "torch_ms_min": round(min(torch_times) * 1e3, 2),
        "torch_ms_first_step": round(torch_first_ms, 1), "torch_over_jax": round(torch_s / jax_s, 3),
        "torch_audio_s_per_s": round(count.audio_seconds / torch_s, 3),
        "torch_mfu": round(flops.mfu(count.per_step, torch_s, peak_flops), 4),
        "torch_device": device, "torch_attention": torch_attention,
        "torch_threads": torch.get_num_threads(), "transformers": transformers.__version__,
    })
  return result


def _datasheet_mfu(flops_per_step: float, step_seconds: float, dtype: str) -> float | None:
  """MFU against the device's datasheet bf16 peak (None: float32, or a device not in `flops.DATASHEET_BF16`)."""
  peak = flops.datasheet_bf16_peak(jax.devices()[0].device_kind) if dtype == "bfloat16" else None
  return round(flops.mfu(flops_per_step, step_seconds, peak), 4) if peak else None


def run(cases, *, steps: int, warmup: int = 1, compare: str = "", seed: int = 0, emit=print,
        torch_attention: str = "eager", host_memory: str = "") -> list[dict]:
  """Benchmarks every case, emitting each JSON line as soon as it is measured; returns the results."""
  peak = flops.measure_matmul_peak(jnp.dtype(cases[0].dtype)) if cases else 0.0
  results = []
  for case in cases:
    result = benchmark_case(case, steps=steps, warmup=warmup, compare=compare, peak_flops=peak, seed=seed,
                            torch_attention=torch_attention, host_memory=host_memory)
    emit(json.dumps(result))
    results.append(result)
  return results


def cases_from_flags() -> list[Case]:
  """One Case per (--variant, --kind) with the other case flags."""
  f = flags.FLAGS
  return [Case(variant, kind, f.batch, f.samples, f.dtype, f.scan_layers, f.remat, f.pos_conv_impl, f.attention)
          for variant in f.variant for kind in f.kind]


def main(argv):
  del argv
  f = flags.FLAGS
  host_memory = host_memory_lib.apply_from_flags()  # reported in every line
  cases = cases_from_flags()
  run(cases, steps=f.steps, warmup=f.warmup, compare=f.compare, seed=f.seed,
      emit=lambda line: print(line, flush=True), torch_attention=f.torch_attention, host_memory=host_memory)


if __name__ == "__main__":
  app.run(main)
