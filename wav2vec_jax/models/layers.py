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


def layer_norm(cfg, name: str | None, axis_name: str = "embed", epsilon: float | None = None) -> nn.LayerNorm:
  """LayerNorm computed in float32 with a two-pass variance, as torch does (name None inside `setup`)."""
  return nn.LayerNorm(
      epsilon=cfg.layer_norm_eps if epsilon is None else epsilon, dtype=jnp.float32, param_dtype=cfg.weight_dtype,
      use_fast_variance=False, scale_init=partitioned(nn.initializers.ones, (axis_name,)),
      bias_init=partitioned(nn.initializers.zeros, (axis_name,)), name=name)


def dense(cfg, features: int, names: tuple[str, str], name: str, kernel_init=None, bias_init=None,
          dtype=None) -> nn.Dense:
  """nn.Dense with logical names `names = (in_axis, out_axis)`; default init N(0, initializer_range), zero bias."""
  kernel_init = kernel_init or nn.initializers.normal(cfg.initializer_range)
  bias_init = bias_init or nn.initializers.zeros
  return nn.Dense(features, dtype=dtype or cfg.compute_dtype, param_dtype=cfg.weight_dtype,
                  kernel_init=partitioned(kernel_init, names), bias_init=partitioned(bias_init, (names[1],)),
                  name=name)


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
  """Exact (erf) GELU, as torch.nn.GELU / transformers' "gelu"."""
  return jax.nn.gelu(x, approximate=False)
