"""Pre-training loop: `train_and_evaluate(config, workdir)`, callable from the absl entry point, tests or notebooks.

Sections: mesh, input, state, step, checkpoint, loop. Resume order: latest checkpoint in the workdir, then
`config.init_from` (pre-trained or imported weights), then scratch.
"""

import dataclasses
import functools
import json
import os
import time

import jax
import numpy as np
from absl import logging

from data_pipelines import pipeline
from data_pipelines.sources import AudioIndex
from wav2vec_jax import checkpointing, flops, losses, metrics as metrics_lib, optim, partitioning
from wav2vec_jax import pretrain_step, train_state
from wav2vec_jax.models.config import ModelConfig
from wav2vec_jax.models.wav2vec2 import Wav2Vec2ForPreTraining


class BadStepsError(RuntimeError):
  """Too many consecutive updates had a non-finite loss or gradient."""


def model_config(config) -> ModelConfig:
  """The frozen ModelConfig from `config.model` (a ConfigDict of ModelConfig fields)."""
  return ModelConfig.from_dict(config.model.to_dict())


def build_index(data) -> AudioIndex:
  """The utterance index of `config.data` (generated corpus, LibriSpeech folder, fairseq manifest or TFDS)."""
  splits = [s for s in data.split.split(",") if s]
  if data.source == "corpus":
    from data_pipelines import corpus  # pylint: disable=g-import-not-at-top
    from data_pipelines.sources import librispeech_folder  # pylint: disable=g-import-not-at-top

    return librispeech_folder(data.path or corpus.ensure_default_corpus(), splits)
  if data.source == "librispeech":
    from data_pipelines.sources import librispeech_folder  # pylint: disable=g-import-not-at-top

    return librispeech_folder(data.path, splits or None)
  if data.source == "manifest":
    from data_pipelines.manifest import read_manifest  # pylint: disable=g-import-not-at-top

    return read_manifest(data.path, labels=None)
  if data.source == "tfds":
    from data_pipelines.tfds_source import tfds_index  # pylint: disable=g-import-not-at-top

    return tfds_index(data.tfds_name, split=data.split, data_dir=data.path or None)
  raise ValueError(f"config.data.source={data.source!r}: choose 'corpus', 'librispeech', 'manifest' or 'tfds'")


def _initial_params(config, model):
  if not config.init_from:
    return None
  from wav2vec_jax.loading import load_pretrained  # pylint: disable=g-import-not-at-top

  loaded, variables = load_pretrained(config.init_from, scan_layers=model.config.scan_layers)
  if not isinstance(loaded, Wav2Vec2ForPreTraining):
    raise ValueError(f"config.init_from={config.init_from}: a pre-training checkpoint is needed, found "
                     f"{type(loaded).__name__}")
  return lambda: variables["params"]


