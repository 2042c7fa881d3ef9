"""Small building blocks shared by the model files: initialisers, norms, dense layers, gradient scaling.

Initialisers follow transformers' `Wav2Vec2PreTrainedModel._init_weights` so that freshly initialised models have
the same statistics as the reference.
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

# torch's kaiming_normal_ (fan_in, gain sqrt(2)): the conv encoder's init.
kaiming_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def uniform_init(bound: float):
  """U(-bound, bound), torch.nn.Linear's default family."""

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def uniform01(key, shape, dtype=jnp.float32):
  """U(0, 1): torch `Tensor.uniform_()` (mask embedding, codevectors)."""
  return jax.random.uniform(key, shape, dtype)


def partitioned(init, names):
  """Attaches logical axis names to an initialiser."""
  return nn.with_logical_partitioning(init, names)


def layer_norm(cfg, name: str | None, axis_name: str = "embed", epsilon: float | None = None) -> "Norm":
  """LayerNorm over the last axis, in float32 with a two-pass variance, as torch (name None inside `setup`)."""
  return Norm(axis=-1, axis_name=axis_name, epsilon=cfg.layer_norm_eps if epsilon is None else epsilon,
              param_dtype=cfg.weight_dtype, name=name)


class Norm(nn.Module):
  """Normalises `[..., channels]` over `axis`, then scales and shifts per channel; returns float32.

  `axis=-1` is torch.nn.LayerNorm(channels); `axis=1` on `[batch, time, channels]` is torch.nn.GroupNorm(C, C)
  (each channel over time, padded samples included, as in the reference). Statistics in float32 with a two-pass
  variance, as torch. Parameters `scale` and `bias` `[channels]` (flax's LayerNorm/GroupNorm names: checkpoints
  are unchanged). Written out rather than nn.LayerNorm / nn.GroupNorm, which XLA:CPU runs in more passes
  (`experiments/benchmark_kernels.py`, 2 cores): LayerNorm's backward 1.1-1.35x faster; the per-channel GroupNorm's
  forward 2.3-3.1x faster, its backward alone 0.72-0.78x, and with the GELU that follows it in conv block 0 the
  forward + backward 5.2 instead of 6.6 ms at `[4, 12799, 32]`.
  """

  axis: int = -1
  axis_name: str = "embed"  # logical name of the channel axis of the parameters
  epsilon: float = 1e-5
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    """x `[..., channels]` (any float dtype) -> the same shape, float32."""
    channels = x.shape[-1]
    scale = self.param("scale", partitioned(nn.initializers.ones, (self.axis_name,)), (channels,), self.param_dtype)
    bias = self.param("bias", partitioned(nn.initializers.zeros, (self.axis_name,)), (channels,), self.param_dtype)
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=self.axis, keepdims=True)
    centred = x - mean
    var = jnp.mean(centred * centred, axis=self.axis, keepdims=True)
    return centred * jax.lax.rsqrt(var + self.epsilon) * scale.astype(jnp.float32) + bias.astype(jnp.float32)


def dense(cfg, features: int, names: tuple[str, str], name: str, kernel_init=None, bias_init=None,
          dtype=None) -> nn.Dense:
  """nn.Dense with logical names `names = (in_axis, out_axis)`; default init N(0, initializer_range), zero bias."""
  kernel_init = kernel_init or nn.initializers.normal(cfg.initializer_range)
  bias_init = bias_init or nn.initializers.zeros
  return nn.Dense(features, dtype=dtype or cfg.compute_dtype, param_dtype=cfg.weight_dtype,
                  kernel_init=partitioned(kernel_init, names), bias_init=partitioned(bias_init, (names[1],)),
                  name=name, dot_general=dot_general)


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **kwargs):
  """`lax.dot_general` accumulated in float32 and returned in the operands' dtype (nn.Dense's `dot_general`).

  For float32 operands this is the plain product. For bfloat16 ones it is what mixed precision means on every
  backend (float32 sums, bfloat16 result), and on CPU it is the fast path: XLA:CPU runs a bfloat16 dot with a
  float32 result at about twice the float32 rate (~400 vs ~195 GFLOP/s on 2 AVX-512 cores) but one with a
  bfloat16 result no faster than float32.
  """
  del preferred_element_type  # always float32
  out = jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision, preferred_element_type=jnp.float32,
                            **kwargs)
  return out.astype(jnp.result_type(lhs, rhs))


