r"""XLSR at small scale, end to end: multilingual pre-training with language sampling p_l ∝ (n_l/N)^α and one shared
quantizer, then CTC fine-tuning on all languages and on the least-represented one, scored per language.

  python experiments/xlsr.py                        # workdir /tmp/wav2vec_jax_xlsr, ~12 min on 2 CPU cores
  python experiments/xlsr.py --alpha_configs=experiments/configs/pretrain.py:xlsr_tiny   # one α only

The corpus's 8 languages are made unequal for pre-training (`pretrain.LOW_RESOURCE`: Czech cut to 60 s, Polish to
180 s, the others ~550 s each), and each pre-training config of --alpha_configs (α = 0.5: `xlsr_tiny`, α = 1.0:
`xlsr_tiny_natural`) gives one run:

  <workdir>/alpha<α>/pretrain        multilingual pre-training on the unequal mix
  <workdir>/alpha<α>/finetune_all    CTC on the labelled train split of all languages (finetune.py:xlsr_tiny)
  <workdir>/alpha<α>/finetune_<L>    CTC on the least-represented language L alone (finetune.py:xlsr_tiny_<L>)
  <workdir>/alpha<α>/eval_*          greedy test-split scores (hypotheses.jsonl, summary.json)
  <workdir>/alpha<α>/result.json     this α's shares and scores (all of the run's α together: <workdir>/xlsr.json)

Every stage resumes or is skipped when run again. Ends by printing each language's pre-training share and its
test CER per α, and writes `<workdir>/xlsr.json`.
"""

import json
import os
import sys
import time

from absl import app, flags, logging

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout

from experiments.configs import finetune as finetune_configs  # noqa: E402  pylint: disable=g-import-not-at-top
from experiments.configs import pretrain as pretrain_configs  # noqa: E402  pylint: disable=g-import-not-at-top
from wav2vec_jax.training import runtime  # noqa: E402  pylint: disable=g-import-not-at-top

flags.DEFINE_string("workdir", "/tmp/wav2vec_jax_xlsr", "Where every run writes (local or gs://).")
flags.DEFINE_list("alpha_configs", ["xlsr_tiny", "xlsr_tiny_natural"],
                  "Pre-training variants of experiments/configs/pretrain.py, one run each.")
flags.DEFINE_integer("pretrain_steps", 0, "Pre-training updates (0: the config's).")
flags.DEFINE_integer("finetune_steps", 0, "Fine-tuning updates (0: the config's).")
flags.DEFINE_integer("seed", 0, "Seed of initialisation, masks and data order of every run (the mix stays the same); "
                     "a non-zero seed writes to alpha<α>_seed<seed>.")
flags.DEFINE_string("compilation_cache_dir", os.path.expanduser("~/.cache/wav2vec_jax/xla"),
                    "Persistent XLA compilation cache (empty: off).")


def _low_resource_language() -> str:
  """The first language of `pretrain.LOW_RESOURCE` (the least-represented one)."""
  return pretrain_configs.LOW_RESOURCE.split(",")[0].split("=")[0]


def pretraining_shares(config) -> dict[str, dict[str, float]]:
  """Per language of a pre-training config's training mix: its seconds and its sampling probability p_l."""
  from data_pipelines import sampling  # pylint: disable=g-import-not-at-top
  from data_pipelines.source_config import build_index  # pylint: disable=g-import-not-at-top
  from wav2vec_jax.training import inputs  # pylint: disable=g-import-not-at-top
  index = inputs.language_subset(build_index(config.data), config.data.language_seconds, config.data.input.seed)
  lengths = index.num_samples()
  sizes = sampling.language_sizes(index.languages, lengths, config.data.input.size_by)
  alpha = config.data.input.multilingual_alpha
  probabilities = sampling.language_probabilities(sizes, 1.0 if alpha is None else alpha)
  samples = sampling.language_sizes(index.languages, lengths, "samples")
  return {name: {"seconds": round(samples[name] / 16_000, 1), "p": round(probabilities[name], 4)} for name in sizes}