def _throughput(window: dict, peak: float | None) -> dict[str, float]:
  """Figures over the steps since the previous log line (the first window, with compilation, is skipped)."""
  now, out = time.perf_counter(), {}
  if window["start"] is not None and window["steps"]:
    seconds = now - window["start"]
    out = {"throughput/step_seconds": seconds / window["steps"],
           "throughput/audio_seconds_per_second": window["audio"] / seconds,
           "throughput/tflops_per_device": window["flops"] / seconds / jax.device_count() / 1e12}
    if peak:
      out["throughput/mfu"] = flops.mfu(window["flops"], seconds, peak, jax.device_count())
  window.update(flops=0.0, audio=0.0, steps=0, start=now)
  return out


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
  """Pre-trains a wav2vec 2.0 model.

  Args:
    config: ConfigDict from `experiments/configs/pretrain.py`.
    workdir: checkpoints, metrics.jsonl, TensorBoard events and the model config go here.
  Returns:
    The metrics of the last logged step (float dict).
  """
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  cfg = model_config(config)
  model = Wav2Vec2ForPreTraining(cfg)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "wav2vec_jax.json"), "w") as f:
      json.dump({"architecture": "Wav2Vec2ForPreTraining", "model_config": dataclasses.asdict(cfg)}, f, indent=2)

  # Mesh.
  mesh = partitioning.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
  rules = partitioning.logical_axis_rules(config.mesh.rules)
  batch_parallel = mesh.shape["data"] * mesh.shape["fsdp"]
  logging.info("mesh %s, %d processes, %d devices", dict(mesh.shape), jax.process_count(), jax.device_count())

  # Input: every host reads its own rows of each global batch.
  input_fields = config.data.input.to_dict()
  input_fields.update(mode="pretrain", batch_multiple=batch_parallel * config.optim.grad_accum)
  input_config = pipeline.InputConfig.from_dict(input_fields)
  data = pipeline.make_iterator(build_index(config.data), input_config, process_index=jax.process_index(),
                                process_count=jax.process_count())
  logging.info("input: %d batch shapes %s, languages %s", len(data.shapes), data.shapes, data.languages)

  # State.
  schedule = optim.warmup_linear_decay(config.optim.peak_lr, config.optim.warmup_steps, config.total_steps)
  tx = optim.adam(schedule, config.optim.b1, config.optim.b2, config.optim.eps, config.optim.weight_decay,
                  config.optim.clip_norm)
  shardings = train_state.state_shardings(model, tx, mesh, rules)
  checkpointer = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), config.checkpoint_every,
                                            config.keep_checkpoints, config.async_checkpoints)
  latest = checkpointer.latest_step()
  if latest is not None:
    state, data_state = checkpointer.restore(latest, train_state.abstract_state(model, tx), shardings)
    data.set_state(data_state)
    logging.info("resumed from step %d", latest)
  else:
    state = train_state.create_train_state(model, tx, jax.random.PRNGKey(config.seed), mesh, rules,
                                           _initial_params(config, model))

  # Step: one jit, compiled once per batch shape.
  batch_sharding = partitioning.batch_sharding(mesh, rules)
  step_fn = jax.jit(
      functools.partial(pretrain_step.train_step, model=model, tx=tx, schedule=schedule,
                        options=pretrain_step.StepOptions(grad_accum=config.optim.grad_accum)),
      in_shardings=(shardings, {"waveform": batch_sharding, "attention_mask": batch_sharding}, None),
      out_shardings=(shardings, None), donate_argnums=0)
  rng = jax.random.PRNGKey(config.seed + 1)
  compiled = {}

  writer = metrics_lib.MetricWriter(workdir, total_steps=config.total_steps)
  peak = flops.measure_matmul_peak(jax.numpy.dtype(cfg.dtype)) if config.measure_peak_flops else None
  window = {"flops": 0.0, "audio": 0.0, "steps": 0, "start": None}  # throughput since the last log line
  termination = checkpointing.TerminationFlag().install()
  step = int(state.step)
  last = {}
  try:
    with partitioning.activate(mesh, rules):
      while step < config.total_steps:
        local = next(data)
        if step in config.fault_injection.nan_steps:
          local = dict(local, waveform=np.full_like(local["waveform"], np.nan))
        batch = {k: jax.make_array_from_process_local_data(batch_sharding, local[k])
                 for k in ("waveform", "attention_mask")}
        shape = batch["waveform"].shape
        if shape not in compiled:  # ahead-of-time compile per batch shape, with its memory and FLOP figures
          t0 = time.perf_counter()
          executable = step_fn.lower(state, batch, rng).compile()
          analytic = flops.count_flops(cfg, shape[0], shape[1], "pretrain").per_step
          compiled[shape] = (executable, analytic)
          xla = flops.xla_flops(executable) * jax.device_count()  # cost_analysis counts one device's share
          logging.info("compiled step for batch %s in %.1fs (%d shapes so far); memory %s; analytic %.1f GFLOP/step, "
                       "XLA/analytic %.2f", shape, time.perf_counter() - t0, len(compiled),
                       executable.memory_analysis(), analytic / 1e9, xla / max(analytic, 1.0))
        executable, analytic = compiled[shape]
        state, step_metrics = executable(state, batch, rng)
        step += 1
        window["flops"] += analytic
        window["audio"] += float(local["attention_mask"].sum()) * jax.process_count() / input_config.sample_rate
        window["steps"] += 1
        if step % config.log_every == 0 or step == config.total_steps or step == 1:
          last = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
          last.update(_throughput(window, peak))
          last["compiles"] = float(len(compiled))
          writer.write(step, last)
          for warning in metrics_lib.health_warnings(last, cfg.num_negatives, step=step,
                                                     warmup_steps=config.warn_at_chance_after,
                                                     num_groups=cfg.num_codevector_groups):
            logging.warning("step %d: %s", step, warning)
          bad = int(state.consecutive_bad_steps)
          if bad >= config.max_consecutive_bad_steps:
            raise BadStepsError(
                f"{bad} consecutive updates had a non-finite loss or gradient (limit "
                f"config.max_consecutive_bad_steps={config.max_consecutive_bad_steps}); stopping at step {step}. "
                f"The last checkpoint in {workdir}/checkpoints holds the last good parameters.")
        checkpointer.save(step, state, data.get_state())
        if termination.is_set() or checkpointer.reached_preemption(step):
          if checkpointer.latest_step() != step:
            checkpointer.save(step, state, data.get_state(), force=True)
          logging.warning("stopping at step %d after a termination request; checkpoint saved", step)
          break
      else:
        if checkpointer.latest_step() != step:
          checkpointer.save(step, state, data.get_state(), force=True)
  finally:
    termination.uninstall()
    checkpointer.close()
    writer.close()
  logging.info("done at step %d: %s (chance %.3f bits)", step, last.get("loss/bits"),
               losses.chance_level_bits(cfg.num_negatives))
  return last

