"""CTC loss against torch, and the one train step: learning, freezing, gradient accumulation, skipping a NaN batch."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from wav2vec_jax import losses
from wav2vec_jax.inference import evaluation
from wav2vec_jax.models import Wav2Vec2ForCTC, Wav2Vec2ForPreTraining, get_variant
from wav2vec_jax.tasks.ctc import CTCTask
from wav2vec_jax.tasks.pretraining import PretrainingTask
from wav2vec_jax.training import optim, partitioning, train_state
from wav2vec_jax.training import step as step_lib

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


def _names(tree):
  return {"/".join(str(p.key) for p in path): v for path, v in jax.tree_util.tree_leaves_with_path(tree)}


def test_ctc_parameter_groups():
  task = CTCTask(Wav2Vec2ForCTC(get_variant("tiny")))
  params = jax.eval_shape(task.model.init, jax.random.PRNGKey(0), jnp.zeros((1, SAMPLES)))["params"]
  labels = _names(task.parameter_labels(nn.unbox(params)))
  assert {k for k, v in labels.items() if v == optim.FROZEN} == {k for k in labels
                                                                 if k.startswith("wav2vec2/feature_extractor")}
  assert {k for k, v in labels.items() if v == "head"} == {"lm_head/kernel", "lm_head/bias"}
  assert labels["wav2vec2/masked_spec_embed"] == "trunk" and labels["wav2vec2/encoder/layer_norm/scale"] == "trunk"
  assert set(labels.values()) == set(task.groups)
  assert task.held("frozen") == ("trunk",) and task.held("train") == ()
  assert [CTCTask(task.model, freeze_updates=2).phase(s) for s in range(4)] == ["frozen", "frozen", "train", "train"]


def test_blank_only_validation_warns_after_the_freeze():
  task = CTCTask(Wav2Vec2ForCTC(get_variant("tiny")), freeze_updates=100)
  blank = {"val/empty_share": 0.95, "val/wer": 1.0}
  assert not task.health_warnings(blank, 100)  # still frozen: only the head has trained
  (warning,) = task.health_warnings(blank, 250)
  assert "95% of validation hypotheses are empty" in warning and "step 250" in warning
  assert not task.health_warnings({"val/empty_share": 0.5}, 250)
  # The share the metric comes from: empty hypotheses over utterances.
  rates = evaluation._evaluation(["a", "b", "c", "d"], ["HI", "HO", "HA", "HE"], ["", " ", "HI", "HA"], [1.0] * 4)
  assert rates.metrics["empty_share"] == 0.5


def _setup(task, tx, schedule, mesh_shape=(1, 1, 1), phase="train", grad_accum=1):
  mesh = partitioning.make_mesh(*mesh_shape, devices=jax.devices()[:int(np.prod(mesh_shape))])
  rules = partitioning.logical_axis_rules("fsdp")
  state = train_state.create_train_state(task.model, tx, jax.random.PRNGKey(0), mesh, rules)
  step = jax.jit(functools.partial(step_lib.train_step, task=task, tx=tx, schedule=schedule, phase=phase,
                                   grad_accum=grad_accum))
  return state, step, mesh, rules


def _ctc_task(freeze_updates=0, **overrides):
  fields = dict(feature_grad_mult=0.0, vocab_size=VOCAB)
  fields.update(overrides)
  return CTCTask(Wav2Vec2ForCTC(get_variant("tiny", **fields)), freeze_updates=freeze_updates)


def _tx(task, schedule, phase="train", weight_decay=0.0):
  return optim.adam(schedule, eps=1e-8, weight_decay=weight_decay, labels=task.parameter_labels, groups=task.groups,
                    held=task.held(phase))


def _batch(seed=0, rows=2):
  rng = np.random.RandomState(seed)
  labels = rng.randint(1, VOCAB, size=(rows, 10)).astype(np.int32)
  lengths = rng.randint(3, 11, size=rows).astype(np.int32)
  labels *= np.arange(10)[None, :] < lengths[:, None]
  return {"waveform": rng.randn(rows, SAMPLES).astype(np.float32), "attention_mask": np.ones((rows, SAMPLES), np.int32),
          "labels": labels, "label_lengths": lengths}


def _changed(before, after):
  differs = jax.tree_util.tree_map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), before, after)
  return {name for name, value in _names(differs).items() if value}


@pytest.fixture(scope="module")
def trainable():
  task = _ctc_task()
  schedule = optax.constant_schedule(1e-3)
  return _setup(task, _tx(task, schedule, weight_decay=0.01), schedule)  # decay moves anything labelled trained


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


def _adam_moments(opt_state, group):
  """The (mu, nu) trees of one optimiser group, as {name: array}."""
  for leaf in jax.tree_util.tree_leaves(opt_state, is_leaf=lambda x: isinstance(x, optax.MultiTransformState)):
    if isinstance(leaf, optax.MultiTransformState):
      adam_state = leaf.inner_states[group].inner_state[0]
      return _names(adam_state.mu), _names(adam_state.nu), int(adam_state.count)
  raise AssertionError("no MultiTransformState")


def test_freezing_holds_the_trunk_then_trains_it_with_its_own_bias_correction():
  freeze, lr, weight_decay = 3, 1e-3, 0.01
  task = _ctc_task(freeze_updates=freeze)
  schedule = optax.constant_schedule(lr)
  state, frozen_step, mesh, rules = _setup(task, _tx(task, schedule, "frozen", weight_decay), schedule,
                                           phase="frozen")
  _, train_step, _, _ = _setup(task, _tx(task, schedule, "train", weight_decay), schedule, phase="train")
  initial = jax.tree_util.tree_map(np.asarray, state)
  with partitioning.activate(mesh, rules):
    for i in range(freeze):
      assert task.phase(i) == "frozen"
      state, metrics = frozen_step(state, _batch(i), jax.random.PRNGKey(1))
      assert float(metrics["skipped"]) == 0.0
  # The trunk and its Adam moments are bit-identical to their start (weight decay > 0 would move a trunk the
  # optimiser did not hold); the head moved.
  changed = _changed(initial.params, state.params)
  assert changed == {"lm_head/kernel", "lm_head/bias"}, changed
  mu, nu, count = _adam_moments(state.opt_state, "trunk")
  mu0, nu0, count0 = _adam_moments(initial.opt_state, "trunk")
  assert count == count0 == 0 and all(not np.any(v) for v in list(mu.values()) + list(nu.values()))
  assert _adam_moments(state.opt_state, "head")[2] == freeze

  before = jax.tree_util.tree_map(np.asarray, state.params)
  with partitioning.activate(mesh, rules):
    assert task.phase(freeze) == "train"
    state, _ = train_step(state, _batch(freeze), jax.random.PRNGKey(1))
  changed = _changed(before, state.params)
  assert any(n.startswith("wav2vec2/encoder") for n in changed)
  assert not any(n.startswith("wav2vec2/feature_extractor") for n in changed)  # never, not even weight decay
  # A first Adam step: m_hat / sqrt(v_hat) = g / |g|, so |update + lr * wd * p| = lr where the gradient is not
  # tiny. Bias correction counted from the run's update (4) instead of the trunk's own (1) would give ~0.57 lr.
  after = _names(jax.tree_util.tree_map(np.asarray, state.params))
  old = _names(before)
  kernel = "wav2vec2/encoder/layers_0/feed_forward/intermediate_dense/kernel"
  adam_part = np.abs((after[kernel] - old[kernel]) + lr * weight_decay * old[kernel])
  np.testing.assert_allclose(np.median(adam_part), lr, rtol=1e-3)
  assert _adam_moments(state.opt_state, "trunk")[2] == 1


def _sgd_update_direction(task, batch, grad_accum, mesh_shape=(1, 1, 1)):
  """(params before, params after) of one step with SGD at lr 1: the difference is the applied gradient."""
  schedule = optax.constant_schedule(1.0)
  tx = optim.adam(schedule, labels=task.parameter_labels, groups=task.groups)  # for the state's structure
  sgd = optax.multi_transform({"trained": optax.sgd(1.0), "trunk": optax.sgd(1.0), "head": optax.sgd(1.0),
                               optim.FROZEN: optax.set_to_zero()}, task.parameter_labels)
  del tx
  state, step, mesh, rules = _setup(task, sgd, schedule, mesh_shape, grad_accum=grad_accum)
  before = jax.tree_util.tree_map(np.asarray, state.params)
  with partitioning.activate(mesh, rules):
    state, metrics = step(state, batch, jax.random.PRNGKey(3))
  assert float(metrics["skipped"]) == 0.0
  return before, jax.tree_util.tree_map(np.asarray, state.params), metrics


def test_ctc_accumulation_equals_one_batch_four_times_the_size():
  # Deterministic (no dropout, no masks), so four microbatches see what one big batch sees.
  task = _ctc_task(mask_time_prob=0.0, mask_channel_prob=0.0, hidden_dropout=0.0, attention_dropout=0.0,
                   dropout_input=0.0, final_dropout=0.0, layerdrop=0.0)
  batch = _batch(5, rows=8)
  before, one, m1 = _sgd_update_direction(task, batch, grad_accum=1)
  _, four, m4 = _sgd_update_direction(task, batch, grad_accum=4)
  np.testing.assert_allclose(float(m4["loss/ctc"]), float(m1["loss/ctc"]), rtol=1e-5)
  assert float(m4["num_sentences"]) == 8.0
  # Updates agree to 1e-5 of each tensor's largest update (float32 sums in another order), plus the float32
  # rounding of the parameters themselves.
  for name, b in _names(before).items():
    d1, d4 = b - _names(one)[name], b - _names(four)[name]
    np.testing.assert_allclose(d4, d1, rtol=1e-5, atol=1e-5 * np.max(np.abs(d1)) + 2e-7 * np.max(np.abs(b)) + 1e-9,
                               err_msg=name)


def test_pretraining_accumulation_sums_every_microbatch_under_its_key():
  # Random masks and negatives differ per microbatch: compare with the summed per-microbatch gradients computed
  # here under the keys the step uses (split of fold_in(rng, step)), divided by the total masked count.
  task = PretrainingTask(Wav2Vec2ForPreTraining(get_variant("tiny", layerdrop=0.0)))
  rng = np.random.RandomState(0)
  batch = {"waveform": rng.randn(8, 8000).astype(np.float32), "attention_mask": np.ones((8, 8000), np.int32)}
  before, after, metrics = _sgd_update_direction(task, batch, grad_accum=4, mesh_shape=(2, 2, 1))
  keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(3), 0), 4)
  grad_fn = jax.jit(jax.grad(task.loss, has_aux=True))
  total, masked = None, 0.0
  for i in range(4):
    micro = {k: v[2 * i:2 * i + 2] for k, v in batch.items()}
    grads, aux = grad_fn(before, micro, keys[i], jnp.zeros((), jnp.int32))
    masked += float(aux["sample_size"])
    total = grads if total is None else jax.tree_util.tree_map(jnp.add, total, grads)
  assert float(metrics["num_masked"]) == masked
  expected = _names(jax.tree_util.tree_map(lambda g: np.asarray(g) / masked, total))
  scale = max(np.max(np.abs(g)) for g in expected.values())
  for name, b in _names(before).items():  # the update is -gradient; atol covers float32 rounding of params
    np.testing.assert_allclose(b - _names(after)[name], expected[name], rtol=1e-3,
                               atol=1e-5 * scale + 1e-6 * np.max(np.abs(b)), err_msg=name)


def test_schedules_count_applied_updates_from_the_first_update_on():
  # fairseq sets the Gumbel temperature and the learning rate from num_updates, which a skipped update does not
  # advance: after 5 batches of which 2 were skipped, the step runs update 3 (update 0: tau = 2 exactly).
  task = PretrainingTask(Wav2Vec2ForPreTraining(get_variant("tiny", layerdrop=0.0)))
  schedule = optim.warmup_linear_decay(1e-3, 10, 100)
  state, step, mesh, rules = _setup(task, optim.adam(schedule), schedule)
  batch = {"waveform": np.random.RandomState(0).randn(2, 8000).astype(np.float32),
           "attention_mask": np.ones((2, 8000), np.int32)}
  with partitioning.activate(mesh, rules):
    _, first = step(state, batch, jax.random.PRNGKey(1))
    later = state.replace(step=jnp.asarray(5, jnp.int32), bad_steps=jnp.asarray(2, jnp.int32))
    _, metrics = step(later, batch, jax.random.PRNGKey(1))
  assert float(first["gumbel_temperature"]) == 2.0 and float(first["learning_rate"]) == float(schedule(0))
  np.testing.assert_allclose(float(metrics["gumbel_temperature"]),
                             float(optim.gumbel_temperature(3, *task.model.config.gumbel_temperature)), rtol=1e-7)
  np.testing.assert_allclose(float(metrics["learning_rate"]), float(schedule(3)), rtol=1e-7)


def _numpy_adamw(params, grads, lr, b1, b2, eps, weight_decay, clip_norm, frozen):
  """One update of AdamW (fairseq's Adam, decoupled weight decay) from zero moments, in float64 numpy.

  Args:
    params, grads: {name: array}; grads already divided by the sample size.
    frozen: predicate on a name: that parameter neither trains nor decays.
  Returns:
    {name: updated float64 array}.
  """
  trained = {k: np.asarray(g, np.float64) for k, g in grads.items() if not frozen(k)}
  norm = np.sqrt(sum(np.sum(g ** 2) for g in trained.values()))
  clip = min(1.0, clip_norm / norm) if clip_norm > 0 else 1.0
  out = {}
  for name, p in params.items():
    p = np.asarray(p, np.float64)
    if frozen(name):
      out[name] = p
      continue
    g = trained[name] * clip
    m_hat = (1 - b1) * g / (1 - b1)
    v_hat = (1 - b2) * g ** 2 / (1 - b2)
    out[name] = p - lr * (m_hat / (np.sqrt(v_hat) + eps) + weight_decay * p)
  return out


_DETERMINISTIC = dict(mask_time_prob=0.0, mask_channel_prob=0.0, hidden_dropout=0.0, attention_dropout=0.0,
                     dropout_input=0.0, final_dropout=0.0, layerdrop=0.0)


@functools.partial(jax.jit, static_argnames="task")
@functools.partial(jax.value_and_grad, has_aux=True)
def _loss_and_grad(params, batch, task):
  """(loss_sum, aux), grads of `task.loss` (deterministic tasks: the key is unused)."""
  return task.loss(params, batch, jax.random.PRNGKey(9), 0)


def _clipped_deterministic_start(schedule, dtype="float32"):
  """A deterministic CTC task, its float32 train state (shared by the tests below, so its initialisation compiles
  once), a 3-row batch whose middle row has no labels (sample size 2), and its float32 loss and gradient."""
  task32 = _ctc_task(**_DETERMINISTIC)
  placeholder = optim.adam(schedule, clip_norm=1.0, labels=task32.parameter_labels, groups=task32.groups)
  state, _, mesh, rules = _setup(task32, placeholder, schedule)  # optimiser states of this structure
  batch = _batch(7, rows=3)
  batch["label_lengths"][1] = 0
  batch["labels"][1] = 0
  (loss_sum, aux), grads = _loss_and_grad(state.params, {k: jnp.asarray(v) for k, v in batch.items()}, task32)
  assert float(aux["sample_size"]) == 2.0
  task = task32 if dtype == "float32" else _ctc_task(dtype=dtype, **_DETERMINISTIC)
  return task, state, mesh, rules, batch, float(loss_sum) / 2.0, grads


def test_one_update_equals_numpy_adamw_on_the_clipped_per_sentence_gradient():
  # Deterministic forward; 3 rows of which one has no labels, so the sample size (2 sentences) is not the batch
  # size. A first Adam step is g / (|g| + eps): with eps of the order of the gradients the update depends on the
  # gradient's scale, not only its sign. clip_norm sits between the norms of grad / 3 and grad / 2, so dividing by
  # the rows instead of the sentences, or not clipping, changes the update.
  lr, b1, b2, weight_decay = 1e-2, 0.9, 0.98, 0.1
  schedule = optax.constant_schedule(lr)
  task, state, mesh, rules, batch, _, grads = _clipped_deterministic_start(schedule)
  before = _names(jax.tree_util.tree_map(np.asarray, state.params))
  grads = {k: np.asarray(g, np.float64) / 2.0 for k, g in _names(grads).items()}  # / sample size
  frozen = lambda name: name.startswith("wav2vec2/feature_extractor")  # noqa: E731
  norm = np.sqrt(sum(np.sum(g ** 2) for k, g in grads.items() if not frozen(k)))
  clip_norm = 0.8 * norm
  eps = float(np.median(np.abs(np.concatenate([g.ravel() for k, g in grads.items() if not frozen(k)])))) * 0.8

  tx = optim.adam(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, clip_norm=clip_norm,
                  labels=task.parameter_labels, groups=task.groups)
  step = jax.jit(functools.partial(step_lib.train_step, task=task, tx=tx, schedule=schedule))
  with partitioning.activate(mesh, rules):
    state, metrics = step(state, batch, jax.random.PRNGKey(1))
  after = _names(jax.tree_util.tree_map(np.asarray, state.params))
  assert float(metrics["skipped"]) == 0.0
  np.testing.assert_allclose(float(metrics["grad_norm"]), norm, rtol=1e-4)  # logged: scaled, before clipping

  def check(expected):
    for name, p in after.items():
      # float32 gradients summed in another order: 1e-5 of the tensor's scale, not of each (near-zero) element
      np.testing.assert_allclose(p, expected[name], rtol=1e-5, atol=1e-5 * np.max(np.abs(expected[name])),
                                 err_msg=name)

  check(_numpy_adamw(before, grads, lr, b1, b2, eps, weight_decay, clip_norm, frozen))
  # The comparison is sharp: no clipping, no weight decay, or the loss over rows instead of sentences fails it.
  for wrong in (_numpy_adamw(before, grads, lr, b1, b2, eps, weight_decay, 0.0, frozen),
                _numpy_adamw(before, grads, lr, b1, b2, eps, 0.0, clip_norm, frozen),
                _numpy_adamw(before, {k: g * 2 / 3 for k, g in grads.items()}, lr, b1, b2, eps, weight_decay,
                             clip_norm, frozen)):
    with pytest.raises(AssertionError):
      check(wrong)


def test_bfloat16_step_stays_close_to_float32_and_keeps_float32_params():
  schedule = optax.constant_schedule(1e-3)
  task, state, mesh, rules, batch, loss32, _ = _clipped_deterministic_start(schedule, "bfloat16")
  assert task.model.config.dtype == "bfloat16"
  tx = optim.adam(schedule, clip_norm=1.0, labels=task.parameter_labels, groups=task.groups)
  step = jax.jit(functools.partial(step_lib.train_step, task=task, tx=tx, schedule=schedule))
  before = jax.tree_util.tree_map(np.asarray, state.params)
  with partitioning.activate(mesh, rules):
    state, metrics = step(state, batch, jax.random.PRNGKey(1))
  loss16 = float(metrics["loss/ctc"])  # the float32 step's loss is loss32: the same parameters before the update
  assert np.isfinite(loss16) and float(metrics["skipped"]) == 0.0 and np.isfinite(float(metrics["grad_norm"]))
  assert abs(loss16 - loss32) <= 0.03 * loss32, (loss16, loss32)
  assert loss16 != loss32  # the step did compute in bfloat16
  leaves = jax.tree_util.tree_leaves((state.params, state.opt_state))
  assert {x.dtype for x in leaves if jnp.issubdtype(x.dtype, jnp.floating)} == {jnp.dtype(jnp.float32)}
  changed = _changed(before, state.params)
  assert "lm_head/kernel" in changed and any(n.startswith("wav2vec2/encoder") for n in changed)