def einsum(spec: str, *operands, dtype):
  """`jnp.einsum` accumulated in float32, returned in `dtype` (see `dot_general`)."""
  return jnp.einsum(spec, *operands, preferred_element_type=jnp.float32).astype(dtype)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None):
  """nn.Conv's convolution, accumulated in float32 and returned in the operands' dtype (see `dot_general`).

  XLA:CPU has no fast bfloat16 convolution (it converts to float32 and back, slower than a float32 conv), so on
  CPU a bfloat16 1-D "VALID" conv of a many-channel input runs as matmuls (`conv1d_as_matmuls`): the BASE conv
  encoder in 0.51 s instead of 0.63 s (float32 conv) or 0.69 s (bfloat16 conv) per 20 s on 2 cores. Other cases
  (the waveform's one-channel layer, grouped or padded convs) are `lax.conv_general_dilated`, in float32 on CPU.
  """
  dtype = jnp.result_type(lhs, rhs)
  simple = (lhs.ndim == 3 and padding == "VALID" and feature_group_count == 1
            and set(lhs_dilation or (1,)) == set(rhs_dilation or (1,)) == {1})
  if jax.default_backend() == "cpu" and dtype == jnp.bfloat16:
    if simple and lhs.shape[-1] >= 8:
      return conv1d_as_matmuls(lhs, rhs, window_strides[0]).astype(dtype)
    lhs, rhs = lhs.astype(jnp.float32), rhs.astype(jnp.float32)
  out = jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                     rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                     feature_group_count=feature_group_count, precision=precision,
                                     preferred_element_type=jnp.float32)
  return out.astype(dtype)


def conv1d_as_matmuls(x, w, stride: int):
  """A 1-D "VALID" convolution as matmuls over stride-sized blocks of the input.

  Args:
    x: `[batch, time, in]`; w: `[kernel, in, out]`; stride: the conv's stride.
  Returns:
    `[batch, (time - kernel) // stride + 1, out]` float32: out[t] = sum_j x[stride * t + j] @ w[j].
  The input is viewed as `[batch, blocks, stride * in]` (a reshape, no copy); output t is the sum over
  m < ceil(kernel / stride) of block t + m times the kernel rows m * stride ... (m + 1) * stride - 1.
  """
  batch, time, channels = x.shape
  kernel = w.shape[0]
  frames = (time - kernel) // stride + 1
  blocks = -(-kernel // stride)
  rows = (frames + blocks - 1) * stride
  x = x[:, :rows] if time >= rows else jnp.pad(x, ((0, 0), (0, rows - time), (0, 0)))  # padded rows meet no weight
  x = x.reshape(batch, frames + blocks - 1, stride * channels)
  out = 0.0
  for m in range(blocks):
    taps = min(stride, kernel - m * stride)
    w_m = w[m * stride:m * stride + taps].reshape(taps * channels, -1)
    out = out + jnp.einsum("btc,co->bto", x[:, m:m + frames, :taps * channels], w_m,
                           preferred_element_type=jnp.float32)
  return out


def torch_linear_init(fan_in: int):
  """Kernel and bias initialisers of a default torch.nn.Linear (U(+-1/sqrt(fan_in)))."""
  bound = 1.0 / math.sqrt(fan_in)
  return uniform_init(bound), uniform_init(bound)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def scale_gradient(x, scale: float):
  """Identity forward; multiplies the incoming gradient by `scale` (fairseq's GradMultiply)."""
  return x


def _scale_fwd(x, scale):
  return x, None


def _scale_bwd(scale, _, g):
  return (g * scale,)


scale_gradient.defvjp(_scale_fwd, _scale_bwd)


def gelu(x):
  """Exact GELU, `x / 2 * (1 + erf(x / sqrt(2)))`: torch.nn.GELU's formula (transformers' "gelu").

  Any shape; computed in float32 (as torch does for bfloat16) and returned in x's dtype. `jax.nn.gelu(
  approximate=False)` computes the same through erfc, which XLA:CPU expands into ~64 ops per element; erf is one
  (a rational polynomial): within 1e-6 of both, forward 2.6x and backward 1.4x faster on CPU (benchmark_kernels.py).
  """
  y = x.astype(jnp.float32)
  return (0.5 * y * (1.0 + jax.lax.erf(y * math.sqrt(0.5)))).astype(x.dtype)
