"""Numerical parity with transformers' PyTorch wav2vec 2.0 on the same weights (eval mode; training mode with dropout
off and a given time mask), and checkpoint layouts (sharded, headless, exported) that round-trip through it."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import wav2vec_jax
from wav2vec_jax import losses
from wav2vec_jax.models import masking
from wav2vec_jax.interop.convert import export_hf
import hf_reference as ref

torch = ref.torch
TOL = 1e-4


def _max_diff(ours, theirs):
  return float(np.max(np.abs(np.asarray(ours, np.float32) - theirs.detach().numpy())))


@pytest.mark.parametrize("style", ["base", "large"])
@pytest.mark.parametrize("architecture", ["Wav2Vec2ForCTC", "Wav2Vec2ForPreTraining"])
@pytest.mark.parametrize("padded", [False, True])
def test_forward_parity(tmp_path, style, architecture, padded):
  reference = ref.save_reference(tmp_path, style, architecture)
  model, variables = wav2vec_jax.load_pretrained(str(tmp_path))
  assert type(model).__name__ == architecture
  waveform, mask = ref.padded_batch() if padded else ref.padded_batch(lengths=(8000, 8000, 8000))
  torch_mask = torch.tensor(mask) if padded else None
  with torch.no_grad():
    theirs = reference.wav2vec2(torch.tensor(waveform), attention_mask=torch_mask)
    their_logits = reference(torch.tensor(waveform), attention_mask=torch_mask).logits if "CTC" in architecture else None
  ours = model.apply(variables, jnp.asarray(waveform), jnp.asarray(mask) if padded else None)
  assert _max_diff(ours.last_hidden_state, theirs.last_hidden_state) <= TOL
  assert _max_diff(ours.extract_features, theirs.extract_features) <= TOL
  if their_logits is not None:
    assert ours.logits.shape == tuple(their_logits.shape)
    assert _max_diff(ours.logits, their_logits) <= TOL


@pytest.mark.parametrize("style", ["base", "large"])
def test_pretraining_loss_parity(tmp_path, style):
  """Same mask and negatives, dropout off, quantizer in eval mode: contrastive and diversity terms match."""
  reference = ref.save_reference(tmp_path, style, "Wav2Vec2ForPreTraining")
  model, variables = wav2vec_jax.load_pretrained(str(tmp_path))
  cfg = model.config
  waveform, mask = ref.padded_batch(samples=16000, lengths=(16000, 12000, 16000))
  frames = masking.conv_output_lengths(16000, cfg.conv_kernel, cfg.conv_stride)
  frame_mask = masking.frame_mask_from_attention_mask(jnp.asarray(mask), frames, cfg.conv_kernel, cfg.conv_stride)
  key_mask, key_neg = jax.random.split(jax.random.PRNGKey(3))
  masked = masking.compute_time_mask(key_mask, frame_mask, cfg.mask_time_prob, cfg.mask_time_length,
                                     cfg.mask_time_min_masks)
  negatives = masking.sample_negatives(key_neg, masked.count, masked.valid, cfg.num_negatives)
  outputs = model.apply(variables, jnp.asarray(waveform), jnp.asarray(mask), masked, method="pretrain")
  loss, metrics = losses.pretraining_loss(cfg, outputs, negatives)

  # The same negatives as transformers' flat indices into batch * frames.
  positions, negatives_np = np.asarray(masked.positions), np.asarray(negatives)
  count = int(masked.count)
  hf_negatives = np.zeros((3, frames, cfg.num_negatives), np.int64)
  for b in range(3):
    for j in range(count):
      hf_negatives[b, positions[b, j]] = b * frames + positions[b, negatives_np[b, j]]
  hf_mask = torch.tensor(np.asarray(masked.mask))
  with torch.no_grad():
    theirs = reference(torch.tensor(waveform), attention_mask=torch.tensor(mask), mask_time_indices=hf_mask,
                       sampled_negative_indices=torch.tensor(hf_negatives))
    # In eval mode transformers' diversity term uses the hard code perplexity; the training term (fairseq's
    # prob_perplexity) comes from the softmax of the same quantizer logits over the masked frames.
    feats = reference.wav2vec2(torch.tensor(waveform), attention_mask=torch.tensor(mask),
                               mask_time_indices=hf_mask).extract_features
    logits = reference.quantizer.weight_proj(feats).view(-1, cfg.num_codevector_groups, cfg.num_codevectors_per_group)
    prob_ppl = reference.quantizer._compute_perplexity(torch.softmax(logits, -1), hf_mask)  # pylint: disable=protected-access

  n_masked = float(hf_mask.sum())
  assert float(loss.num_masked) == n_masked == 3 * count
  np.testing.assert_allclose(float(loss.contrastive), float(theirs.contrastive_loss), rtol=TOL)
  np.testing.assert_allclose(float(metrics["codebook/code_perplexity"]), float(theirs.codevector_perplexity),
                             rtol=TOL)
  np.testing.assert_allclose(float(metrics["codebook/prob_perplexity"]), float(prob_ppl), rtol=TOL)
  num_vars = cfg.num_codevectors
  prob_diversity = (num_vars - prob_ppl) / num_vars * n_masked
  np.testing.assert_allclose(float(loss.diversity), float(prob_diversity), rtol=TOL)
  hard_diversity = (num_vars - metrics["codebook/code_perplexity"]) / num_vars * n_masked
  np.testing.assert_allclose(float(hard_diversity), float(theirs.diversity_loss), rtol=TOL)
  # fairseq's total: contrastive + alpha * diversity + feature_pen_weight * mean(features^2) (before the layer
  # norm, over every frame), the last two scaled by the masked count; logged in bits per masked frame.
  with torch.no_grad():
    penalty = float(reference.wav2vec2.feature_extractor(torch.tensor(waveform)).pow(2).mean())
  total = (float(theirs.contrastive_loss) + cfg.diversity_loss_weight * float(prob_diversity)
           + cfg.feature_pen_weight * penalty * n_masked)
  assert cfg.diversity_loss_weight > 0 and cfg.feature_pen_weight > 0  # both terms weigh in
  np.testing.assert_allclose(float(loss.loss), total, rtol=TOL)
  np.testing.assert_allclose(float(metrics["loss/bits"]), total / n_masked / np.log(2), rtol=TOL)


@pytest.mark.parametrize("style", ["base", "large"])
def test_export_roundtrip_loads_in_transformers(tmp_path, style):
  src, dst = tmp_path / "src", tmp_path / "dst"
  ref.save_reference(src, style, "Wav2Vec2ForCTC", seed=1)
  model, variables = wav2vec_jax.load_pretrained(str(src))
  export_hf(str(dst), variables["params"], model.config, "Wav2Vec2ForCTC")
  reloaded = ref.transformers.Wav2Vec2ForCTC.from_pretrained(str(dst)).eval()
  waveform, mask = ref.padded_batch(seed=2)
  with torch.no_grad():
    theirs = reloaded(torch.tensor(waveform), attention_mask=torch.tensor(mask)).logits
  ours = model.apply(variables, jnp.asarray(waveform), jnp.asarray(mask)).logits
  assert _max_diff(ours, theirs) <= TOL
  # Export -> import gives back exactly the same parameters.
  _, again = wav2vec_jax.load_pretrained(str(dst))
  jax.tree_util.tree_map(np.testing.assert_array_equal, again["params"], variables["params"])


def test_sharded_checkpoints_load_to_the_single_file_parameters(tmp_path):
  """A `model.safetensors.index.json` directory (transformers' `max_shard_size`) and a `pytorch_model.bin.index.json`
  one (transformers 4's `safe_serialization=False` layout, which transformers 5 no longer writes: built here with
  the same huggingface_hub splitter) load to the parameters of the single-file directory."""
  import json  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  from huggingface_hub import split_torch_state_dict_into_shards  # pylint: disable=g-import-not-at-top

  reference = ref.save_reference(tmp_path / "single", "base", "Wav2Vec2ForCTC", seed=6)
  reference.save_pretrained(tmp_path / "safetensors", max_shard_size="100KB")
  assert not (tmp_path / "safetensors" / "model.safetensors").exists()
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  shutil.copy(tmp_path / "single" / "config.json", bin_dir / "config.json")
  state = reference.state_dict()
  split = split_torch_state_dict_into_shards(state, filename_pattern="pytorch_model{suffix}.bin",
                                             max_shard_size="100KB")
  for filename, names in split.filename_to_tensors.items():
    torch.save({name: state[name].contiguous() for name in names}, bin_dir / filename)
  (bin_dir / "pytorch_model.bin.index.json").write_text(
      json.dumps({"metadata": split.metadata, "weight_map": split.tensor_to_filename}))

  _, single = wav2vec_jax.load_pretrained(str(tmp_path / "single"))
  for name, index in (("safetensors", "model.safetensors.index.json"), ("bin", "pytorch_model.bin.index.json")):
    shards = set(json.loads((tmp_path / name / index).read_text())["weight_map"].values())
    assert len(shards) >= 3, shards  # a reader of the first shard only would miss keys
    model, variables = wav2vec_jax.load_pretrained(str(tmp_path / name))
    assert type(model).__name__ == "Wav2Vec2ForCTC"
    jax.tree_util.tree_map(np.testing.assert_array_equal, variables["params"], single["params"])


@pytest.mark.parametrize("style", ["base", "large"])
def test_bare_model_parity(tmp_path, style):
  """transformers' headless `Wav2Vec2Model` (names without the `wav2vec2.` prefix) loads as our Wav2Vec2Model."""
  reference = ref.save_reference(tmp_path, style, "Wav2Vec2Model", seed=7)
  model, variables = wav2vec_jax.load_pretrained(str(tmp_path))
  assert type(model).__name__ == "Wav2Vec2Model"
  waveform, mask = ref.padded_batch(seed=8)
  with torch.no_grad():
    theirs = reference(torch.tensor(waveform), attention_mask=torch.tensor(mask))
  ours = model.apply(variables, jnp.asarray(waveform), jnp.asarray(mask))
  assert ours.last_hidden_state.shape == tuple(theirs.last_hidden_state.shape)
  assert _max_diff(ours.last_hidden_state, theirs.last_hidden_state) <= TOL
  assert _max_diff(ours.extract_features, theirs.extract_features) <= TOL


@pytest.mark.parametrize("scan", [False, True])
def test_pretraining_export_equals_the_original_state_dict(tmp_path, scan):
  """Every tensor of an exported Wav2Vec2ForPreTraining (quantizer, projections, stacked scan layers unstacked)
  is the original's, value for value, once transformers has loaded it (a missing key would be random-initialised
  silently, a transposed one would fail the comparison)."""
  src, dst = tmp_path / "src", tmp_path / "dst"
  original = ref.save_reference(src, "base", "Wav2Vec2ForPreTraining", seed=9)
  model, variables = wav2vec_jax.load_pretrained(str(src), scan_layers=scan)
  assert ("layers" in variables["params"]["wav2vec2"]["encoder"]) == scan
  export_hf(str(dst), variables["params"], model.config, "Wav2Vec2ForPreTraining")
  reloaded, info = ref.transformers.Wav2Vec2ForPreTraining.from_pretrained(str(dst), output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
  want, got = original.state_dict(), reloaded.state_dict()
  assert set(got) == set(want)
  for name, value in want.items():
    np.testing.assert_array_equal(got[name].numpy(), value.numpy(), err_msg=name)


_NO_DROPOUT = dict(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                   final_dropout=0.0, layerdrop=0.0, mask_feature_prob=0.0)


@pytest.mark.parametrize("style", ["base", "large"])
def test_ctc_training_mode_with_a_time_mask_parity(tmp_path, style):
  """Training mode, dropout off, the same time mask given to both: the CTC logits match (the mask embedding
  replaces the masked frames after the feature projection, padding included)."""
  reference = ref.save_reference(tmp_path, style, "Wav2Vec2ForCTC", seed=10, **_NO_DROPOUT).train()
  model, variables = wav2vec_jax.load_pretrained(str(tmp_path))
  cfg = model.config
  assert (cfg.hidden_dropout, cfg.dropout_input, cfg.final_dropout, cfg.layerdrop, cfg.mask_channel_prob) == (0,) * 5
  waveform, mask = ref.padded_batch(seed=11)
  frames = masking.conv_output_lengths(waveform.shape[1], cfg.conv_kernel, cfg.conv_stride)
  frame_mask = np.asarray(masking.frame_mask_from_attention_mask(jnp.asarray(mask), frames, cfg.conv_kernel,
                                                                 cfg.conv_stride))
  time_mask = (np.random.RandomState(12).rand(3, frames) < 0.4) & frame_mask

  # Wav2Vec2ForCTC draws its own masks in training: hand the trunk this one instead, through the real CTC module.
  def give_mask(next_fun, args, kwargs, context):
    if isinstance(context.module, wav2vec_jax.models.Wav2Vec2Model) and context.method_name == "__call__":
      waveform_, attention_mask, _, deterministic = args
      assert not deterministic
      args = (waveform_, attention_mask, jnp.asarray(time_mask), deterministic)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(give_mask):
    ours = model.apply(variables, jnp.asarray(waveform), jnp.asarray(mask), deterministic=False,
                       rngs={"dropout": jax.random.PRNGKey(0), "mask": jax.random.PRNGKey(1)}).logits
  with torch.no_grad():  # transformers' Wav2Vec2ForCTC.forward takes no mask: its body, with one
    hidden = reference.wav2vec2(torch.tensor(waveform), attention_mask=torch.tensor(mask),
                                mask_time_indices=torch.tensor(time_mask)).last_hidden_state
    theirs = reference.lm_head(reference.dropout(hidden))
  assert _max_diff(ours, theirs) <= TOL
  unmasked = model.apply(variables, jnp.asarray(waveform), jnp.asarray(mask)).logits
  assert float(np.max(np.abs(np.asarray(unmasked) - np.asarray(ours)))) > 100 * TOL  # the mask mattered
