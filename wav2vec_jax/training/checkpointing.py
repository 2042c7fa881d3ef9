"""Orbax checkpoints of the train state and the input position, with async saves and preemption handling.

Layout: `<workdir>/checkpoints/<step>/{state,data}`. The state is restored onto whatever mesh the restoring run
uses (the target carries the new shardings), so a run saved on 8 devices resumes on 1 or 4.
"""

import signal
import threading
import time

import jax
import orbax.checkpoint as ocp
from absl import logging

from data_pipelines import storage


class CheckpointError(RuntimeError):
  """No checkpoint of a workdir can be restored; the message names each step, why, and what to do."""


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` for items "state" (arrays) and "data" (input position JSON)."""

  def __init__(self, directory: str, save_every: int, keep: int, async_save: bool = True):
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=max(save_every, 1),
                                           enable_async_checkpointing=async_save, create=True)
    self.manager = ocp.CheckpointManager(directory, options=options, item_names=("state", "data"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_state: dict, force: bool = False) -> bool:
    """Saves (asynchronously) when `step` is on the save interval, or always with force. Returns whether it did."""
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state))
    saved = self.manager.save(step, args=args, force=force)
    if saved:
      logging.info("checkpoint: saving step %d", step)
    return saved

  def restore(self, step: int, target):
    """Restores (state, data_state) of `step`.

    Args:
      target: the unboxed train state as `jax.ShapeDtypeStruct`s carrying the current mesh's shardings
        (`train_state.sharded_abstract_state`); the checkpoint is laid out onto them.
    """
    restored = self.manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
    return restored.state, restored.data

  def restore_latest(self, target):
    """Restores the newest readable checkpoint.

    A checkpoint that fails while an older one restores is damaged (a truncated array file, garbage in the input
    position): it is moved aside to `<directory>.corrupt/<step>-<time>` (never deleted) with the reason logged,
    and the run resumes from the older one. When none restores, nothing is moved (the cause is more likely a config
    that no longer fits them) and CheckpointError names each step and the choices.

    Args:
      target: as `restore`.
    Returns:
      (step, state, data_state), or None when the directory holds no checkpoint.
    """
    failures = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        state, data = self.restore(step, target)
        if not isinstance(data, dict) or not {"epoch", "step"} <= set(data):
          raise ValueError(f"the input position is not a JSON object with epoch and step: {str(data)[:80]!r}")
      except Exception as e:  # pylint: disable=broad-except  # Orbax, tensorstore and JSON errors alike
        failures.append((step, e))
        logging.warning("checkpoint step %d cannot be restored: %s", step, _first_line(e))
        continue
      for bad, error in failures:
        self._move_aside(bad, error)
      if failures:
        self.manager.reload()
      return step, state, data
    if failures:
      reasons = "; ".join(f"step {step}: {_first_line(e)}" for step, e in failures)
      raise CheckpointError(
          f"no checkpoint in {self.manager.directory} can be restored ({reasons}). They were left in place. If the "
          "model, optimiser or mesh rules changed, relaunch with the config the run was started with; if the files "
          "are damaged, restore them from a copy, or move them away (or use a new --workdir) to start again.")
    return None

  def _move_aside(self, step: int, error: Exception) -> None:
    source = storage.join(str(self.manager.directory), str(step))
    aside = storage.join(f"{self.manager.directory}.corrupt", f"{step}-{int(time.time())}")
    if jax.process_index() == 0:
      storage.Path(aside).parent.mkdir(parents=True, exist_ok=True)
      storage.Path(source).rename(aside)
      storage.write_text(storage.join(aside, "WHY.txt"), f"{type(error).__name__}: {error}\n")
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f"checkpoint_move_aside_{step}")
    logging.error("checkpoint step %d is damaged (%s); moved to %s, resuming from an older one", step,
                  _first_line(error), aside)

  def reached_preemption(self, step: int) -> bool:
    """True on every process once any process got a preemption notice (multi-host safe)."""
    return self.manager.reached_preemption(step)

  def wait_until_finished(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


class TerminationFlag:
  """Set by SIGTERM (cloud preemption, `kill`): the loop saves the current step and exits cleanly."""

  def __init__(self):
    self._event = threading.Event()
    self._previous = None

  def install(self):
    # Several processes: SIGTERM stays with JAX's preemption service (jax.distributed.initialize installed its
    # handler), which makes `Checkpointer.reached_preemption` true on every process at the same step. A flag of our
    # own would stop only the signalled process: it would wait in the checkpoint's barrier, the others in the next
    # step's collectives, forever.
    if jax.process_count() > 1 and jax.config.jax_enable_preemption_service:
      return self
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    logging.warning("received signal %d: will save a checkpoint and stop after this step", signum)
    self._event.set()

  def is_set(self) -> bool:
    return self._event.is_set()

  def uninstall(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None


def _first_line(error: Exception, limit: int = 300) -> str:
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0][:limit] if text else ''}"
