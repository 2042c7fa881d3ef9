r"""Memory of a BASE CTC forward pass against audio length: whole-file passes (per-head or batched attention) and
`Recognizer`'s fixed windows.

  python experiments/benchmark_memory.py                          # 1, 2, 4, 8, 16, 30 minutes
  python experiments/benchmark_memory.py --minutes=1,4 --variant=large

XLA's compiled memory analysis of `model.apply` on one file of each length (nothing is run, so lengths beyond this
machine's memory can be measured): temporary buffers, and the peak estimate (temporaries + parameters + input +
output). The per-head attention holds one head's block of queries' scores (`transformer.QUERY_BLOCK`), so it grows
linearly with the frames; the batched one holds every head's full `[frames, frames]` scores. `Recognizer` runs
`--batch_size` windows of `--chunk_s` at a time, whatever the file's length. Prints one JSON line per case.
"""

import json
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import jax  # noqa: E402  pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # noqa: E402  pylint: disable=g-import-not-at-top

from wav2vec_jax.models import Wav2Vec2ForCTC, get_variant  # noqa: E402  pylint: disable=g-import-not-at-top

flags.DEFINE_list("minutes", ["1", "2", "4", "8", "16", "30"], "Audio lengths in minutes.")
flags.DEFINE_string("variant", "base", "Model variant.")
flags.DEFINE_list("impls", ["per_head", "batched"], "Attention implementations of the whole-file pass.")
flags.DEFINE_float("chunk_s", 20.0, "Recognizer window seconds.")
flags.DEFINE_integer("batch_size", 4, "Recognizer windows per pass.")
flags.DEFINE_string("dtype", "float32", "Compute dtype.")


def compiled_memory(model, params, samples: int, batch: int = 1) -> dict:
  """GB of XLA's memory analysis of `model.apply` on `[batch, samples]` float32 audio."""
  audio = jax.ShapeDtypeStruct((batch, samples), jnp.float32)
  analysis = jax.jit(model.apply).lower(params, audio).compile().memory_analysis()
  gb = lambda n: round(n / 2**30, 3)
  return {"temp_gb": gb(analysis.temp_size_in_bytes),
          "peak_gb": gb(analysis.temp_size_in_bytes + analysis.argument_size_in_bytes +
                        analysis.output_size_in_bytes - analysis.alias_size_in_bytes)}


def main(argv):
  del argv
  f = flags.FLAGS
  for impl in f.impls:
    model = Wav2Vec2ForCTC(get_variant(f.variant, attention_impl=impl, pos_conv_impl="conv", dtype=f.dtype))
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 16000)))
    for minutes in f.minutes:
      row = {"case": "whole file", "variant": f.variant, "attention": impl, "minutes": float(minutes)}
      row.update(compiled_memory(model, params, int(float(minutes) * 60 * 16000)))
      print(json.dumps(row), flush=True)
  model = Wav2Vec2ForCTC(get_variant(f.variant, pos_conv_impl="conv", dtype=f.dtype))
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 16000)))
  row = {"case": "Recognizer windows (any length)", "variant": f.variant, "chunk_s": f.chunk_s,
         "batch_size": f.batch_size}
  row.update(compiled_memory(model, params, int(f.chunk_s * 16000), f.batch_size))
  print(json.dumps(row), flush=True)


if __name__ == "__main__":
  app.run(main)
