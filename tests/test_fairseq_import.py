"""fairseq checkpoints (written here in fairseq's layout from transformers weights) import to the same parameters."""

import argparse
import collections
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import wav2vec_jax
from wav2vec_jax.interop import convert, fairseq_import
import hf_reference as ref

torch = ref.torch

# transformers name -> fairseq name (the inverse of the import's mapping, written independently).
_TO_FAIRSEQ = [
    (r"^feature_extractor\.conv_layers\.(\d+)\.conv\.", r"feature_extractor.conv_layers.\1.0."),
    (r"^feature_projection\.projection\.", "post_extract_proj."),
    (r"^feature_projection\.layer_norm\.", "layer_norm."),
    (r"^masked_spec_embed$", "mask_emb"),
    (r"^encoder\.pos_conv_embed\.conv\.", "encoder.pos_conv.0."),
    (r"^encoder\.layers\.(\d+)\.attention\.", r"encoder.layers.\1.self_attn."),
    (r"^encoder\.layers\.(\d+)\.layer_norm\.", r"encoder.layers.\1.self_attn_layer_norm."),
    (r"^encoder\.layers\.(\d+)\.feed_forward\.intermediate_dense\.", r"encoder.layers.\1.fc1."),
    (r"^encoder\.layers\.(\d+)\.feed_forward\.output_dense\.", r"encoder.layers.\1.fc2."),
]


def _fairseq_name(name: str, layer_norm_extractor: bool) -> str:
  m = re.match(r"^feature_extractor\.conv_layers\.(\d+)\.layer_norm\.(.*)$", name)
  if m:
    return f"feature_extractor.conv_layers.{m[1]}.{'2.1' if layer_norm_extractor else '2'}.{m[2]}"
  for pattern, replacement in _TO_FAIRSEQ:
    new, n = re.subn(pattern, replacement, name)
    if n:
      return new
  return name


def _fairseq_model_cfg(style: str) -> dict:
  return {
      "_name": "wav2vec2", "extractor_mode": "layer_norm" if style == "large" else "default",
      "conv_feature_layers": "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2", "conv_bias": style == "large",
      "encoder_layers": 3, "encoder_embed_dim": 64, "encoder_ffn_embed_dim": 96, "encoder_attention_heads": 4,
      "layer_norm_first": style == "large", "conv_pos": 16, "conv_pos_groups": 4, "final_dim": 24, "latent_dim": 32,
      "latent_vars": 20, "latent_groups": 2, "num_negatives": 10, "mask_prob": 0.65, "activation_fn": "gelu",
      "latent_temp": [2.0, 0.5, 0.999995], "feature_grad_mult": 0.1, "encoder_layerdrop": 0.05,
  }


def _write_fairseq(path, reference, style: str, architecture: str, legacy_args: bool):
  hf_state = convert.normalize_hf_names({k: v.numpy() for k, v in reference.state_dict().items()})
  state = collections.OrderedDict()
  for name, value in hf_state.items():
    if architecture == "Wav2Vec2ForCTC":
      if name.startswith("lm_head."):
        key = "w2v_encoder.proj." + name[len("lm_head."):]
      else:
        key = "w2v_encoder.w2v_model." + _fairseq_name(name[len("wav2vec2."):], style == "large")
    elif name.startswith("wav2vec2."):
      key = _fairseq_name(name[len("wav2vec2."):], style == "large")
    else:
      key = {"quantizer.codevectors": "quantizer.vars"}.get(name, name.replace("project_hid.", "final_proj."))
    state[key] = torch.tensor(value)
  model_cfg = _fairseq_model_cfg(style)
  if architecture == "Wav2Vec2ForCTC":
    model_cfg = {"_name": "wav2vec_ctc", "w2v_args": {"model": model_cfg}, "dropout": 0.0, "final_dropout": 0.0,
                 "mask_prob": 0.5, "layerdrop": 0.1, "feature_grad_mult": 0.0}
  ckpt = {"model": state, "optimizer_history": [], "extra_state": {"epoch": 3}}
  if legacy_args:  # 2020 checkpoints: an argparse.Namespace and torch's legacy (non-zip) format
    ckpt["args"] = argparse.Namespace(**model_cfg)
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
  else:
    ckpt["args"], ckpt["cfg"] = None, {"model": model_cfg, "task": {"_name": "audio_pretraining"}}
    torch.save(ckpt, path)


@pytest.mark.parametrize("style,architecture,legacy", [
    ("base", "Wav2Vec2ForPreTraining", False), ("large", "Wav2Vec2ForPreTraining", True),
    ("base", "Wav2Vec2ForCTC", True), ("large", "Wav2Vec2ForCTC", False)])
