"""CTC loss against torch, and the CTC fine-tuning step: learning, freezing, skipping a NaN batch."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from wav2vec_jax import finetune_step, losses
from wav2vec_jax.training import optim, partitioning, train_state
from wav2vec_jax.models import Wav2Vec2ForCTC, get_variant

VOCAB = 8
SAMPLES = 16000  # 49 frames


def _ctc_inputs(seed=0):
  """Random logits with padded frames, labels with an empty row and a row that cannot be aligned."""
  rng = np.random.RandomState(seed)
  batch, frames, max_labels = 5, 30, 12
  logits = (rng.randn(batch, frames, VOCAB) * 2).astype(np.float32)
  frame_lengths = np.array([30, 25, 12, 6, 20])
  label_lengths = np.array([12, 7, 10, 4, 0], np.int32)
  labels = rng.randint(1, VOCAB, size=(batch, max_labels)).astype(np.int32)
  labels[2, :10] = 3  # ten equal labels need 19 frames; the row has 12: infinite loss, zeroed
  labels *= np.arange(max_labels)[None, :] < label_lengths[:, None]
  frame_mask = np.arange(frames)[None, :] < frame_lengths[:, None]
  return logits, frame_mask, labels, label_lengths, frame_lengths


def test_ctc_loss_matches_torch():
  torch = pytest.importorskip("torch")
  logits, frame_mask, labels, label_lengths, frame_lengths = _ctc_inputs()

  def ours_fn(x):
    return losses.ctc_loss(x, jnp.asarray(frame_mask), jnp.asarray(labels), jnp.asarray(label_lengths))

  (loss_sum, per_sentence), vjp = jax.vjp(ours_fn, jnp.asarray(logits))
  (ours_grad,) = vjp((jnp.ones(()), jnp.zeros(len(logits))))

  theirs_logits = torch.tensor(logits, requires_grad=True)
  log_probs = torch.log_softmax(theirs_logits, -1).transpose(0, 1)
  args = (log_probs, torch.tensor(labels).long(), torch.tensor(frame_lengths), torch.tensor(label_lengths))
  theirs = torch.nn.functional.ctc_loss(*args, blank=0, reduction="none", zero_infinity=True)
  theirs.sum().backward()
  theirs_mean = torch.nn.functional.ctc_loss(*args, blank=0, reduction="mean", zero_infinity=True)

  assert float(per_sentence[2]) == 0.0 and float(theirs.detach()[2]) == 0.0
  np.testing.assert_allclose(np.asarray(per_sentence), theirs.detach().numpy(), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(float(loss_sum), float(theirs.detach().sum()), rtol=1e-4)
  # transformers' "mean": each sentence over its target length (at least 1), then the batch mean.
  ours_mean = np.mean(np.asarray(per_sentence) / np.maximum(label_lengths, 1))
  np.testing.assert_allclose(ours_mean, float(theirs_mean), rtol=1e-4)
  theirs_grad = theirs_logits.grad.numpy() * frame_mask[..., None]  # torch leaves padded frames' grads undefined
  np.testing.assert_allclose(np.asarray(ours_grad) * frame_mask[..., None], theirs_grad, atol=1e-4)
  assert not np.any(np.asarray(ours_grad)[2])  # zero infinity: no gradient from the zeroed sentence


def test_trainable_mask():
  model = Wav2Vec2ForCTC(get_variant("tiny"))
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, SAMPLES)))["params"]  # boxed
  for freeze in (False, True):
    mask = finetune_step.trainable_mask(nn.unbox(params), freeze)
    flat = {"/".join(str(p.key) for p in path): value for path, value in jax.tree_util.tree_leaves_with_path(mask)}
    frozen = ("wav2vec2",) if freeze else ("wav2vec2/feature_extractor",)
    assert {k for k, v in flat.items() if not v} == {k for k in flat if k.startswith(frozen)}
    assert "wav2vec2/masked_spec_embed" in flat and "lm_head/kernel" in flat and flat["lm_head/kernel"]
  # Works on boxed trees too (optax calls the mask on the boxed params inside create_train_state).
  boxed = finetune_step.trainable_mask(params, True)
  assert sum(jax.tree_util.tree_leaves(boxed)) == 2


def _setup(freeze_encoder: bool, lr: float = 1e-3):
  cfg = get_variant("tiny", feature_grad_mult=0.0, vocab_size=VOCAB)
  model = Wav2Vec2ForCTC(cfg)
  schedule = optax.constant_schedule(lr)
  tx = optim.adam(schedule, eps=1e-8, weight_decay=0.0,
                  trainable_mask=lambda p: finetune_step.trainable_mask(p, freeze_encoder))
  mesh = partitioning.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  rules = partitioning.logical_axis_rules("data")
  state = train_state.create_train_state(model, tx, jax.random.PRNGKey(0), mesh, rules)
  step = jax.jit(functools.partial(finetune_step.train_step, model=model, tx=tx, schedule=schedule,
                                   options=finetune_step.StepOptions(freeze_encoder=freeze_encoder)))
  return state, step, mesh, rules


def _batch(seed=0):
  rng = np.random.RandomState(seed)
  labels = rng.randint(1, VOCAB, size=(2, 10)).astype(np.int32)
  lengths = np.array([10, 6], np.int32)
  labels *= np.arange(10)[None, :] < lengths[:, None]
  return {"waveform": rng.randn(2, SAMPLES).astype(np.float32), "attention_mask": np.ones((2, SAMPLES), np.int32),
          "labels": labels, "label_lengths": lengths}


def _changed(before, after):
  leaves = jax.tree_util.tree_leaves_with_path(
      jax.tree_util.tree_map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), before, after))
  return {"/".join(str(p.key) for p in path) for path, value in leaves if value}


@pytest.fixture(scope="module")
def trainable():
  return _setup(freeze_encoder=False)


def test_step_lowers_loss_and_never_trains_the_conv_encoder(trainable):
  state, step, mesh, rules = trainable
  before = jax.tree_util.tree_map(np.asarray, state.params)
  batch = _batch()
  losses_seen = []
  with partitioning.activate(mesh, rules):
    for _ in range(10):
      state, metrics = step(state, batch, jax.random.PRNGKey(1))
      losses_seen.append(float(metrics["loss/ctc"]))
  assert set(metrics) >= {"loss/ctc", "loss/ctc_per_token", "learning_rate", "grad_norm", "skipped", "bad_steps"}
  assert all(v.dtype == jnp.float32 and v.shape == () for v in metrics.values())
  assert np.all(np.isfinite(losses_seen)) and int(state.bad_steps) == 0 and int(state.step) == 10
  assert np.mean(losses_seen[-3:]) < 0.9 * losses_seen[0], losses_seen
  changed = _changed(before, state.params)
  assert not any(name.startswith("wav2vec2/feature_extractor") for name in changed)
  assert any(name.startswith("wav2vec2/encoder") for name in changed) and "lm_head/kernel" in changed


def test_nan_batch_is_skipped_and_counted(trainable):
  state, step, mesh, rules = trainable
  before = jax.tree_util.tree_map(np.asarray, state)
  bad = _batch()
  bad["waveform"][0, 123] = np.nan
  with partitioning.activate(mesh, rules):
    state, metrics = step(state, bad, jax.random.PRNGKey(1))
    assert float(metrics["skipped"]) == 1.0 and float(metrics["bad_steps"]) == 1.0
    assert int(state.bad_steps) == 1 and int(state.consecutive_bad_steps) == 1 and int(state.step) == 1
    jax.tree_util.tree_map(np.testing.assert_array_equal, before.params, state.params)
    jax.tree_util.tree_map(np.testing.assert_array_equal, before.opt_state, state.opt_state)
    state, metrics = step(state, _batch(), jax.random.PRNGKey(1))
  assert float(metrics["skipped"]) == 0.0
  assert int(state.bad_steps) == 1 and int(state.consecutive_bad_steps) == 0


def test_frozen_encoder_trains_only_the_head():
  state, step, mesh, rules = _setup(freeze_encoder=True)
  before = jax.tree_util.tree_map(np.asarray, state.params)
  with partitioning.activate(mesh, rules):
    for _ in range(2):
      state, metrics = step(state, _batch(), jax.random.PRNGKey(1))
  assert float(metrics["skipped"]) == 0.0
  assert _changed(before, state.params) == {"lm_head/bias", "lm_head/kernel"}
