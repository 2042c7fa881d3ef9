"""The one training loop: `train_and_evaluate(config, workdir)` runs pre-training or CTC fine-tuning.

Sections: config, task and model, mesh, input, state (resume: latest checkpoint in the workdir, then
`config.init_from`, then scratch), steps (one jit per batch shape and task phase), loop (metrics, periodic
validation, the best checkpoint by WER, checkpoints, SIGTERM, bad-step limit).
"""

import dataclasses
import functools
import json
import time

import jax
import numpy as np
from absl import logging

from data_pipelines import storage
from data_pipelines.vocab import Vocab
from wav2vec_jax.inference.evaluation import Evaluator
from wav2vec_jax.interop import loading
from wav2vec_jax.models.config import LOSS_FIELDS
from wav2vec_jax.models.wav2vec2 import Wav2Vec2ForCTC, Wav2Vec2ForPreTraining
from wav2vec_jax.tasks.ctc import CTCTask
from wav2vec_jax.tasks.pretraining import PretrainingTask
from wav2vec_jax.training import checkpointing, flops, initialization, inputs, optim, partitioning, train_state
from wav2vec_jax.training import metrics as metrics_lib
from wav2vec_jax.training import step as step_lib
from wav2vec_jax.training import workdir_lock

TASKS = ("pretrain", "ctc")
BEST_DIR = "best"  # lowest validation `config.best_metric`, the other breaks ties: load_pretrained(f"{workdir}/best")
BEST_METRICS = ("wer", "cer")  # fairseq best_checkpoint_metric: what the best checkpoint minimises
PLOT_EVERY_S = 300.0  # plots are redrawn at every validation, at the end, and at most this often between


class BadStepsError(RuntimeError):
  """Too many consecutive updates had a non-finite loss or gradient."""


class ConfigError(ValueError):
  """A config value no run can use, or one that does not fit the workdir's checkpoints; names the field."""


class TrainingStopped(RuntimeError):
  """A termination request (SIGTERM, a preemption notice) stopped the run before `total_steps`; its checkpoint is
  saved. Raised only for callers that go on to another stage (`train_and_evaluate(..., raise_when_stopped=True)`)."""


def validate_config(config) -> None:
  """Fails early, naming the field, on values no run can use."""
  task = config.get("task", "pretrain")
  checks = [
      (task in TASKS, "task", f"must be one of {TASKS}"),
      (config.total_steps >= 1, "total_steps", "must be at least 1"),
      (config.keep_checkpoints >= 1, "keep_checkpoints", "must be at least 1 (0 would delete every checkpoint)"),
      (config.checkpoint_every >= 1, "checkpoint_every", "must be at least 1"),
      (config.log_every >= 1, "log_every", "must be at least 1"),
      (config.optim.grad_accum >= 1, "optim.grad_accum", "must be at least 1"),
      (config.max_consecutive_bad_steps >= 1, "max_consecutive_bad_steps", "must be at least 1"),
      (config.get("best_metric", "wer") in BEST_METRICS, "best_metric", f"must be one of {BEST_METRICS}"),
  ]
  for ok, field, why in checks:
    if not ok:
      value = config
      for part in field.split("."):
        value = value.get(part)
      raise ConfigError(f"config.{field}={value!r}: {why}")


def schedule_of(config, total_steps: int):
  """The learning-rate schedule of `config.optim` ("linear": warm-up + linear decay; "tri_stage")."""
  o = config.optim
  if o.get("schedule", "linear") == "tri_stage":
    return optim.tri_stage(o.peak_lr, total_steps, *o.phase_ratio, init_scale=o.init_lr_scale,
                           final_scale=o.final_lr_scale)
  return optim.warmup_linear_decay(o.peak_lr, o.warmup_steps, total_steps)


def build_task(config, cfg):
  """The task object of `config.task` around a model of ModelConfig `cfg`."""
  if config.get("task", "pretrain") == "ctc":
    return CTCTask(Wav2Vec2ForCTC(cfg), freeze_updates=config.freeze_finetune_updates)
  return PretrainingTask(Wav2Vec2ForPreTraining(cfg), warn_at_chance_after=config.warn_at_chance_after)


