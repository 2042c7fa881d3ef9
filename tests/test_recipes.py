"""Every recipe config builds its model, task and optimiser (abstract shapes only), with the reference numbers."""

import math

import jax
import pytest

from experiments.configs import finetune, pretrain
from wav2vec_jax.training import initialization, loop, optim, train_state

FINETUNE = sorted(finetune._RECIPES) + ["xlsr_tiny", "xlsr_tiny_cs"]  # pylint: disable=protected-access
PRETRAIN = ["tiny", "base", "large", "xlsr_53", "xlsr_tiny", "xlsr_tiny_natural"]


def _abstract_state(config):
  cfg = initialization.model_config(config, vocab_size=32 if config.task == "ctc" else None)
  task = loop.build_task(config, cfg)
  schedule = loop.schedule_of(config, config.total_steps)
  o = config.optim
  tx = optim.adam(schedule, o.b1, o.b2, o.eps, o.weight_decay, o.clip_norm, labels=task.parameter_labels,
                  groups=task.groups, held=task.held(task.phase(0)))
  return task, schedule, train_state.abstract_state(task.model, tx, num_samples=400)


@pytest.mark.parametrize("name", FINETUNE)
def test_finetuning_recipe_builds(name):
  config = finetune.get_config(name)
  loop.validate_config(config)
  task, schedule, state = _abstract_state(config)
  assert task.name == "ctc" and task.model.config.feature_grad_mult == 0.0
  assert config.optim.eps == 1e-8 and config.optim.weight_decay == 0.0 and config.optim.schedule == "tri_stage"
  assert tuple(config.optim.phase_ratio) == (0.1, 0.4, 0.5) and config.optim.final_lr_scale == 0.05
  assert math.isclose(float(schedule(0)), 0.01 * config.optim.peak_lr, rel_tol=1e-5)
  assert task.phase(0) == ("frozen" if config.freeze_finetune_updates else "train")
  params = jax.tree_util.tree_leaves(state.params)
  assert params and state.params["lm_head"]["kernel"].value.shape[-1] == 32


def test_finetuning_recipes_carry_the_reference_numbers():
  # fairseq examples/wav2vec/config/finetuning: (updates, lr, freeze, mask_prob, channel prob, layerdrop, batch).
  expected = {
      "base_10m": (13_000, 5e-5, 10_000, 0.65, 0.25, 0.1, 3_200_000 * 2 * 4, 4),
      "base_100h": (80_000, 3e-5, 0, 0.65, 0.5, 0.1, 3_200_000 * 2 * 4, 4),
      "base_960h": (320_000, 1e-5, 0, 0.5, 0.1, 0.1, 3_200_000 * 8, 1),
      "large_10m": (13_000, 1e-4, 10_000, 0.65, 0.25, 0.1, 1_280_000 * 4 * 5, 5),
      "large_960h": (320_000, 3e-5, 10_000, 0.5, 0.25, 0.1, 1_280_000 * 24, 1),
  }
  for name, (updates, lr, freeze, mask, channel, layerdrop, batch, accum) in expected.items():
    c = finetune.get_config(name)
    got = (c.total_steps, c.optim.peak_lr, c.freeze_finetune_updates, c.model.mask_time_prob,
           c.model.mask_channel_prob, c.model.layerdrop, c.data.input.batch_budget, c.optim.grad_accum)
    assert got == (updates, lr, freeze, mask, channel, layerdrop, batch, accum), name
    assert c.model.mask_channel_length == 64 and c.model.activation_dropout == 0.1 and c.model.hidden_dropout == 0.0
  assert finetune.get_config("large_10m").data.input.normalize and not finetune.get_config("base_10m").data.input.normalize


@pytest.mark.parametrize("name", PRETRAIN)
def test_pretraining_recipe_builds(name):
  config = pretrain.get_config(name)
  loop.validate_config(config)
  task, _, state = _abstract_state(config)
  assert task.name == "pretrain" and "quantizer" in state.params


def test_small_scale_xlsr_configs_differ_only_in_alpha():
  """experiments/xlsr.py's comparison: the same unequal mix, sampled with α = 0.5 and α = 1.0."""
  half, natural = pretrain.get_config("xlsr_tiny"), pretrain.get_config("xlsr_tiny_natural")
  assert half.data.input.multilingual_alpha == 0.5 and natural.data.input.multilingual_alpha == 1.0
  assert half.data.language_seconds == natural.data.language_seconds == pretrain.LOW_RESOURCE != ""
  half.data.input.multilingual_alpha = natural.data.input.multilingual_alpha
  half.recipe = natural.recipe
  assert half.to_dict() == natural.to_dict()
  alone = finetune.get_config("xlsr_tiny_cs")
  assert alone.data.languages == "cs" and finetune.get_config("xlsr_tiny").data.languages == ""
  # One language's model: the same but for more SpecAugment (its labelled set is 1/8 of the corpus's).
  assert (alone.model.mask_time_prob, alone.model.mask_channel_prob) == (0.2, 0.1)
  alone.model.mask_time_prob, alone.model.mask_channel_prob = 0.05, 0.0
  assert alone.model.to_dict() == finetune.get_config("xlsr_tiny").model.to_dict()
  # Both stages are the tiny recipe itself (README's XLSR tables and the main job measure the same recipe).
  assert half.model.to_dict() == pretrain.get_config("tiny").model.to_dict()
  tiny, all_languages = finetune.get_config("tiny"), finetune.get_config("xlsr_tiny")
  assert all_languages.recipe == "xlsr_tiny" and alone.recipe == "xlsr_tiny_cs"
  all_languages.recipe = tiny.recipe
  assert all_languages.to_dict() == tiny.to_dict()


def test_the_best_checkpoint_metric_orders_wer_and_cer_and_a_typo_names_the_field():
  """`config.best_metric`: what `<workdir>/best` minimises, the other metric breaking ties; the main job's test
  (test_pretrain_e2e.py) checks the saved best against the validations of a real run."""
  early, late = {"val/wer": 1.0, "val/cer": 0.72}, {"val/wer": 1.0017, "val/cer": 0.62}  # the main job's test run
  assert loop._best_key(early, "wer") < loop._best_key(late, "wer")  # pylint: disable=protected-access
  assert loop._best_key(late, "cer") < loop._best_key(early, "cer")  # pylint: disable=protected-access
  tie = loop._best_key({"val/wer": 0.4, "val/cer": 0.3}, "cer")  # pylint: disable=protected-access
  assert tie < loop._best_key({"val/wer": 0.5, "val/cer": 0.3}, "cer")  # pylint: disable=protected-access
  assert finetune.get_config("tiny").best_metric == "cer" and finetune.get_config("base_10h").best_metric == "wer"
  bad = finetune.get_config("tiny")
  bad.best_metric = "ber"
  with pytest.raises(ValueError, match="best_metric='ber'"):
    loop.validate_config(bad)


def test_unknown_recipe_and_bad_values_name_the_field():
  with pytest.raises(ValueError, match="unknown fine-tuning recipe 'base_2h'"):
    finetune.get_config("base_2h")
  config = pretrain.get_config("tiny")
  for field, value, message in (("keep_checkpoints", 0, "keep_checkpoints=0"), ("total_steps", -5, "total_steps=-5")):
    bad = config.copy_and_resolve_references()
    bad[field] = value
    with pytest.raises(ValueError, match=message):
      loop.validate_config(bad)
