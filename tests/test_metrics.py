"""MetricWriter (JSONL, TensorBoard, progress line, process 0 only), health warnings and throughput."""

import glob
import json
import math
import os
from unittest import mock

import jax
import pytest

from wav2vec_jax.training import flops, metrics
from wav2vec_jax.models import get_variant

CHANCE_NATS = math.log(101)  # K = 100


def _strict_json(line):
  def reject(constant):
    raise ValueError(f"non-standard JSON constant {constant}")

  return json.loads(line, parse_constant=reject)


def _tensorboard_scalars(directory):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  scalars = {}
  for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        scalars[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
  return scalars


def test_writer_writes_jsonl_tensorboard_and_a_progress_line(tmp_path):
  workdir = str(tmp_path / "run")
  with mock.patch.object(metrics.logging, "info") as info:
    with metrics.MetricWriter(workdir, total_steps=100) as writer:
      writer.write(10, {"loss/bits": 5.5, "accuracy": 0.25, "codebook/code_perplexity": 120.0,
                        "throughput/steps_per_second": 2.0, "throughput/audio_seconds_per_second": 32.0,
                        "throughput/mfu": 0.4})
      writer.write(20, {"loss/bits": float("nan"), "num_masked": jax.numpy.asarray(7)})
  lines = open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8").read().splitlines()
  records = [_strict_json(line) for line in lines]
  assert [r["step"] for r in records] == [10, 20]
  assert records[0]["loss/bits"] == 5.5 and records[0]["accuracy"] == 0.25
  assert records[1]["loss/bits"] is None and records[1]["num_masked"] == 7.0  # NaN becomes null: strict JSON

  scalars = _tensorboard_scalars(os.path.join(workdir, "tensorboard"))
  assert scalars[("loss/bits", 10)] == pytest.approx(5.5)
  assert scalars[("codebook/code_perplexity", 10)] == pytest.approx(120.0)
  assert math.isnan(scalars[("loss/bits", 20)])

  line = info.call_args_list[0].args[1]
  for part in ("step 10/100", "ETA 0:00:45", "loss 5.500 bits", "acc 0.250", "code ppl 120.0", "2.00 steps/s",
               "32.0 audio-s/s", "MFU 40.0%"):
    assert part in line, (part, line)


def test_writer_appends_when_a_run_resumes(tmp_path):
  for step in (1, 2):
    with metrics.MetricWriter(str(tmp_path), tensorboard=False) as writer:
      writer.write(step, {"loss/bits": 4.0})
  lines = open(tmp_path / "metrics.jsonl", encoding="utf-8").read().splitlines()
  assert [_strict_json(line)["step"] for line in lines] == [1, 2]


def test_only_process_zero_writes(tmp_path):
  with mock.patch.object(metrics.jax, "process_index", return_value=1):
    writer = metrics.MetricWriter(str(tmp_path / "run"), total_steps=10)
    writer.write(1, {"loss/bits": 3.0})
    writer.close()
  assert not os.path.exists(tmp_path / "run")


def test_health_warnings_fire_at_chance_and_collapse():
  stuck = {"loss/contrastive": CHANCE_NATS * 0.99, "codebook/code_perplexity": 250.0}
  (warning,) = metrics.health_warnings(stuck, num_negatives=100, step=5000)
  assert "chance" in warning and "6.658" in warning
  # Without loss/contrastive, loss/bits is used (here above chance: the diversity term adds to it).
  assert metrics.health_warnings({"loss/bits": 6.8}, num_negatives=100, step=5000)
  # A fresh model starts at chance: no warning during the warm-up.
  assert metrics.health_warnings(stuck, num_negatives=100, step=10) == []
  collapsed = {"loss/contrastive": 2.0, "codebook/code_perplexity": 2.4}
  (warning,) = metrics.health_warnings(collapsed, num_negatives=100, step=5000, num_groups=2)
  assert "collapse" in warning
  assert "non-finite" in metrics.health_warnings({"loss/bits": float("nan")}, num_negatives=100)[0]


def test_health_warnings_stay_quiet_on_healthy_numbers():
  healthy = {"loss/bits": 3.1, "loss/contrastive": 2.0, "accuracy": 0.5, "codebook/code_perplexity": 350.0,
             "codebook/prob_perplexity": 400.0}
  assert metrics.health_warnings(healthy, num_negatives=100, step=100_000) == []
  # Just below 98% of chance, and a perplexity just above 2 + 0.5 G.
  borderline = {"loss/contrastive": 0.97 * CHANCE_NATS, "codebook/code_perplexity": 3.1}
  assert metrics.health_warnings(borderline, num_negatives=100, step=100_000, num_groups=2) == []
  # Tiny config: K = 10, chance log2(11) = 3.46 bits; 2.5 bits is learning.
  assert metrics.health_warnings({"loss/bits": 2.5}, num_negatives=10, step=50, warmup_steps=20) == []


def test_throughput_skips_the_compile_step_and_reports_mfu():
  count = flops.count_flops(get_variant("base"), 4, 64000, "pretrain")
  throughput = metrics.Throughput(count.per_step, samples_per_step=4 * 64000, num_devices=2,
                                  peak_flops_per_device=50e9)
  assert throughput.metrics() == {}
  throughput.update(1, now=100.0)  # the first step finished after compiling: starts the clock only
  assert throughput.metrics() == {}
  throughput.update(11, now=120.0)  # 10 steps in 20 s
  out = throughput.metrics()
  assert out["throughput/step_seconds"] == pytest.approx(2.0)
  assert out["throughput/steps_per_second"] == pytest.approx(0.5)
  assert out["throughput/audio_seconds_per_second"] == pytest.approx(16.0 / 2.0)
  assert out["throughput/tflops_per_device"] == pytest.approx(count.per_step / 2.0 / 2 / 1e12)
  assert out["throughput/mfu"] == pytest.approx(count.per_step / 2.0 / (2 * 50e9))
  throughput.update(21, now=130.0)  # the window averages over steps: 20 steps in 30 s
  assert throughput.step_seconds == pytest.approx(1.5)
  throughput.restart()  # e.g. an eval ran: its time is not a step's
  throughput.update(31, now=1000.0)
  assert throughput.step_seconds == pytest.approx(1.5)
  assert "throughput/mfu" not in metrics.Throughput(1e9, 16000).metrics()