def _check_resume_config(workdir: str, cfg, architecture: str) -> None:
  """A workdir's checkpoints were written by one model: name the fields a relaunch changed."""
  path = storage.Path(storage.join(workdir, loading.OWN_CONFIG_FILE))
  if not path.exists():
    return
  saved = json.loads(path.read_text())
  ours = dataclasses.asdict(cfg)
  changed = {k: (v, ours.get(k)) for k, v in saved["model_config"].items()
             if (tuple(v) if isinstance(v, list) else v) != ours.get(k)}
  # The training regime and the loss may change on resume; scan_layers is the checkpoint's layout: kept.
  free = (set(initialization.REGIME_FIELDS) | set(LOSS_FIELDS)) - {"scan_layers"}
  differs = {k: values for k, values in changed.items() if k not in free}
  # Masking is regime, but switching all of it on or off adds or removes a parameter (the learned mask embedding,
  # `masked_spec_embed`, exists only with some masking, as in transformers): the checkpoint would not restore.
  saved_masks = {k: saved["model_config"].get(k, 0.0) for k in ("mask_time_prob", "mask_channel_prob")}
  if any(v > 0 for v in saved_masks.values()) != cfg.uses_mask_embedding:
    has = "has" if cfg.uses_mask_embedding else "has no"
    raise ConfigError(
        f"{workdir} holds checkpoints of a model {'without' if cfg.uses_mask_embedding else 'with'} a learned mask "
        f"embedding (masked_spec_embed; the run's mask_time_prob {saved_masks['mask_time_prob']}, mask_channel_prob "
        f"{saved_masks['mask_channel_prob']}), and this config's model {has} one (mask_time_prob "
        f"{cfg.mask_time_prob}, mask_channel_prob {cfg.mask_channel_prob}): the embedding exists only when some "
        "masking is on. Relaunch with masking as the run had it, or start a new --workdir with "
        f"--config.init_from={workdir}.")
  if changed and not differs and saved["architecture"] == architecture:
    logging.info("resuming %s with %s", workdir,
                 ", ".join(f"{k} {b!r} (checkpoint's run {a!r})" for k, (a, b) in sorted(changed.items())))
  if differs or saved["architecture"] != architecture:
    fields = ", ".join(f"{k}: checkpoint {a!r}, config {b!r}" for k, (a, b) in sorted(differs.items()))
    raise ConfigError(f"{workdir} holds checkpoints of another model ({saved['architecture']} vs {architecture}; "
                     f"{fields or 'same fields'}). Relaunch with the workdir's config, or use a new --workdir.")


def _write_run_files(workdir: str, model, vocab: Vocab | None, eval_data) -> None:
  if jax.process_index() != 0:
    return
  if eval_data is not None:  # how validation reads audio, so evaluate.py reads it the same way
    inputs.save_input_config(storage.join(workdir, inputs.INPUT_FILE), eval_data.config)
  meta = {"architecture": type(model).__name__, "model_config": dataclasses.asdict(model.config)}
  storage.write_text(storage.join(workdir, loading.OWN_CONFIG_FILE), json.dumps(meta, indent=2))
  if vocab is not None:
    vocab.save_hf(storage.join(workdir, inputs.VOCAB_FILE))


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


def _best_key(scores: dict, metric: str) -> tuple[float, float]:
  """What the best checkpoint minimises: (`metric`, the other of WER and CER) of validation scores `val/...`."""
  order = (metric,) + tuple(m for m in BEST_METRICS if m != metric)
  return tuple(float(scores.get(f"val/{m}", float("inf"))) for m in order)


def _read_best(workdir: str, metric: str) -> tuple[float, float]:
  """`_best_key` of the best checkpoint so far; (inf, inf) before the first."""
  path = storage.Path(storage.join(workdir, BEST_DIR, "best.json"))
  if not path.exists():
    return float("inf"), float("inf")
  return _best_key(json.loads(path.read_text()), metric)


