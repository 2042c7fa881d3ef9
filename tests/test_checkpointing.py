"""Orbax checkpoints of the train state: restore onto another mesh."""

import jax
import numpy as np
import pytest

from wav2vec_jax.training import checkpointing, optim, partitioning, train_state
from wav2vec_jax.models import Wav2Vec2ForPreTraining, get_variant


def _setup(mesh_shape, rules_name="fsdp"):
  model = Wav2Vec2ForPreTraining(get_variant("tiny"))
  tx = optim.adam(optim.warmup_linear_decay(1e-3, 2, 10))
  mesh = partitioning.make_mesh(*mesh_shape, devices=jax.devices()[:int(np.prod(mesh_shape))])
  rules = partitioning.logical_axis_rules(rules_name)
  return model, tx, mesh, rules


@pytest.mark.parametrize("restore_mesh", [(1, 1, 1), (1, 4, 1), (2, 1, 2)])
def test_saved_on_8_devices_restores_on_other_meshes(tmp_path, restore_mesh):
  model, tx, mesh, rules = _setup((2, 4, 1))
  state = train_state.create_train_state(model, tx, jax.random.PRNGKey(0), mesh, rules)
  saver = checkpointing.Checkpointer(str(tmp_path), save_every=1, keep=2)
  saver.save(1, state, {"epoch": 0, "step": 2}, force=True)  # an older step kept too: restore(3) must not take it
  saver.save(3, state, {"epoch": 1, "step": 7}, force=True)
  saver.close()
  expected = jax.tree_util.tree_map(np.asarray, state)

  model, tx, mesh, rules = _setup(restore_mesh, "fsdp_tensor")
  loader = checkpointing.Checkpointer(str(tmp_path), save_every=1, keep=2)
  assert loader.latest_step() == 3
  restored, data_state = loader.restore(3, train_state.sharded_abstract_state(model, tx, mesh, rules))
  loader.close()
  assert data_state == {"epoch": 1, "step": 7}
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.tree_util.tree_map(np.asarray, restored), expected)
  kernel = restored.params["wav2vec2"]["encoder"]["layers_0"]["attention"]["q_proj_kernel"]
  assert kernel.sharding.mesh.shape == dict(zip(partitioning.MESH_AXES, restore_mesh))
  assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
