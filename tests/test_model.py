"""Model structure and behaviour: parameter counts, logical axes, scan, padding, failure paths, randomness."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import wav2vec_jax
from wav2vec_jax.interop import convert
from wav2vec_jax import losses
from wav2vec_jax.models import masking
from wav2vec_jax.training import partitioning
from wav2vec_jax.models import Wav2Vec2ForCTC, Wav2Vec2ForPreTraining, get_variant
from wav2vec_jax.models import layers, transformer
from wav2vec_jax.models.quantizer import GumbelQuantizer


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize("variant,expected", [("base", 95_044_608), ("large", 317_390_592), ("xlsr_53", 317_390_592)])
def test_parameter_counts_match_transformers(variant, expected):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  cfg = get_variant(variant)
  ours = _count(convert.abstract_params(Wav2Vec2ForPreTraining(cfg)))
  with torch.device("meta"):  # no memory, no init
    theirs = transformers.Wav2Vec2ForPreTraining(
        transformers.Wav2Vec2Config(**cfg.to_hf_dict("Wav2Vec2ForPreTraining")))
  assert ours == sum(p.numel() for p in theirs.parameters()) == expected


@pytest.mark.parametrize("scan", [False, True])
@pytest.mark.parametrize("model_class", [Wav2Vec2ForPreTraining, Wav2Vec2ForCTC])
def test_every_parameter_has_known_logical_axis_names(scan, model_class):
  model = model_class(get_variant("base", scan_layers=scan))
  boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 16000)))
  assert partitioning.unknown_axis_names(boxed) == {}
  if scan:  # stacked layers carry the "layers" axis name
    layer_kernel = boxed["params"]["wav2vec2"]["encoder"]["layers"]["attention"]["q_proj_kernel"]
    assert layer_kernel.names == ("layers", "embed", "heads", "head_dim")


def _tiny(model_class=Wav2Vec2ForCTC, **overrides):
  model = model_class(get_variant("tiny", **overrides))
  variables = nn.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16000))))
  return model, variables


def test_scan_matches_unrolled_layers():
  model, variables = _tiny()
  scanned = Wav2Vec2ForCTC(get_variant("tiny", scan_layers=True, remat_policy="full"))
  stacked = convert.stack_layers(jax.tree_util.tree_map(np.asarray, variables["params"]), model.config.num_layers)
  waveform = jax.random.normal(jax.random.PRNGKey(1), (2, 8000))
  expected = jax.jit(model.apply)(variables, waveform).logits
  np.testing.assert_allclose(jax.jit(scanned.apply)({"params": stacked}, waveform).logits, expected, atol=1e-5)
  # Two layers per loop iteration (scan_unroll), the same parameters and function.
  unrolled = Wav2Vec2ForCTC(get_variant("tiny", scan_layers=True, scan_unroll=2, remat_policy="dots"))
  np.testing.assert_allclose(jax.jit(unrolled.apply)({"params": stacked}, waveform).logits, expected, atol=1e-5)
  with pytest.raises(ValueError, match="scan_unroll 3 must be >= 1 and divide num_layers 2"):
    get_variant("tiny", scan_layers=True, scan_unroll=3)


def test_audio_shorter_than_receptive_field_is_a_clear_error():
  model, variables = _tiny()
  with pytest.raises(ValueError, match="receptive field of 400 samples"):
    model.apply(variables, jnp.zeros((1, 399)))
  # 400 samples is exactly one frame.
  assert model.apply(variables, jnp.zeros((1, 400))).logits.shape == (1, 1, model.config.vocab_size)


def test_all_padding_and_too_short_rows_are_finite_and_leave_other_rows_alone():
  model, variables = _tiny()
  waveform = jax.random.normal(jax.random.PRNGKey(1), (3, 8000))
  mask = jnp.stack([jnp.ones(8000), jnp.zeros(8000), (jnp.arange(8000) < 300)]).astype(jnp.int32)
  apply = jax.jit(model.apply)
  out = apply(variables, waveform * mask, mask)
  assert np.isfinite(np.asarray(out.logits)).all()
  assert out.frame_mask[1].sum() == 0 and out.frame_mask[2].sum() == 0  # 300 samples < 400: no frame
  alone = apply(variables, waveform[:1], mask[:1])
  np.testing.assert_allclose(out.logits[0], alone.logits[0], atol=1e-5)


def test_pretraining_loss_ignores_all_padding_rows():
  model, variables = _tiny(Wav2Vec2ForPreTraining)
  cfg = model.config
  waveform = jax.random.normal(jax.random.PRNGKey(1), (2, 16000))
  mask = jnp.stack([jnp.ones(16000), jnp.zeros(16000)]).astype(jnp.int32)
  frame_mask = masking.frame_mask_from_attention_mask(mask, 49, cfg.conv_kernel, cfg.conv_stride)
  masked = masking.compute_time_mask(jax.random.PRNGKey(2), frame_mask, 0.65, 10, 2)
  assert int(masked.valid[1].sum()) == 0 and int(masked.count) > 0
  negatives = masking.sample_negatives(jax.random.PRNGKey(3), masked.count, masked.valid, cfg.num_negatives)
  run = jax.jit(lambda v, w, a, m, n: losses.pretraining_loss(cfg, model.apply(v, w, a, m, method="pretrain"), n))
  loss, metrics = run(variables, waveform, mask, masked, negatives)
  assert float(loss.num_masked) == int(masked.count)
  assert all(np.isfinite(float(v)) for v in metrics.values())
  # The padded row adds nothing: the loss equals that of the real row alone with the same masks and negatives.
  row0 = jax.tree_util.tree_map(lambda x: x[:1] if np.ndim(x) else x, masked)
  alone, _ = run(variables, waveform[:1], mask[:1], row0, negatives[:1])
  for name in ("contrastive", "diversity", "num_masked"):
    np.testing.assert_allclose(float(getattr(loss, name)), float(getattr(alone, name)), rtol=1e-5, err_msg=name)


def test_layerdrop_is_drawn_per_step_inside_jit():
  zero_dropout = dict(hidden_dropout=0.0, attention_dropout=0.0, dropout_input=0.0, final_dropout=0.0,
                      mask_time_prob=0.0)
  model, variables = _tiny(layerdrop=0.5, **zero_dropout)
  waveform = jax.random.normal(jax.random.PRNGKey(1), (1, 8000))
  apply = jax.jit(lambda key: model.apply(variables, waveform, deterministic=False, rngs={"dropout": key}).logits)
  outputs = {np.asarray(apply(jax.random.PRNGKey(i))).tobytes() for i in range(8)}
  assert len(outputs) > 1  # different keys drop different layers in the same compiled function
  no_drop, no_drop_vars = _tiny(layerdrop=0.0, **zero_dropout)
  a = no_drop.apply(no_drop_vars, waveform, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)}).logits
  np.testing.assert_allclose(a, no_drop.apply(no_drop_vars, waveform).logits, atol=1e-6)


@pytest.mark.parametrize("scan", [False, True])
def test_a_dropped_layer_passes_its_input_through_and_gets_no_gradient(scan):
  zero_dropout = dict(hidden_dropout=0.0, attention_dropout=0.0, dropout_input=0.0, final_dropout=0.0,
                      mask_time_prob=0.0, scan_layers=scan)
  model, variables = _tiny(layerdrop=1.0, **zero_dropout)  # every layer dropped
  waveform = jax.random.normal(jax.random.PRNGKey(1), (1, 8000))

  def loss(params):
    out = model.apply({"params": params}, waveform, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)})
    return jnp.sum(out.logits**2), out.last_hidden_state

  grads, hidden = jax.jit(jax.grad(loss, has_aux=True))(variables["params"])
  # No layer ran: the context equals that of the same model with zero layers, and no layer parameter has a gradient.
  no_layers, _ = _tiny(num_layers=0, **{**zero_dropout, "scan_layers": False})
  params = dict(variables["params"])
  params["wav2vec2"] = dict(params["wav2vec2"])
  params["wav2vec2"]["encoder"] = {k: v for k, v in params["wav2vec2"]["encoder"].items() if not k.startswith("layers")}
  np.testing.assert_allclose(hidden, no_layers.apply({"params": params}, waveform).last_hidden_state, atol=1e-5)
  layer_grads = {k: v for k, v in grads["wav2vec2"]["encoder"].items() if k.startswith("layers")}
  assert layer_grads and all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree_util.tree_leaves(layer_grads))
  assert float(jnp.max(jnp.abs(grads["lm_head"]["kernel"]))) > 0


def test_gumbel_quantizer_is_hard_in_training_with_straight_through_gradients():
  model, variables = _tiny(Wav2Vec2ForPreTraining)
  cfg = model.config
  q = GumbelQuantizer(cfg)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, cfg.conv_dim[-1]))
  valid = jnp.ones((2, 5), bool)
  params, key, tau = variables["params"]["quantizer"], jax.random.PRNGKey(2), 2.0
  shape = (2, 5, cfg.num_codevector_groups, cfg.num_codevectors_per_group)
  # The noise the quantizer draws: the first key of its "gumbel" stream.
  noise = jax.random.gumbel(q.bind({"params": params}, rngs={"gumbel": key}).make_rng("gumbel"), shape)

  def logits(p):
    return (x @ p["weight_proj"]["kernel"] + p["weight_proj"]["bias"]).reshape(shape)

  def select(p, weights):  # [2, 5, G, V] weights of the codevectors -> [2, 5, codevector_dim]
    return jnp.einsum("bsgv,gvd->bsgd", weights, p["codevectors"]).reshape(2, 5, -1)

  cotangent = jax.random.normal(jax.random.PRNGKey(3), (2, 5, cfg.codevector_dim))
  out, vjp = jax.vjp(lambda p: q.apply({"params": p}, x, valid, tau, False, rngs={"gumbel": key}).quantized, params)
  codes = jnp.argmax(logits(params) + noise, -1)
  # Forward: exactly the one-hot codevectors of argmax(logits + g); gradient: that of the soft sample
  # softmax((logits + g) / tau), so a temperature other than 1 changes it.
  soft_grad = jax.grad(lambda p: jnp.sum(select(p, jax.nn.softmax((logits(p) + noise) / tau)) * cotangent))(params)
  np.testing.assert_allclose(out, select(params, jax.nn.one_hot(codes, shape[-1])), atol=1e-6)
  np.testing.assert_allclose(vjp(cotangent)[0]["weight_proj"]["kernel"], soft_grad["weight_proj"]["kernel"],
                             rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("time,channel", [(0.3, 0.0), (0.0, 0.3), (0.0, 0.0)])
def test_fine_tuning_applies_specaugment_in_training_only(time, channel):
  # With every dropout and layerdrop off, a training forward pass differs from the eval pass only by the time and
  # channel masks: each one alone must change the logits, and with neither the passes agree.
  quiet = dict(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, dropout_input=0.0,
               final_dropout=0.0, layerdrop=0.0, mask_channel_length=4, vocab_size=8)
  model = Wav2Vec2ForCTC(get_variant("tiny", mask_time_prob=time, mask_channel_prob=channel, **quiet))
  waveform = jax.random.normal(jax.random.PRNGKey(0), (4, 16000))
  variables = model.init(jax.random.PRNGKey(1), waveform)
  evaluated = model.apply(variables, waveform).logits
  trained = model.apply(variables, waveform, deterministic=False,
                        rngs={"mask": jax.random.PRNGKey(2), "dropout": jax.random.PRNGKey(3)}).logits
  if time or channel:
    assert float(jnp.max(jnp.abs(trained - evaluated))) > 1e-3
  else:
    np.testing.assert_allclose(trained, evaluated, atol=1e-5)


@pytest.mark.parametrize("mult", [0.1, 0.0])
def test_feature_grad_mult_scales_conv_gradients(mult):
  waveform = jax.random.normal(jax.random.PRNGKey(1), (1, 8000))

  def conv_grads(feature_grad_mult):
    model, variables = _tiny(feature_grad_mult=feature_grad_mult)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(model.apply({"params": p}, waveform).logits ** 2)))(
        variables["params"])
    return grads["wav2vec2"]["feature_extractor"]

  full, scaled = conv_grads(1.0), conv_grads(mult)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(b, mult * a, rtol=1e-4, atol=1e-7), full, scaled)


@pytest.mark.parametrize("kernel,groups,frames", [(128, 16, 199), (128, 16, 50), (16, 2, 7), (5, 1, 33)])
def test_fft_positional_conv_equals_direct_conv_values_and_gradients(kernel, groups, frames):
  # Odd and even kernels, clips shorter than the kernel, one group and many.
  dim = 8 * groups
  x = jax.random.normal(jax.random.PRNGKey(0), (2, frames, dim))
  w = 0.1 * jax.random.normal(jax.random.PRNGKey(1), (kernel, dim // groups, dim))
  cotangent = jax.random.normal(jax.random.PRNGKey(2), (2, frames, dim))

  def run(impl):
    f = jax.jit(lambda x, w: transformer.grouped_conv_same(x, w, groups, impl))
    y, vjp = jax.vjp(f, x, w)
    return (y, *vjp(cotangent))

  for direct, spectral in zip(run("conv"), run("fft")):
    np.testing.assert_allclose(spectral, direct, atol=2e-5 * float(jnp.max(jnp.abs(direct))))
  # The direct conv is the definition: y[t] = sum_k x[t + k - kernel // 2] @ w[k] within each group.
  xp = np.pad(np.asarray(x), ((0, 0), (kernel // 2, kernel), (0, 0)))
  width = dim // groups
  expected = np.concatenate([
      sum(xp[:, k:k + frames, g * width:(g + 1) * width] @ np.asarray(w)[k, :, g * width:(g + 1) * width]
          for k in range(kernel)) for g in range(groups)], axis=-1)
  np.testing.assert_allclose(run("fft")[0], expected, atol=2e-5 * float(np.max(np.abs(expected))))


def test_bfloat16_compute_runs_in_bfloat16_and_stays_close():
  model, variables = _tiny()
  bf16 = Wav2Vec2ForCTC(model.config.replace(dtype="bfloat16"))
  waveform = jax.random.normal(jax.random.PRNGKey(1), (2, 8000))
  ref, low = jax.jit(model.apply)(variables, waveform).logits, jax.jit(bf16.apply)(variables, waveform).logits
  # The lowered program: the 6 many-channel conv layers (as matmuls on CPU) and the q, k, v, scores,
  # attention-values, output and 2 FFN matmuls of each layer multiply bfloat16 operands and sum in float32.
  lowered = jax.jit(bf16.apply).lower(variables, waveform).as_text()
  ops = re.findall(r"stablehlo\.(?:dot_general|convolution)[^\n]*: \((tensor<[0-9x]*\w+>), (tensor<[0-9x]*\w+>)\) -> "
                   r"(tensor<[0-9x]*\w+>)", lowered)
  mixed = [op for op in ops if op[0].endswith("bf16>") and op[1].endswith("bf16>") and op[2].endswith("f32>")]
  assert low.dtype == jnp.float32 and len(mixed) >= 6 + 8 * model.config.num_layers, ops
  assert not [op for op in ops if op[2].endswith("bf16>")]  # no product is summed in bfloat16
  error, scale = float(jnp.max(jnp.abs(ref - low))), float(jnp.max(jnp.abs(ref)))
  assert 1e-3 * scale < error < 0.05 * scale  # bfloat16 rounding shows (~8 bits), and stays small


def test_fused_attention_equals_the_batched_one():
  model, variables = _tiny(attention_impl="batched")
  fused = Wav2Vec2ForCTC(model.config.replace(attention_impl="fused"))
  waveform = jax.random.normal(jax.random.PRNGKey(3), (2, 8000))
  mask = jnp.asarray(np.arange(8000)[None] < np.array([[8000], [4500]]))
  expected = jax.jit(model.apply)(variables, waveform, mask).logits
  np.testing.assert_allclose(jax.jit(fused.apply)(variables, waveform, mask).logits, expected, atol=1e-5)
  with pytest.raises(ValueError, match="fused"):
    fused.apply(variables, waveform, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0),
                                                                "mask": jax.random.PRNGKey(1)})


@pytest.mark.parametrize("layer_norm_first", [False, True])
def test_per_head_attention_equals_the_batched_one(layer_norm_first):
  model, variables = _tiny(attention_impl="batched", layer_norm_first=layer_norm_first)
  per_head = Wav2Vec2ForCTC(model.config.replace(attention_impl="per_head"))
  waveform = jax.random.normal(jax.random.PRNGKey(1), (2, 8000))
  mask = jnp.asarray(np.arange(8000)[None] < np.array([[8000], [5000]]))  # the second row padded
  expected = jax.jit(model.apply)(variables, waveform, mask).logits
  got = jax.jit(per_head.apply)(variables, waveform, mask).logits
  np.testing.assert_allclose(got, expected, atol=1e-5)
  lowered = jax.jit(per_head.apply).lower(variables, waveform, mask).as_text()
  assert lowered.count("stablehlo.while") == model.config.num_layers  # one loop over the heads per layer
  # Training with attention dropout needs the batched form; "auto" picks per_head only for a forward pass on one
  # CPU device.
  with pytest.raises(ValueError, match="per_head"):
    per_head.apply(variables, waveform, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0),
                                                                  "mask": jax.random.PRNGKey(1)})
  auto = get_variant("tiny", attention_impl="auto")
  assert transformer.attention_impl(auto, True, "cpu", 1) == "per_head"
  assert [transformer.attention_impl(auto, *case) for case in
          ((False, "cpu", 1), (True, "cpu", 8), (True, "gpu", 1), (True, "tpu", 1))] == ["batched"] * 4


def test_per_head_attention_in_query_blocks_equals_the_batched_one(monkeypatch):
  monkeypatch.setattr(transformer, "QUERY_BLOCK", 7)  # 24 frames: 4 blocks, the last one padded
  model, variables = _tiny(attention_impl="batched")
  per_head = Wav2Vec2ForCTC(model.config.replace(attention_impl="per_head"))
  waveform = jax.random.normal(jax.random.PRNGKey(2), (2, 8000))
  mask = jnp.asarray(np.arange(8000)[None] < np.array([[8000], [6000]]))
  expected = jax.jit(model.apply)(variables, waveform, mask).logits
  got = jax.jit(per_head.apply)(variables, waveform, mask).logits
  assert got.shape[1] > 3 * 7
  np.testing.assert_allclose(got, expected, atol=1e-5)


def test_per_head_attention_memory_grows_linearly_with_the_audio():
  # Compiled memory (XLA's buffer assignment) of a forward pass over 1, 2 and 4 minutes (3,000 to 12,000 frames):
  # the per-head path holds one block of scores, the batched one all of them.
  temp = {}
  for impl in ("per_head", "batched"):
    model = Wav2Vec2ForCTC(get_variant("tiny", attention_impl=impl))
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 16000)))
    for minutes in (1, 2, 4):
      audio = jax.ShapeDtypeStruct((1, minutes * 60 * 16000), jnp.float32)
      compiled = jax.jit(model.apply).lower(params, audio).compile()
      temp[impl, minutes] = compiled.memory_analysis().temp_size_in_bytes
  for minutes in (1, 2):
    assert temp["per_head", 2 * minutes] < 2.2 * temp["per_head", minutes], temp
    assert temp["batched", 2 * minutes] > 3.0 * temp["batched", minutes], temp  # the quadratic term the test sees
  assert temp["per_head", 4] < temp["batched", 4] / 5


@pytest.mark.parametrize("time,kernel,stride", [(101, 3, 2), (100, 3, 2), (57, 10, 5), (40, 2, 2), (33, 4, 3),
                                                (12, 3, 1), (9, 2, 3)])
def test_a_conv_as_matmuls_equals_the_conv(time, kernel, stride):
  rng = np.random.default_rng(time)
  x, w = rng.normal(size=(2, time, 8)), rng.normal(size=(kernel, 8, 5))
  expected = jax.lax.conv_general_dilated(x, w, (stride,), "VALID", dimension_numbers=("NWC", "WIO", "NWC"))
  got = layers.conv1d_as_matmuls(jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32), stride)
  assert got.shape == expected.shape
  np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("scan_on_load", [False, True])
def test_save_and_load_own_checkpoint(tmp_path, scan_on_load):
  model, variables = _tiny()
  wav2vec_jax.save_pretrained(str(tmp_path), model, variables)
  loaded, loaded_vars = wav2vec_jax.load_pretrained(str(tmp_path), scan_layers=scan_on_load)
  assert loaded.config.scan_layers == scan_on_load
  waveform = jax.random.normal(jax.random.PRNGKey(1), (1, 8000))
  np.testing.assert_allclose(loaded.apply(loaded_vars, waveform).logits, model.apply(variables, waveform).logits,
                             atol=1e-5)


def test_config_typo_is_a_clear_error():
  with pytest.raises(ValueError, match="no field"):
    get_variant("base", hiden_size=10)
  with pytest.raises(ValueError, match="Unknown model variant"):
    get_variant("bsae")
  with pytest.raises(ValueError, match="feat_extract_norm"):
    get_variant("base", feat_extract_norm="batch")
  with pytest.raises(ValueError, match="pos_conv_impl"):
    get_variant("base", pos_conv_impl="fftw")


@pytest.mark.parametrize("axis", [-1, 1])
def test_norms_and_gelu_equal_torch_forward_and_backward(axis):
  """`layers.Norm` is torch's LayerNorm (axis -1) or GroupNorm(C, C) (axis 1), `layers.gelu` torch's exact GELU, with
  their input and parameter gradients; a scale, shift, statistic or gradient formula off by anything shows here."""
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(7)
  x = (3.0 * rng.normal(size=(2, 37, 6)) + 1.5).astype(np.float32)
  scale, bias = (1 + 0.3 * rng.normal(size=6)).astype(np.float32), (0.2 * rng.normal(size=6)).astype(np.float32)
  cotangent = rng.normal(size=x.shape).astype(np.float32)

  def ours(x, scale, bias):
    y = layers.Norm(axis=axis, epsilon=1e-5).apply({"params": {"scale": scale, "bias": bias}}, x)
    return layers.gelu(y)

  out, vjp = jax.vjp(ours, x, scale, bias)
  grads = vjp(cotangent)
  tx, ts, tb = (torch.tensor(a, requires_grad=True) for a in (x, scale, bias))
  if axis == -1:
    normed = torch.nn.functional.layer_norm(tx, (6,), ts, tb, eps=1e-5)
  else:  # GroupNorm runs on [batch, channels, time]
    normed = torch.nn.functional.group_norm(tx.transpose(1, 2), 6, ts, tb, eps=1e-5).transpose(1, 2)
  expected = torch.nn.functional.gelu(normed)
  expected.backward(torch.tensor(cotangent))
  np.testing.assert_allclose(out, expected.detach().numpy(), atol=2e-6)
  for got, want in zip(grads, (tx.grad, ts.grad, tb.grad)):
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=2e-5)
  params = layers.Norm(axis=axis).init(jax.random.PRNGKey(0), x)["params"]
  assert set(params) == {"scale", "bias"}  # flax's LayerNorm/GroupNorm names: checkpoints load unchanged


def test_auto_positional_conv_is_the_fft_for_cpu_training_and_the_conv_otherwise():
  """The measured choice (benchmark_kernels.py --pos_convs): FFT where a CPU pass is differentiated, conv for a CPU
  forward pass and on accelerators; an explicit choice is kept everywhere."""
  auto = get_variant("tiny")
  assert transformer.pos_conv_impl(auto, deterministic=False, backend="cpu") == "fft"
  assert transformer.pos_conv_impl(auto, deterministic=True, backend="cpu") == "conv"
  assert {transformer.pos_conv_impl(auto, d, backend) for d in (False, True) for backend in ("gpu", "tpu")} == {"conv"}
  for impl in ("fft", "conv"):
    chosen = get_variant("tiny", pos_conv_impl=impl)
    assert {transformer.pos_conv_impl(chosen, d, b) for d in (False, True) for b in ("cpu", "gpu")} == {impl}