def _memory_summary(stats) -> str:
  """XLA's memory analysis of a compiled step in MB per device ("?" where the backend gives none)."""
  if stats is None:
    return "memory ?"
  mb = lambda name: getattr(stats, name, 0) / 2**20  # noqa: E731
  return (f"memory per device {mb('argument_size_in_bytes'):.0f} MB arguments + "
          f"{mb('temp_size_in_bytes'):.0f} MB temporaries")


def _save_best(workdir: str, model, params, vocab: Vocab, eval_data, step: int, scores: dict) -> None:
  directory = storage.join(workdir, BEST_DIR)
  loading.save_pretrained(directory, model, {"params": params})
  if jax.process_index() == 0:
    vocab.save_hf(storage.join(directory, inputs.VOCAB_FILE))
    inputs.save_input_config(storage.join(directory, inputs.INPUT_FILE), eval_data.config)
    storage.write_text(storage.join(directory, "best.json"), json.dumps({"step": step, **scores}, indent=2))


def train_and_evaluate(config, workdir: str, *, raise_when_stopped: bool = False) -> dict[str, float]:
  """Trains the task of `config.task` ("pretrain" or "ctc").

  Args:
    config: ConfigDict from `experiments/configs/pretrain.py` or `finetune.py`.
    workdir: checkpoints, metrics.jsonl, TensorBoard events, the model config, the vocabulary and (fine-tuning)
      the best checkpoint by validation WER (`config.best_metric`) go here.
    raise_when_stopped: a termination request before `total_steps` raises `TrainingStopped` (after saving) instead
      of returning, so that a job of several stages does not go on with an unfinished model.
  Returns:
    The metrics of the last logged step (float dict), validation metrics included.
  """
  validate_config(config)
  workdir = storage.absolute(workdir)
  storage.Path(workdir).mkdir(parents=True, exist_ok=True)
  with workdir_lock.WorkdirLock(workdir) as lock:
    checkpointer = checkpointing.Checkpointer(storage.join(workdir, "checkpoints"), config.checkpoint_every,
                                              config.keep_checkpoints, config.async_checkpoints)
    try:
      last, step = _train(config, workdir, lock, checkpointer)
    finally:
      checkpointer.close()  # waits for the last asynchronous save
  if raise_when_stopped and step < config.total_steps:
    raise TrainingStopped(f"{workdir}: stopped at step {step} of {config.total_steps} by a termination request; "
                          "its checkpoint is saved: run the same command again to resume")
  return last


