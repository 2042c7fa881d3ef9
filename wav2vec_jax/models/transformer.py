"""Transformer context network: convolutional positional embedding and post-LN / pre-LN encoder layers.

Dropout and layerdrop draw from the "dropout" RNG stream; layerdrop is drawn per layer and per step inside the
traced computation (never at trace time), and under `nn.scan` every layer gets its own key.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from wav2vec_jax.models import layers
from wav2vec_jax.models.config import ModelConfig


def _fft_size(minimum: int) -> int:
  """The smallest n >= minimum whose only prime factors are 2, 3 and 5 (fast FFT lengths)."""
  n = minimum
  while True:
    m = n
    for p in (2, 3, 5):
      while m % p == 0:
        m //= p
    if m == 1:
      return n
    n += 1


def grouped_conv_same(x, w, groups: int, impl: str):
  """Grouped 1-D cross-correlation with "same" output length (torch's padding=kernel//2, last frame dropped).

  Args:
    x: `[batch, frames, dim]` input.
    w: `[kernel, dim // groups, dim]` kernel (`WIO`; group g maps input channels g*w:(g+1)*w to the same outputs).
    groups: number of channel groups.
    impl: "conv" (one dense conv per group) or "fft" (rfft over time, a per-frequency grouped product, irfft;
      float32, exact up to rounding for any kernel and length).
  Returns:
    `[batch, frames, dim]`: y[t] = sum_k x[t + k - kernel // 2] @ w[k] per group, zero outside the clip. "fft"
    returns float32, "conv" the dtype of x.
  """
  batch, frames, dim = x.shape
  kernel, width = w.shape[0], dim // groups
  if impl == "fft":
    n = _fft_size(frames + kernel - 1)  # no circular wrap-around for any output frame
    xp = jnp.pad(x.astype(jnp.float32), ((0, 0), (kernel // 2, 0), (0, 0)))
    xf = jnp.fft.rfft(xp, n=n, axis=1).reshape(batch, -1, groups, width)
    wf = jnp.conj(jnp.fft.rfft(w.astype(jnp.float32), n=n, axis=0)).reshape(-1, width, groups, width)
    yf = jnp.einsum("bfgi,figo->bfgo", xf, wf).reshape(batch, -1, dim)  # conj: correlation, not convolution
    return jnp.fft.irfft(yf, n=n, axis=1)[:, :frames]
  # One dense conv per group instead of feature_group_count: XLA's SPMD partitioner sums the weight gradient of
  # a grouped conv over mesh axes the batch is replicated on (wrong by a factor of e.g. 2 on a (2, 2, 2) mesh).
  y = jnp.concatenate([
      layers.conv_general_dilated(  # bfloat16 products summed in float32, as every matmul of the model
          x[..., g * width:(g + 1) * width], w[..., g * width:(g + 1) * width], window_strides=(1,),
          padding=[(kernel // 2, kernel // 2)], dimension_numbers=("NWC", "WIO", "NWC"))
      for g in range(groups)], axis=-1)
  return y[:, :frames]  # "same" padding with an even kernel yields one extra frame: drop the last


def pos_conv_impl(cfg: ModelConfig, deterministic: bool, backend: str) -> str:
  """"fft" or "conv": `cfg.pos_conv_impl` with "auto" resolved by backend and pass.

  Measured with `experiments/benchmark_kernels.py --pos_convs=4x200x768,2x780x768` (BASE, 2 CPU cores): a training
  pass on CPU takes the FFT (forward + backward 221 / 666 ms against 2,310 / 5,245 ms through XLA:CPU's conv, whose
  weight gradient is slow), a deterministic pass on CPU (validation, inference) the conv (forward 61 / 136 ms
  against 122 / 333 ms); GPU and TPU the conv (the accelerator check's pos_conv stage measures it there). A
  gradient taken through a deterministic pass on CPU is correct but slow: set `pos_conv_impl="fft"` for that.
  """
  if cfg.pos_conv_impl != "auto":
    return cfg.pos_conv_impl
  return "fft" if backend == "cpu" and not deterministic else "conv"


class PositionalConvEmbedding(nn.Module):
  """Grouped Conv1d (kernel 128, 16 groups) with weight norm over the kernel axis, drop last frame, GELU."""

  config: ModelConfig
  deterministic: bool = True  # picks the implementation under "auto" (see `pos_conv_impl`); no dropout here

  @nn.compact
  def __call__(self, x, frame_mask=None):
    """x `[batch, frames, hidden]` (zero at padded frames), frame_mask `[batch, frames]` bool or None ->
    `[batch, frames, hidden]` (compute dtype)."""
    cfg = self.config
    kernel, groups, dim = cfg.num_conv_pos_embeddings, cfg.num_conv_pos_embedding_groups, cfg.hidden_size
    std = 2.0 * math.sqrt(1.0 / (kernel * dim))
    v = self.param("weight_v", layers.partitioned(nn.initializers.normal(std), ("conv_width", "conv_in", "embed")),
                   (kernel, dim // groups, dim), cfg.weight_dtype)
    v32 = v.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(v32 * v32, axis=(1, 2)))  # weight norm over every axis but the kernel's (torch dim=2)
    # At init g = ||v||, so the effective kernel equals v (torch's weight_norm initialisation).
    g = self.param("weight_g", layers.partitioned(lambda *_: norm.astype(cfg.weight_dtype), ("conv_width",)))
    bias = self.param("bias", layers.partitioned(nn.initializers.zeros, ("embed",)), (dim,), cfg.weight_dtype)
    w = v32 * (g.astype(jnp.float32) / norm)[:, None, None]
    impl = pos_conv_impl(cfg, self.deterministic, jax.default_backend())
    if impl == "conv":
      w, x = w.astype(cfg.compute_dtype), x.astype(cfg.compute_dtype)
    y = grouped_conv_same(x, w, groups, impl)
    if impl == "fft" and frame_mask is not None:
      # Padded frames beyond the kernel's reach of every real frame are exactly 0 in the direct conv; the FFT
      # leaves ~1e-7 of rounding there, which the post-LN encoder's LayerNorm would blow up at those frames.
      reach = jax.lax.reduce_window(frame_mask.astype(jnp.int32), 0, jax.lax.add, (1, kernel), (1, 1),
                                    ((0, 0), (kernel // 2, kernel - 1 - kernel // 2)))
      y = jnp.where(reach[..., None] > 0, y, 0.0)
    y = y.astype(cfg.compute_dtype)
    return layers.gelu(y + bias.astype(cfg.compute_dtype))


# Queries per block of the per-head attention: one block's float32 scores are QUERY_BLOCK x frames per head (a
# 20 s window, 999 frames, is one block; 30 minutes, 90,000 frames, 0.37 GB).
QUERY_BLOCK = 1024


def attention_impl(cfg: ModelConfig, deterministic: bool, backend: str, devices: int) -> str:
  """"batched", "per_head" or "fused": `cfg.attention_impl` with "auto" resolved: per_head for a deterministic pass
  (inference, validation) on a single CPU device, where the attention runs about 2x faster; batched otherwise.

  "fused" (`jax.nn.dot_product_attention`: cuDNN's fused kernel on a GPU, XLA elsewhere) is only taken when asked
  for.

  Raises:
    ValueError: "per_head" or "fused" asked for where attention dropout applies (they have none).
  """
  dropout = not deterministic and cfg.attention_dropout > 0
  if cfg.attention_impl == "auto":
    return "per_head" if deterministic and backend == "cpu" and devices == 1 else "batched"
  if cfg.attention_impl in ("per_head", "fused") and dropout:
    raise ValueError(f"attention_impl={cfg.attention_impl!r} has no attention dropout: use 'batched' or 'auto' for "
                     f"training with attention_dropout={cfg.attention_dropout}")
  return cfg.attention_impl


def _masked_softmax(scores, key_mask):
  """Softmax over the last axis of float32 `scores`, keys where `key_mask` (broadcast to scores) is False left out."""
  # A large finite negative keeps all-padding rows finite (uniform weights) instead of NaN.
  return jax.nn.softmax(jnp.where(key_mask, scores, jnp.finfo(jnp.float32).min), axis=-1)


class SelfAttention(nn.Module):
  """Multi-head self-attention with a key padding mask; softmax in float32."""

  config: ModelConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x, key_mask):
    """x `[batch, frames, hidden]`, key_mask `[batch, frames]` bool -> `[batch, frames, hidden]`."""
    cfg = self.config
    heads, head_dim = cfg.num_heads, cfg.head_dim

    init = nn.initializers.normal(cfg.initializer_range)

    def proj(name):  # Linear(hidden -> heads x head_dim); own params: nn.DenseGeneral's init breaks under a mesh
      kernel = self.param(f"{name}_kernel", layers.partitioned(init, ("embed", "heads", "head_dim")),
                          (cfg.hidden_size, heads, head_dim), cfg.weight_dtype)
      bias = self.param(f"{name}_bias", layers.partitioned(nn.initializers.zeros, ("heads", "head_dim")),
                        (heads, head_dim), cfg.weight_dtype)
      return layers.einsum("btd,dhk->bthk", x.astype(dt), kernel.astype(dt), dtype=dt) + bias.astype(dt)

    dt = cfg.compute_dtype
    q, k, v = proj("q_proj"), proj("k_proj"), proj("v_proj")
    q = nn.with_logical_constraint(q, ("batch", "frames", "heads", "head_dim"))
    impl = attention_impl(cfg, self.deterministic, jax.default_backend(), jax.device_count())
    if impl == "per_head":
      # One head at a time (lax.map), and for long inputs one block of QUERY_BLOCK queries at a time: a head's
      # scores stay in cache between the two matmuls and the softmax (on 2 CPU cores a BASE layer's attention at
      # 1,000 frames takes half the time of the batched form: 24 vs 47 ms float32), and memory grows linearly with
      # the frames instead of with their square. Sequential: inference on one device only.
      def queries(q_block, kh, vh):  # [batch, queries, head_dim] against all keys
        scores = jnp.einsum("bqd,bkd->bqk", q_block, kh, preferred_element_type=jnp.float32) * head_dim**-0.5
        weights = _masked_softmax(scores, key_mask[:, None, :])
        return layers.einsum("bqk,bkd->bqd", weights.astype(dt), vh, dtype=dt)

      def one_head(qkv):
        qh, kh, vh = qkv  # [batch, frames, head_dim]
        batch, frames, _ = qh.shape
        if frames <= QUERY_BLOCK:
          return queries(qh, kh, vh)
        blocks = -(-frames // QUERY_BLOCK)
        qh = jnp.pad(qh, ((0, 0), (0, blocks * QUERY_BLOCK - frames), (0, 0)))
        qh = jnp.moveaxis(qh.reshape(batch, blocks, QUERY_BLOCK, head_dim), 1, 0)
        out = jax.lax.map(lambda q_block: queries(q_block, kh, vh), qh)
        return jnp.moveaxis(out, 0, 1).reshape(batch, blocks * QUERY_BLOCK, head_dim)[:, :frames]

      out = jnp.moveaxis(jax.lax.map(one_head, tuple(jnp.moveaxis(a, 2, 0) for a in (q, k, v))), 0, 2)
    elif impl == "fused":
      # Padding is at the end of each row (frame masks come from lengths), which the fused kernels take as lengths.
      out = jax.nn.dot_product_attention(q, k, v, scale=head_dim**-0.5,
                                         key_value_seq_lengths=jnp.sum(key_mask, axis=-1, dtype=jnp.int32))
    else:
      # Heads before frames for the two batched matmuls: XLA:CPU runs the [batch, frames, heads, dim] einsums
      # about 2x slower (0.113 s vs 0.057 s for BASE at 1,000 frames); elsewhere the transposes are layout changes.
      q, k, v = (jnp.swapaxes(a, 1, 2) for a in (q, k, v))
      scores = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32) * head_dim**-0.5
      weights = _masked_softmax(scores, key_mask[:, None, None, :])
      weights = nn.Dropout(cfg.attention_dropout)(weights, deterministic=self.deterministic)
      out = jnp.swapaxes(layers.einsum("bhqk,bhkd->bhqd", weights.astype(dt), v, dtype=dt), 1, 2)
    out_kernel = self.param("out_proj_kernel", layers.partitioned(init, ("heads", "head_dim", "embed")),
                            (heads, head_dim, cfg.hidden_size), cfg.weight_dtype)
    out_bias = self.param("out_proj_bias", layers.partitioned(nn.initializers.zeros, ("embed",)), (cfg.hidden_size,),
                          cfg.weight_dtype)
    out = layers.einsum("bthk,hkd->btd", out, out_kernel.astype(dt), dtype=dt) + out_bias.astype(dt)
    return nn.with_logical_constraint(out, ("batch", "frames", "embed"))


class FeedForward(nn.Module):
  """Linear(hidden -> ffn) -> GELU -> dropout -> Linear(ffn -> hidden) -> dropout."""

  config: ModelConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x):
    """[batch, frames, hidden] -> [batch, frames, hidden]."""
    cfg = self.config
    h = layers.dense(cfg, cfg.intermediate_size, ("embed", "mlp"), "intermediate_dense")(x)
    h = nn.with_logical_constraint(layers.gelu(h), ("batch", "frames", "mlp"))
    h = nn.Dropout(cfg.activation_dropout)(h, deterministic=self.deterministic)
    h = layers.dense(cfg, cfg.hidden_size, ("mlp", "embed"), "output_dense")(h)
    return nn.Dropout(cfg.hidden_dropout)(h, deterministic=self.deterministic)


class EncoderLayer(nn.Module):
  """One transformer layer, post-LN (BASE) or pre-LN (LARGE/XLSR), with layerdrop; a scan body `(x, mask) -> (x, None)`.

  The residual stream stays float32. A layer dropped by layerdrop is skipped (`nn.cond`), as in fairseq, instead
  of computed and discarded (BASE, 4 x 4 s, fwd+bwd: 44 ms dropped, the zero gradient of its parameters, vs 247).
  """

  config: ModelConfig
  deterministic: bool = True

  def setup(self):
    cfg = self.config
    self.attention = SelfAttention(cfg, self.deterministic)
    self.feed_forward = FeedForward(cfg, self.deterministic)
    self.dropout = nn.Dropout(cfg.hidden_dropout)
    self.layer_norm = layers.layer_norm(cfg, None)
    self.final_layer_norm = layers.layer_norm(cfg, None)

  def _block(self, x, key_mask):
    """The layer itself: `[batch, frames, hidden]` float32 -> the same."""
    attention, norm1, norm2 = self.attention, self.layer_norm, self.final_layer_norm
    if self.config.layer_norm_first:
      h = x + self.dropout(attention(norm1(x), key_mask), deterministic=self.deterministic)
      h = h + self.feed_forward(norm2(h))
    else:
      h = norm1(x + self.dropout(attention(x, key_mask), deterministic=self.deterministic))
      h = norm2(h + self.feed_forward(h))
    return h.astype(jnp.float32)

  def __call__(self, x, key_mask):
    cfg = self.config
    x = x.astype(jnp.float32)
    if cfg.layerdrop > 0.0 and not self.deterministic and not self.is_initializing():
      drop = jax.random.uniform(self.make_rng("dropout"), ()) < cfg.layerdrop
      h = nn.cond(drop, lambda mdl, x, m: x, lambda mdl, x, m: mdl._block(x, m), self, x, key_mask)
    else:
      h = self._block(x, key_mask)
    return nn.with_logical_constraint(h, ("batch", "frames", "embed")), None


def _remat_policy(name: str):
  return {"full": None, "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}[name]


class Encoder(nn.Module):
  """Positional conv embedding, encoder LayerNorm and the stack of layers (optionally scanned and rematerialised)."""

  config: ModelConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x, frame_mask):
    """x `[batch, frames, hidden]`, frame_mask `[batch, frames]` bool -> `[batch, frames, hidden]` float32."""
    cfg = self.config
    x = jnp.where(frame_mask[..., None], x.astype(jnp.float32), 0.0)  # padded frames contribute nothing
    x = x + PositionalConvEmbedding(cfg, self.deterministic, name="pos_conv_embed")(x, frame_mask).astype(
        jnp.float32)
    if not cfg.layer_norm_first:
      x = layers.layer_norm(cfg, "layer_norm")(x)
    x = nn.Dropout(cfg.hidden_dropout)(x, deterministic=self.deterministic)
    block = EncoderLayer
    if cfg.remat_policy != "none":
      block = nn.remat(block, policy=_remat_policy(cfg.remat_policy), prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      stack = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                      in_axes=nn.broadcast, length=cfg.num_layers, unroll=cfg.scan_unroll,
                      metadata_params={nn.PARTITION_NAME: "layers"})
      x, _ = stack(cfg, self.deterministic, name="layers")(x, frame_mask)
    else:
      for i in range(cfg.num_layers):
        x, _ = block(cfg, self.deterministic, name=f"layers_{i}")(x, frame_mask)
    if cfg.layer_norm_first:
      x = layers.layer_norm(cfg, "layer_norm")(x)
    return x
