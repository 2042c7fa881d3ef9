"""Orbax checkpoints of the train state and the input position, with async saves and preemption handling.

Layout: `<workdir>/checkpoints/<step>/{state,data}`. The state is restored onto whatever mesh the restoring run
uses (the target carries the new shardings), so a run saved on 8 devices resumes on 1 or 4.
"""

import signal
import threading

import orbax.checkpoint as ocp
from absl import logging


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