def _train(config, workdir: str, lock: workdir_lock.WorkdirLock, checkpointer: checkpointing.Checkpointer):
  """`train_and_evaluate` once the workdir is ours; returns (last metrics, the step it stopped at)."""
  is_ctc = config.get("task", "pretrain") == "ctc"
  latest = checkpointer.latest_step()

  # Task and model: the architecture of the initial checkpoint when fine-tuning one, the vocabulary's head size.
  initial = None
  if config.init_from and latest is None:
    initial = initialization.load_initial(config.init_from, config.model.scan_layers)
  vocab = None
  if is_ctc:
    vocab, vocab_origin = inputs.load_vocab(config, workdir, initial[2] if initial else None)
    if initial is not None:
      initialization.check_head(initial[1], vocab.size, config.init_from, vocab_origin)
  initial_cfg = initial[0].config if initial else None
  if latest is not None and config.init_from:  # resume: the architecture the run started from
    initial_cfg = initialization.saved_config(workdir)
  cfg = initialization.model_config(config, initial_cfg, vocab.size if vocab else None)
  task = build_task(config, cfg)
  if latest is not None:
    _check_resume_config(workdir, cfg, type(task.model).__name__)

  # Mesh.
  mesh = partitioning.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
  rules = partitioning.logical_axis_rules(config.mesh.rules)
  batch_parallel = mesh.shape["data"] * mesh.shape["fsdp"]
  logging.info("task %s, mesh %s, %d processes, %d devices", task.name, dict(mesh.shape), jax.process_count(),
               jax.device_count())

  # Input: every host reads its own rows of each global batch.
  data, eval_data = inputs.make_inputs(config, task.input_mode, batch_parallel * config.optim.grad_accum, vocab,
                                       jax.process_index(), jax.process_count())
  logging.info("input: %d batch shapes %s, languages %s", len(data.shapes), data.shapes, data.languages)

  to_global = partitioning.host_to_global(mesh, rules)

  # State: latest checkpoint, else initial weights, else scratch.
  schedule = schedule_of(config, config.total_steps)
  o = config.optim
  make_tx = lambda phase: optim.adam(schedule, o.b1, o.b2, o.eps, o.weight_decay, o.clip_norm,  # noqa: E731
                                     labels=task.parameter_labels, groups=task.groups,
                                     held=task.held(phase))
  shardings = train_state.state_shardings(task.model, make_tx("train"), mesh, rules)
  restored = None
  if latest is not None:
    restored = checkpointer.restore_latest(train_state.sharded_abstract_state(task.model, make_tx("train"), mesh,
                                                                               rules))
  if restored is not None:
    latest, state, data_state = restored
    data.set_state(data_state)
    logging.info("resumed from step %d", latest)
  else:
    state = train_state.create_train_state(task.model, make_tx("train"), jax.random.PRNGKey(config.seed), mesh, rules)
    if initial is not None:
      abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state.params)
      state = train_state.with_params(state, initialization.merge_params(abstract, initial[1], config.init_from),
                                      shardings.params)
  _write_run_files(workdir, task.model, vocab, eval_data)
  if jax.process_index() == 0:
    metrics_lib.truncate_after(workdir, int(state.step))  # rows past the restored step would double back

  # Steps: one jit per task phase, compiled ahead of time once per batch shape.
  step_fns = {}
  def step_fn(phase):
    if phase not in step_fns:
      fn = functools.partial(step_lib.train_step, task=task, tx=make_tx(phase), schedule=schedule, phase=phase,
                             grad_accum=config.optim.grad_accum)
      step_fns[phase] = jax.jit(fn, in_shardings=(shardings, None, None), out_shardings=(shardings, None),
                                donate_argnums=0)
    return step_fns[phase]
  rng = jax.random.PRNGKey(config.seed + 1)
  compiled = {}
  validator = Evaluator(task.model, eval_data, vocab, to_global) if eval_data is not None else None
  best_metric = config.get("best_metric", "wer")
  best = _read_best(workdir, best_metric)

  writer = metrics_lib.MetricWriter(workdir, total_steps=config.total_steps,
                                    tensorboard=config.get("tensorboard", True))
  peak = flops.measure_matmul_peak(jax.numpy.dtype(cfg.dtype)) if config.measure_peak_flops else None
  window = {"flops": 0.0, "audio": 0.0, "steps": 0, "start": None}  # throughput since the last log line
  termination = checkpointing.TerminationFlag().install()
  step = int(state.step)
  skipped = int(state.bad_steps)  # skipped updates as of the last metrics read: phases count applied updates
  last, pending, last_phase = {}, None, None
  plot, plotted = config.get("plots", True), time.monotonic()
  eval_every = config.get("eval_every", 0)
  try:
    with partitioning.activate(mesh, rules):
      while step < config.total_steps:
        local = next(data)
        if step in config.fault_injection.nan_steps:
          local = dict(local, waveform=np.full_like(local["waveform"], np.nan))
        batch = to_global({k: local[k] for k in task.batch_keys})
        phase = task.phase(step - skipped)  # fairseq's num_updates: a skipped update does not count
        if phase != last_phase and pending is not None:  # at a phase boundary, count exactly (waits for the last step)
          skipped = int(pending[1]["bad_steps"])
          phase = task.phase(step - skipped)
        last_phase = phase
        key = (batch["waveform"].shape, batch.get("labels", batch["waveform"]).shape, phase)
        if key not in compiled:  # ahead-of-time compile per batch shape and phase, with memory and FLOP figures
          t0 = time.perf_counter()
          executable = step_fn(phase).lower(state, batch, rng).compile()
          shape = batch["waveform"].shape
          analytic = flops.count_flops(cfg, shape[0], shape[1], task.flop_kind).per_step
          compiled[key] = (executable, analytic)
          xla = flops.xla_flops(executable) * jax.device_count()  # cost_analysis counts one device's share
          logging.info("compiled %s step for batch %s in %.1f s (%d so far): %s, %.1f GFLOP/step (XLA/analytic "
                       "%.2f)", phase, shape, time.perf_counter() - t0, len(compiled),
                       _memory_summary(executable.memory_analysis()), analytic / 1e9, xla / max(analytic, 1.0))
        executable, analytic = compiled[key]
        state, step_metrics = executable(state, batch, rng)
        step += 1
        lock.heartbeat()
        window["flops"] += analytic
        window["audio"] += float(local["attention_mask"].sum()) * jax.process_count() / data.config.sample_rate
        window["steps"] += 1
        # The skip counters, every step, one step behind: the previous step's are ready by now.
        if pending is not None:
          skipped, consecutive = int(pending[1]["bad_steps"]), int(pending[1]["consecutive_bad_steps"])
          if consecutive >= config.max_consecutive_bad_steps:
            raise BadStepsError(
                f"{consecutive} consecutive updates had a non-finite loss or gradient (limit "
                f"config.max_consecutive_bad_steps={config.max_consecutive_bad_steps}); stopped at step "
                f"{pending[0]}. The checkpoints in {workdir}/checkpoints hold the last good parameters; look for "
                "bad input near this step or lower the learning rate.")
        pending = (step, step_metrics)
        if step % config.log_every == 0 or step == config.total_steps or step == 1:
          last = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
          last.update(_throughput(window, peak))
          last["compiles"] = float(len(compiled))
          last.update({f"input/{k}": float(v) for k, v in data.counters().items()
                       if k.startswith(("skipped/", "warned/"))})
          validated = (validator is not None and eval_every and step >= config.get("validate_after", 0)
                       and (step % eval_every == 0 or step == config.total_steps))
          if validated:
            last.update({f"val/{k}": v for k, v in validator(state.params).metrics.items()})
            scored = _best_key(last, best_metric)  # the other of WER and CER breaks ties (WER 1.0 early on)
            if scored < best:
              best = scored
              _save_best(workdir, task.model, state.params, vocab, eval_data, step,
                         {k: v for k, v in last.items() if k.startswith("val/")})
            last[f"val/best_{best_metric}"] = best[0]
          writer.write(step, last)
          replot = plot and (validated or time.monotonic() - plotted > PLOT_EVERY_S)
          if replot:
            writer.plot()
            plotted = time.monotonic()
          if validated or replot:
            window["start"] = time.perf_counter()  # validation and plotting time are not training throughput
          for warning in task.health_warnings(last, step):
            logging.warning("step %d: %s", step, warning)
        if checkpointer.save(step, state, data.get_state()):
          writer.flush()  # the rows up to a checkpoint outlive a kill (object storage has no append)
        if termination.is_set() or checkpointer.reached_preemption(step):
          if checkpointer.latest_step() != step:
            checkpointer.save(step, state, data.get_state(), force=True)
          logging.warning("stopping at step %d after a termination request; checkpoint saved", step)
          break
      else:
        if pending is not None and int(pending[1]["consecutive_bad_steps"]) >= config.max_consecutive_bad_steps:
          raise BadStepsError(f"the last {int(pending[1]['consecutive_bad_steps'])} updates had a non-finite loss "
                              f"or gradient (limit config.max_consecutive_bad_steps)")
        if checkpointer.latest_step() != step:
          checkpointer.save(step, state, data.get_state(), force=True)
  finally:
    termination.uninstall()
    data.close()
    if eval_data is not None:
      eval_data.close()
    if plot:
      writer.plot()
    writer.close()
  logging.info("done at step %d: %s", step, {k: last[k] for k in sorted(last) if k.startswith(("loss", "val"))})
  return last, step
