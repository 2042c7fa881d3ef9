"""Schedules of the reference recipes: warm-up + linear decay, tri-stage, Gumbel temperature."""

import math

import numpy as np

from wav2vec_jax.training import optim


def test_warmup_linear_decay_matches_fairseq_polynomial_decay():
  schedule = optim.warmup_linear_decay(5e-4, 32_000, 400_000)
  assert math.isclose(float(schedule(0)), 5e-4 / 32_000, rel_tol=1e-5)  # the first update already moves
  assert math.isclose(float(schedule(31_999)), 5e-4, rel_tol=1e-6)  # peak at the end of warm-up
  assert math.isclose(float(schedule(215_999)), 2.5e-4, rel_tol=1e-4)  # half-way through the decay
  assert float(schedule(399_999)) == 0.0 and float(schedule(500_000)) == 0.0


def test_tri_stage():
  lr, total = 3e-5, 20_000
  schedule = optim.tri_stage(lr, total)
  np.testing.assert_allclose(float(schedule(0)), 0.01 * lr, rtol=1e-5)  # warm-up from 0.01 lr ...
  np.testing.assert_allclose(float(schedule(1_000)), 0.505 * lr, rtol=1e-5)  # ... linear (half-way: 0.505 lr) ...
  np.testing.assert_allclose(float(schedule(2_000)), lr, rtol=1e-5)  # ... over 10%
  np.testing.assert_allclose(float(schedule(5_000)), lr, rtol=1e-5)  # hold for 40%
  np.testing.assert_allclose(float(schedule(10_000)), lr, rtol=1e-5)
  np.testing.assert_allclose(float(schedule(15_000)), lr * 0.05**0.5, rtol=1e-4)  # exponential decay ...
  np.testing.assert_allclose(float(schedule(20_000)), 0.05 * lr, rtol=1e-4)  # ... to 0.05 lr
  np.testing.assert_allclose(float(schedule(30_000)), 0.05 * lr, rtol=1e-4)


def test_gumbel_temperature_follows_the_schedule_exactly():
  for step in (0, 1, 1000, 100_000, 300_000, 2_000_000):
    expected = max(2.0 * 0.999995**step, 0.5)
    np.testing.assert_allclose(float(optim.gumbel_temperature(step, 2.0, 0.5, 0.999995)), expected, rtol=1e-5)
