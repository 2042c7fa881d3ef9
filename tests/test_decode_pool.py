"""Decoding in worker processes (`InputConfig.decode_processes`): the same batches as the threads, workers and shared
memory gone after `close`, and clear errors for a dead worker and for settings that cannot work. (A bad file decoded
in a worker is still skipped or named: `test_data_pipeline.test_decode_errors_skip_counted_or_raise`.)"""

import dataclasses
import os
import signal
import subprocess
import sys
import time
import types

import pytest
import tensorflow as tf

import batches  # tests/batches.py
from data_pipelines import decode_pool, pipeline, sources, synthetic
from data_pipelines.errors import DataConfigError
from data_pipelines.vocab import Vocab

tf.config.set_visible_devices([], "GPU")
BASE = pipeline.InputConfig(batch_budget=40_000, num_buckets=3, min_sample_size=2_000, max_sample_size=12_000,
                            seed=3, prefetch=2)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("pool"))
  utts = synthetic.write_librispeech_folder(root, split="train", languages=("en", "fr"), speakers_per_language=2,
                                            utterances_per_speaker=5, seconds=(0.15, 1.2), seed=7)
  return root, Vocab.from_transcripts(u.text for u in utts)


@pytest.fixture(scope="module")
def index(folder):
  return sources.librispeech_folder(folder[0], "train")


def _gone(pid: int, timeout: float = 20.0) -> bool:
  """Whether process `pid` has exited (a zombie counts) within `timeout` seconds."""
  deadline = time.monotonic() + timeout
  while True:
    try:
      with open(f"/proc/{pid}/stat") as f:
        if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
          return True
    except FileNotFoundError:
      return True
    if time.monotonic() > deadline:
      return False
    time.sleep(0.1)


@pytest.mark.parametrize("mode, normalize", [("pretrain", True), ("finetune", False)])
def test_worker_processes_give_the_same_batches_as_threads(index, folder, mode, normalize):
  cfg = dataclasses.replace(BASE, mode=mode, normalize=normalize, max_sample_size=20_000 if mode == "finetune"
                            else BASE.max_sample_size)
  threads = pipeline.make_iterator(index, cfg, vocab=folder[1])
  pool = pipeline.make_iterator(index, dataclasses.replace(cfg, decode_processes=2), vocab=folder[1])
  steps = len(threads.epoch_plan(0)) + 2  # crosses an epoch boundary: new crops, new order
  try:
    batches.assert_same(batches.take(threads, steps), batches.take(pool, steps))
    pids = pool._pool.worker_pids  # pylint: disable=protected-access
    assert len(pids) == 2 and os.getpid() not in pids  # decoded elsewhere, not by this process's threads
    assert threads.counters() == pool.counters()
    batches.assert_same([threads.load_batch(1, 2)], [pool.load_batch(1, 2)])  # the eager path, outside tf.data
    assert threads.get_state()["fingerprint"] == pool.get_state()["fingerprint"]  # a run may switch on resume
  finally:
    threads.close()
    pool.close()


def test_close_stops_the_workers_frees_shared_memory_and_keeps_the_position(index):
  expected = batches.take(pipeline.make_iterator(index, BASE), 6)
  it = pipeline.make_iterator(index, dataclasses.replace(BASE, decode_processes=2))
  got = batches.take(it, 3)
  pool = it._pool  # pylint: disable=protected-access
  pids, segments = pool.worker_pids, [slot.name for slot in pool._slots]  # pylint: disable=protected-access
  it.close()
  assert all(_gone(pid) for pid in pids)
  assert not any(os.path.exists(f"/dev/shm/{name}") for name in segments)
  got += batches.take(it, 3)  # new workers, from the position it had
  it.close()
  batches.assert_same(got, expected)


def test_workers_leave_the_process_group_and_ignore_ctrl_c(index):
  # A Ctrl-C or a launcher's SIGTERM to the group is for the training process, which saves a checkpoint after it
  # and stops its workers itself.
  expected = batches.take(pipeline.make_iterator(index, BASE), 6)
  it = pipeline.make_iterator(index, dataclasses.replace(BASE, decode_processes=2))
  got = batches.take(it, 2)
  pids = it._pool.worker_pids  # pylint: disable=protected-access
  assert all(os.getpgid(pid) not in (os.getpgid(0), os.getpgid(os.getppid())) for pid in pids)
  for pid in pids:
    os.kill(pid, signal.SIGINT)
  got += batches.take(it, 4)
  it.close()
  batches.assert_same(got, expected)
  assert all(_gone(pid) for pid in pids)


def test_a_worker_that_dies_stops_the_input_with_a_clear_error(index):
  it = pipeline.make_iterator(index, dataclasses.replace(BASE, decode_processes=2, use_tf_data=False))
  next(it)
  os.kill(it._pool.worker_pids[0], signal.SIGTERM)  # pylint: disable=protected-access
  with pytest.raises(decode_pool.DecodeWorkerError, match="decode worker process died.*decode_processes"):
    for _ in range(10):  # the pool notices the death within a job or two
      next(it)
  it.close()  # the other worker is stopped too (the pool terminates a broken pool's workers): no hang