def test_fairseq_import_equals_hf_import(tmp_path, style, architecture, legacy):
  reference = ref.save_reference(tmp_path / "hf", style, architecture, seed=4)
  _write_fairseq(tmp_path / "model.pt", reference, style, architecture, legacy)
  hf_model, hf_vars = wav2vec_jax.load_pretrained(str(tmp_path / "hf"))
  fs_model, fs_vars = wav2vec_jax.load_pretrained(str(tmp_path / "model.pt"))
  assert type(fs_model) is type(hf_model)
  jax.tree_util.tree_map(np.testing.assert_array_equal, fs_vars["params"], hf_vars["params"])
  cfg = fs_model.config
  assert (cfg.feat_extract_norm, cfg.layer_norm_first, cfg.conv_bias) == (
      ("layer", True, True) if style == "large" else ("group", False, False))
  if architecture == "Wav2Vec2ForCTC":  # fine-tuning overrides come from the fine-tuning config
    assert cfg.vocab_size == 12 and cfg.layerdrop == 0.1 and cfg.mask_time_prob == 0.5
  else:
    assert cfg.feature_grad_mult == 0.1 and cfg.final_dim == 24 and cfg.codevector_dim == 32
  waveform, mask = ref.padded_batch(seed=5)
  a = fs_model.apply(fs_vars, jnp.asarray(waveform), jnp.asarray(mask)).last_hidden_state
  b = hf_model.apply(hf_vars, jnp.asarray(waveform), jnp.asarray(mask)).last_hidden_state
  np.testing.assert_array_equal(a, b)


def test_conv_layer_spec_is_parsed_without_eval():
  assert fairseq_import.parse_conv_layers("[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]") == (
      [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2)
  with pytest.raises(ValueError, match="unsupported expression"):
    fairseq_import.parse_conv_layers("__import__('os').system('true')")


def test_not_a_fairseq_checkpoint(tmp_path):
  torch.save({"weights": torch.zeros(2)}, tmp_path / "x.pt")
  with pytest.raises(ValueError, match="not a fairseq checkpoint"):
    wav2vec_jax.load_pretrained(str(tmp_path / "x.pt"))


def _write_ctc_variant(path, reference, style: str, edit_args):
  """A CTC checkpoint from `_write_fairseq` whose config section `edit_args` rewrites (a dict -> a new value)."""
  _write_fairseq(path, reference, style, "Wav2Vec2ForCTC", legacy_args=False)
  ckpt = torch.load(path, weights_only=False)
  ckpt["args"], ckpt["cfg"] = edit_args(ckpt["cfg"]["model"])
  torch.save(ckpt, path, _use_new_zipfile_serialization=False)


def test_legacy_flat_namespace_ctc_checkpoint(tmp_path):
  """2020 fine-tuned checkpoints: one flat `args` Namespace mixing model, task and optimiser fields, with the
  pre-training arguments as a nested flat Namespace (no `model` section anywhere)."""
  reference = ref.save_reference(tmp_path / "hf", "base", "Wav2Vec2ForCTC", seed=13)

  def flat(model_cfg):
    w2v = dict(model_cfg["w2v_args"]["model"], arch="wav2vec2", task="audio_pretraining", lr=[0.0005],
               max_update=400000, normalize=False, criterion="wav2vec")
    w2v.pop("_name")
    ft = {k: v for k, v in model_cfg.items() if k not in ("_name", "w2v_args")}
    return argparse.Namespace(arch="wav2vec_ctc", task="audio_pretraining", criterion="ctc", lr=[3e-5],
                              max_update=20000, w2v_path="/checkpoint/wav2vec_small.pt", labels="ltr",
                              w2v_args=argparse.Namespace(**w2v), **ft), None

  _write_ctc_variant(tmp_path / "ctc.pt", reference, "base", flat)
  _, hf_vars = wav2vec_jax.load_pretrained(str(tmp_path / "hf"))
  model, variables = wav2vec_jax.load_pretrained(str(tmp_path / "ctc.pt"))
  jax.tree_util.tree_map(np.testing.assert_array_equal, variables["params"], hf_vars["params"])
  cfg = model.config
  assert (cfg.num_layers, cfg.hidden_size, cfg.final_dim, cfg.vocab_size) == (3, 64, 24, 12)
  assert cfg.layerdrop == 0.1 and cfg.mask_time_prob == 0.5  # the fine-tuning values, not the pre-training ones


def test_ctc_checkpoint_without_w2v_args_reads_the_w2v_path_checkpoint(tmp_path):
  """`cfg.model.w2v_args` None: fairseq's Wav2VecEncoder reads the pre-training config from `w2v_path`."""
  reference = ref.save_reference(tmp_path / "hf", "large", "Wav2Vec2ForCTC", seed=14)
  pretrained = ref.save_reference(tmp_path / "hf_pt", "large", "Wav2Vec2ForPreTraining", seed=15)
  _write_fairseq(tmp_path / "pretrain.pt", pretrained, "large", "Wav2Vec2ForPreTraining", legacy_args=False)

  def without_w2v_args(model_cfg):
    return None, {"model": dict(model_cfg, w2v_args=None, w2v_path=str(tmp_path / "pretrain.pt")),
                  "task": {"_name": "audio_finetuning"}}

  _write_ctc_variant(tmp_path / "ctc.pt", reference, "large", without_w2v_args)
  _, hf_vars = wav2vec_jax.load_pretrained(str(tmp_path / "hf"))
  model, variables = wav2vec_jax.load_pretrained(str(tmp_path / "ctc.pt"))
  jax.tree_util.tree_map(np.testing.assert_array_equal, variables["params"], hf_vars["params"])
  cfg = model.config
  assert (cfg.feat_extract_norm, cfg.layer_norm_first, cfg.conv_bias, cfg.vocab_size) == ("layer", True, True, 12)
  assert cfg.layerdrop == 0.1 and cfg.mask_time_prob == 0.5
  (tmp_path / "pretrain.pt").unlink()  # written on another machine: the error names the missing file
  with pytest.raises(ValueError, match=r"w2v_path .*pretrain\.pt.* not a file"):
    wav2vec_jax.load_pretrained(str(tmp_path / "ctc.pt"))