def run_alpha(variant: str, f) -> dict:
  """Pre-trains with `variant`, fine-tunes on all languages and on the least-represented one, scores both on the
  test split; returns (and writes to `<workdir>/alpha<α>/result.json`) {"alpha", "config", "seed", "shares",
  "all": summary, "<L>": summary, "seconds"}."""
  from data_pipelines import storage  # pylint: disable=g-import-not-at-top
  from wav2vec_jax.inference import checkpoint_eval  # pylint: disable=g-import-not-at-top
  from wav2vec_jax.training import loop  # pylint: disable=g-import-not-at-top

  start = time.perf_counter()
  config = pretrain_configs.get_config(variant)
  config.seed = f.seed
  if f.pretrain_steps:
    config.total_steps = f.pretrain_steps
  alpha = config.data.input.multilingual_alpha
  root = storage.join(storage.absolute(f.workdir), f"alpha{alpha:g}" + (f"_seed{f.seed}" if f.seed else ""))
  pre_dir = storage.join(root, "pretrain")
  logging.info("==== α=%g: multilingual pre-training (%s) -> %s", alpha, variant, pre_dir)
  loop.train_and_evaluate(config, pre_dir, raise_when_stopped=True)

  low = _low_resource_language()
  result = {"alpha": alpha, "config": variant, "seed": f.seed, "shares": pretraining_shares(config)}
  for name, recipe in (("all", "xlsr_tiny"), (low, f"xlsr_tiny_{low}")):
    tuned = finetune_configs.get_config(recipe)
    tuned.seed = f.seed
    if f.finetune_steps:
      tuned.total_steps = f.finetune_steps
    tuned.init_from = pre_dir
    out = storage.join(root, f"finetune_{name}")
    logging.info("==== α=%g: CTC fine-tuning on %s (%s) -> %s", alpha, name, recipe, out)
    loop.train_and_evaluate(tuned, out, raise_when_stopped=True)
    logging.info("==== α=%g: scoring the %s model on the test split", alpha, name)
    result[name] = checkpoint_eval.evaluate_once(storage.join(root, f"eval_{name}"), out, "corpus", "", "test",
                                                 languages=tuned.data.languages, progress=True)
  result["seconds"] = round(time.perf_counter() - start, 1)
  storage.write_text(storage.join(root, "result.json"), json.dumps(result, indent=2))
  return result


def table(results: list[dict]) -> str:
  """The per-language comparison as a Markdown table: pre-training seconds and share at each α, and the test CER
  of the all-language model and of the low-resource language's own model."""
  low = _low_resource_language()
  names = list(results[0]["shares"])
  head = ["language", "pre-training s"] + [f"p (α={r['alpha']:g})" for r in results] + [
      f"CER all-language model (α={r['alpha']:g})" for r in results]
  rows = [head, ["---"] * len(head)]
  for name in names:
    rows.append([name, f"{results[0]['shares'][name]['seconds']:.0f}"]
                + [f"{r['shares'][name]['p']:.3f}" for r in results]
                + [f"{r['all']['languages'][name]['cer']:.3f}" for r in results])
  rows.append(["all", ""] + [""] * len(results) + [f"{r['all']['cer']:.3f}" for r in results])
  lines = ["| " + " | ".join(row) + " |" for row in rows]
  lines.append("")
  lines.append(f"{low} fine-tuned on {low} alone, {low} test CER: "
               + ", ".join(f"α={r['alpha']:g} {r[low]['cer']:.3f} (WER {r[low]['wer']:.3f})" for r in results))
  return "\n".join(lines)


def _results_file(seed: int) -> str:
  return "xlsr.json" if not seed else f"xlsr_seed{seed}.json"


def run(f) -> list[dict]:
  """Every α of --alpha_configs in turn (the corpus generated first if missing); the results, as `run_alpha`
  returns them, also written to `<workdir>/xlsr.json`."""
  from data_pipelines import corpus, storage  # pylint: disable=g-import-not-at-top
  corpus.ensure_default_corpus()
  results = [run_alpha(variant, f) for variant in f.alpha_configs]
  storage.write_text(storage.join(storage.absolute(f.workdir), _results_file(f.seed)), json.dumps(results, indent=2))
  return results


def main(argv):
  del argv
  f = flags.FLAGS
  runtime.start_entry_point(f.compilation_cache_dir)
  import train  # pylint: disable=g-import-not-at-top  # experiments/train.py: the errors a run stops on
  results = runtime.stop_on(train.EXPECTED_ERRORS, run, f)
  print("\n" + table(results), flush=True)
  print(f"\nwall time {sum(r['seconds'] for r in results) / 60:.1f} min; results: "
        f"{os.path.join(f.workdir, _results_file(f.seed))}",
        flush=True)


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  app.run(main)