class _LocalReader:
  """A reader holding something that cannot be pickled (as a client object or an open handle would)."""

  def __init__(self, reader):
    self._reader, self._hook = reader, lambda i: i

  def read(self, i):
    return self._reader.read(self._hook(i))

  def name(self, i):
    return self._reader.name(i)


def test_settings_that_cannot_work_are_config_errors(index):
  local = dataclasses.replace(index, reader=_LocalReader(index.reader))
  it = pipeline.make_iterator(local, dataclasses.replace(BASE, decode_processes=2))
  with pytest.raises(DataConfigError, match="decode_processes=2.*cannot be pickled.*_LocalReader.*=0"):
    next(it)
  with pytest.raises(DataConfigError, match="cache_audio_bytes and data.input.decode_processes"):
    pipeline.make_iterator(index, dataclasses.replace(BASE, decode_processes=2, cache_audio_bytes=1 << 20))
  with pytest.raises(DataConfigError, match="decode_processes must be"):
    pipeline.make_iterator(index, dataclasses.replace(BASE, decode_processes=-2))
  assert pipeline.make_iterator(index, dataclasses.replace(BASE, decode_processes=-1)).decode_processes == (
      pipeline.usable_cores())


def test_too_little_shared_memory_is_a_config_error(index, monkeypatch):
  # Docker's default /dev/shm is 64 MiB; a worker writing past it would die of SIGBUS instead of saying why.
  it = pipeline.make_iterator(index, dataclasses.replace(BASE, decode_processes=-1))
  shm = types.SimpleNamespace(f_bavail=1, f_frsize=1 << 19)  # 0.5 MiB free
  monkeypatch.setattr(decode_pool.os, "statvfs", lambda path: shm)
  workers = it.decode_processes  # -1: one per usable core
  need = 2 * workers * 8 * max(b * s for b, s in it.shapes) / 2**20  # two slots per worker, waveform and mask
  assert need > 0.5
  with pytest.raises(DataConfigError, match=rf"decode_processes=-1 \({workers} worker processes\) needs {need:.1f} MiB "
                     r"of shared memory.*0.5 MiB free.*--shm-size"):
    next(it)
  it.close()


_SCRIPT = '''
import sys
from data_pipelines import pipeline, sources

if __name__ == "__main__":
  index = sources.librispeech_folder(sys.argv[1], "train")
  it = pipeline.make_iterator(index, pipeline.InputConfig(batch_budget=40_000, num_buckets=3, min_sample_size=2_000,
                                                          max_sample_size=12_000, decode_processes=2))
  next(it)
  print(*it._pool.worker_pids, flush=True)
  sys.stdin.read()  # until killed
'''


_GROUP_SIGTERM_SCRIPT = '''
import signal
import sys
from data_pipelines import pipeline, sources

if __name__ == "__main__":
  stop = []
  signal.signal(signal.SIGTERM, lambda *_: stop.append(1))  # as the training loop: save, then stop
  index = sources.librispeech_folder(sys.argv[1], "train")
  it = pipeline.make_iterator(index, pipeline.InputConfig(batch_budget=40_000, num_buckets=3, min_sample_size=2_000,
                                                          max_sample_size=12_000, decode_processes=2))
  next(it)
  print("ready", flush=True)
  sys.stdin.readline()  # the test signals the whole process group, then writes a line
  for _ in range(8):  # more batches than are prefetched: the workers must still be decoding
    next(it)
  it.close()
  print("stop" if stop else "no signal", flush=True)
'''


def test_a_sigterm_to_the_process_group_leaves_the_input_running(folder, tmp_path):
  # A launcher stopping a job signals its whole process group. With a "forkserver" the server, still in the group,
  # died of it, and the pool took that for the death of every worker.
  script = tmp_path / "train.py"
  script.write_text(_GROUP_SIGTERM_SCRIPT)
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
  proc = subprocess.Popen([sys.executable, str(script), folder[0]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
  try:
    assert proc.stdout.readline().strip() == "ready"
    os.killpg(proc.pid, signal.SIGTERM)
    time.sleep(1.0)  # let any process that would die of it die
    out, err = proc.communicate("go\n", timeout=120)
  finally:
    proc.kill()
  assert proc.returncode == 0 and out.strip() == "stop", err[-3000:]


def test_workers_end_when_the_training_process_is_killed(folder, tmp_path):
  # A SIGKILL (out of memory, a preemption's hard stop) runs no cleanup; the workers must not live on without it.
  script = tmp_path / "train.py"
  script.write_text(_SCRIPT)
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
  proc = subprocess.Popen([sys.executable, str(script), folder[0]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True, env=env)
  try:
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2 and all(not _gone(pid, timeout=0) for pid in pids)
  finally:
    proc.kill()
    proc.wait()
  assert all(_gone(pid) for pid in pids)
