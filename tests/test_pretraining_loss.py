"""Pieces of the pre-training loss checked on hand-made inputs: the codebook perplexity's gradient where an entry is
never chosen, and the contrastive accuracy's rule for frames whose logits are all equal (the whole loss is checked
against transformers in test_hf_parity.py)."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wav2vec_jax import losses
from wav2vec_jax.models import get_variant, quantizer


def test_prob_perplexity_has_a_finite_gradient_when_an_entry_is_never_chosen():
  # Steady audio at initialisation puts some codebook entries ~100 logits below the best in every frame: their
  # mean softmax is exactly 0 in float32. fairseq and transformers take log(p + 1e-7) there; xlogy's derivative at
  # 0 is NaN and made every update of such a batch a skipped one.
  torch = pytest.importorskip("torch")
  logits = np.random.RandomState(0).randn(2, 3, 2, 4).astype(np.float32)
  logits[..., 1] = -200.0  # entry 1 of each group: probability 0 everywhere
  valid = np.array([[True, True, False], [True, True, True]])
  ours, grad = jax.value_and_grad(lambda x: quantizer._perplexity(jax.nn.softmax(x, -1), jnp.asarray(valid)))(
      jnp.asarray(logits))
  x = torch.tensor(logits, requires_grad=True)
  probs = torch.softmax(x, -1)[torch.tensor(valid)]  # [valid slots, G, V]
  marginal = probs.sum(0) / int(valid.sum())
  theirs = torch.exp(-torch.sum(marginal * torch.log(marginal + 1e-7), dim=-1)).sum()  # transformers' formula
  theirs.backward()
  assert np.all(np.isfinite(np.asarray(grad)))
  np.testing.assert_allclose(float(ours), float(theirs), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(grad), x.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_accuracy_does_not_count_rows_whose_logits_are_all_equal():
  # fairseq: a masked frame is correct when its argmax is the positive and its logits are not all equal
  # (argmax == argmin), and every masked frame counts in the denominator.
  cfg = get_variant("tiny")
  quantized = jax.random.normal(jax.random.PRNGKey(0), (1, 4, cfg.final_dim))
  states = quantized.at[0, 2:].set(0.0)  # frames 2 and 3: zero predictions, every cosine 0, all logits equal
  ns = types.SimpleNamespace
  outputs = ns(valid=jnp.ones((1, 4), bool), projected_states=states, projected_quantized_states=quantized,
               quantizer=ns(codes=jnp.arange(8).reshape(1, 4, 2), prob_perplexity=jnp.float32(1.0),
                            code_perplexity=jnp.float32(1.0)),
               encoder=ns(feature_penalty=jnp.float32(0.0)))
  negatives = jnp.asarray([[[1, 2], [0, 2], [0, 1], [0, 1]]])
  _, metrics = losses.pretraining_loss(cfg, outputs, negatives)
  assert float(metrics["accuracy"]) == 0.5  # frames 0 and 1 (their own target is the closest), of 4
