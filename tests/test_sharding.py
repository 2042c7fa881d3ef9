"""The sharded train step: same numbers on every mesh, parameter shardings from the rules table."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from wav2vec_jax.tasks.pretraining import PretrainingTask
from wav2vec_jax.training import optim, partitioning, train_state
from wav2vec_jax.training import step as step_lib
from wav2vec_jax.models import Wav2Vec2ForPreTraining, get_variant

MESHES = [((1, 1, 1), "fsdp"), ((8, 1, 1), "data"), ((2, 4, 1), "fsdp"), ((2, 2, 2), "fsdp_tensor")]


def _run(mesh_shape, rules_name, steps=2):
  model = Wav2Vec2ForPreTraining(get_variant("tiny"))
  schedule = optim.warmup_linear_decay(1e-3, 2, 10)
  tx = optim.adam(schedule)
  mesh = partitioning.make_mesh(*mesh_shape, devices=jax.devices()[:int(np.prod(mesh_shape))])
  rules = partitioning.logical_axis_rules(rules_name)
  state = train_state.create_train_state(model, tx, jax.random.PRNGKey(0), mesh, rules)
  shardings = train_state.state_shardings(model, tx, mesh, rules)
  batch_sharding = partitioning.batch_sharding(mesh, rules)
  step = jax.jit(functools.partial(step_lib.train_step, task=PretrainingTask(model), tx=tx, schedule=schedule),
                 in_shardings=(shardings, {"waveform": batch_sharding, "attention_mask": batch_sharding}, None),
                 out_shardings=(shardings, None), donate_argnums=0)
  rng = np.random.RandomState(0)
  host = {"waveform": rng.randn(8, 8000).astype(np.float32), "attention_mask": np.ones((8, 8000), np.int32)}
  with partitioning.activate(mesh, rules):
    batch = jax.device_put(host, {"waveform": batch_sharding, "attention_mask": batch_sharding})
    compiled = step.lower(state, batch, jax.random.PRNGKey(1)).compile()
    losses = []
    for _ in range(steps):
      state, metrics = compiled(state, batch, jax.random.PRNGKey(1))
      losses.append(float(metrics["loss/bits"]))
  return losses, compiled, state


@pytest.fixture(scope="module", name="reference")
def _reference():
  return _run(*MESHES[0])[0]


@pytest.mark.parametrize("mesh_shape,rules_name", MESHES[1:])
def test_same_loss_on_every_mesh(reference, mesh_shape, rules_name):
  losses, compiled, state = _run(mesh_shape, rules_name)
  np.testing.assert_allclose(losses, reference, rtol=1e-5)
  # The compiled program's parameter shardings follow the rules table (Flax skips logical constraints silently
  # without a mesh in context, so look at what XLA actually received).
  params_in = compiled.input_shardings[0][0].params
  q_kernel = params_in["wav2vec2"]["encoder"]["layers_0"]["attention"]["q_proj_kernel"]
  ffn_kernel = params_in["wav2vec2"]["feature_extractor"]["conv_layers_1"]["conv"]["kernel"]
  expected_q = {"data": P(None, None, None), "fsdp": P("fsdp", None, None),
                "fsdp_tensor": P("fsdp", "tensor", None)}[rules_name]
  assert q_kernel.spec == expected_q
  assert ffn_kernel.spec == (P(None, None, "fsdp") if rules_name != "data" else P(None, None, None))
  placed = state.params["wav2vec2"]["encoder"]["layers_0"]["attention"]["q_proj_kernel"].sharding
  assert placed.spec == expected_q and placed.mesh.shape == dict(zip(partitioning.MESH_AXES, mesh_shape))


def test_activation_constraints_are_in_the_program_only_under_the_mesh():
  """Flax drops logical constraints silently without a mesh in context; `partitioning.activate` must supply it."""
  model = Wav2Vec2ForPreTraining(get_variant("tiny"))
  waveform = jnp.zeros((8, 8000))
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), waveform[:1])
  forward = jax.jit(lambda v, x: model.apply(v, x).last_hidden_state)
  mesh = partitioning.make_mesh(2, 2, 2)
  rules = partitioning.logical_axis_rules("fsdp_tensor")
  assert "sharding_constraint" not in forward.lower(params, waveform).as_text()
  with partitioning.activate(mesh, rules):
    text = forward.lower(params, waveform).as_text()
  constraints = [line for line in text.splitlines() if "sdy.sharding_constraint" in line]
  assert any('[{"data", "fsdp"}, {}, {}]' in line for line in constraints)  # [batch, frames, embed] activations
  assert any('{"tensor"}' in line for line in constraints)  # heads / mlp split over the tensor axis


def test_unknown_override_and_bad_mesh_are_clear():
  with pytest.raises(ValueError, match="unknown logical axis"):
    partitioning.logical_axis_rules("fsdp", overrides=[("embedding", "fsdp")])
  with pytest.raises(ValueError, match="needs 12 devices"):
    partitioning.make_mesh(3, 4, 1)
