"""`evaluate_checkpoint`: WER and CER of a saved CTC model (ours, Hugging Face or fairseq) on a split of any source,
read and scored exactly as the trainer's validation does (`inference/evaluation.py`)."""

import dataclasses
import types

import jax
import numpy as np
from absl import logging

from data_pipelines import pipeline, storage
from data_pipelines.source_config import build_index
from wav2vec_jax.inference import beam, scoring
from wav2vec_jax.inference.evaluation import Evaluation, Evaluator
from wav2vec_jax.inference.recognizer import checkpoint_folder, input_normalization, load_ctc_model
from wav2vec_jax.training import inputs, partitioning


def evaluate_checkpoint(checkpoint: str, source: str, path: str, split: str, *, tfds_name: str = "",
                        labels: str = "auto", languages: str = "", vocab: str | None = None,
                        batch_budget: int | None = None, normalize: bool | None = None, lm: str | None = None,
                        beam_options: beam.BeamOptions | None = None, grid=(), progress: bool = False) -> Evaluation:
  """WER/CER of a CTC checkpoint, greedy or beam search (+ a KenLM n-gram).

  Args:
    checkpoint: a `save_pretrained` directory (e.g. a fine-tuning run's `<workdir>/best`), a training workdir, a
      Hugging Face directory or a fairseq `.pt`.
    source, path, split, tfds_name, labels, languages: the data, as `config.data` of a training config
      (languages: comma-separated languages kept; "" = all).
    vocab: vocabulary file; default: `vocab.json` (or `dict.ltr.txt`) next to the checkpoint.
    batch_budget: samples per batch; default: the run's validation setting (`input.json` next to the checkpoint).
    normalize: per-utterance normalisation; default: the run's setting, else the checkpoint's own record (Hugging
      Face's `preprocessor_config.json` `do_normalize`), else fairseq's convention (on for layer-norm encoders:
      LARGE, XLSR), as `Recognizer` decides it.
    lm: KenLM file (ARPA or binary) for beam search.
    beam_options: beam search settings; None and no `lm` and no `grid`: greedy decoding.
    grid: (lm_weight, word_score) pairs: the model runs once, each pair decodes its log-probs; the best WER's
      evaluation is returned, with the whole table in `metrics["grid"]` and the pair in `metrics["lm_weight"]`,
      `metrics["word_score"]`.
    progress: a progress bar over batches.
  Returns:
    Evaluation: metrics {"wer", "cer", "loss_ctc", "utterances", "not_scored", "not_scored_by_reason" ({reason:
    count}: utterances of the split that could not be scored: unreadable or too short for the conv encoder, an
    empty transcript, characters outside a vocabulary without `<unk>`), and where the split has several languages
    "languages": {name: {"wer", "cer", "utterances"}}} and one row per utterance (with its "language"). Every
    other utterance is scored, whatever its length: the run's length filters and bucket lengths do not apply.
  """
  model, variables, vocabulary = load_ctc_model(checkpoint, vocab)
  saved = storage.join(checkpoint_folder(checkpoint), inputs.INPUT_FILE)
  config = inputs.load_input_config(saved) if storage.Path(saved).exists() else pipeline.InputConfig(
      mode="finetune", shuffle=False, num_epochs=1, drop_remainder=False, batch_budget=1_600_000,
      normalize=input_normalization(checkpoint, model))
  overrides = dict(inputs.EVAL_INPUT, batch_multiple=jax.device_count())
  if batch_budget:
    overrides["batch_budget"] = batch_budget
  if normalize is not None:
    overrides["normalize"] = normalize
  config = dataclasses.replace(config, **overrides)
  logging.info("evaluating %s on %s %s %s (normalize=%s)", checkpoint, source, path, split, config.normalize)
  data_config = types.SimpleNamespace(source=source, path=path, split=split, tfds_name=tfds_name, labels=labels,
                                      languages=languages)
  index = build_index(data_config)
  data = pipeline.make_iterator(index, config, vocab=vocabulary,
                                process_index=jax.process_index(), process_count=jax.process_count())
  mesh = partitioning.make_mesh(-1, 1, 1)
  rules = partitioning.logical_axis_rules("data")
  with partitioning.activate(mesh, rules):
    params = jax.device_put(jax.tree_util.tree_map(np.asarray, variables["params"]),
                            jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    evaluator = Evaluator(model, data, vocabulary, partitioning.host_to_global(mesh, rules))
    if not (lm or beam_options or grid):
      return _report(by_language(evaluator(params, progress=progress), index))
    scored = evaluator.score(params, progress=progress)
  options = beam_options or beam.BeamOptions()
  decoder = beam.BeamSearchDecoder(vocabulary, lm, options)
  try:
    if not grid:
      return _report(by_language(scored.decode(decoder), index))
    table = []
    for lm_weight, word_score in grid:
      result = scored.decode(decoder, dataclasses.replace(options, lm_weight=lm_weight, word_score=word_score))
      table.append({"lm_weight": lm_weight, "word_score": word_score, "wer": result.metrics["wer"],
                    "cer": result.metrics["cer"], "result": result})
      logging.info("lm_weight %.3g word_score %.3g: WER %.4f CER %.4f", lm_weight, word_score,
                   result.metrics["wer"], result.metrics["cer"])
  finally:
    decoder.close()
  best = min(table, key=lambda r: (r["wer"], r["cer"]))
  best["result"].metrics.update(lm_weight=best["lm_weight"], word_score=best["word_score"],
                                grid=[{k: v for k, v in r.items() if k != "result"} for r in table])
  return _report(by_language(best["result"], index))


def _report(result: Evaluation) -> Evaluation:
  """Puts the reasons utterances were left out into the metrics, and warns when there are any."""
  result.metrics["not_scored_by_reason"] = dict(result.not_scored)
  if result.not_scored:
    logging.warning("%d utterances of the split were not scored (%s); the error rates cover the other %d. The "
                    "input pipeline's warnings above name the files.", sum(result.not_scored.values()),
                    ", ".join(f"{k} {v}" for k, v in sorted(result.not_scored.items())), len(result.rows))
  return result


def by_language(result: Evaluation, index) -> Evaluation:
  """Adds each row's "language" (from `index`, an `AudioIndex`) and, where there are several, the error rates of
  each language to `result.metrics["languages"]` ({name: {"wer", "cer", "utterances"}})."""
  language_of = dict(zip(index.ids, index.languages))
  for row in result.rows:
    row["language"] = language_of.get(row["id"], "")
  names = sorted({row["language"] for row in result.rows})
  if len(names) > 1:
    result.metrics["languages"] = {
        name: scoring.error_rates([r["reference"] for r in result.rows if r["language"] == name],
                                  [r["hypothesis"] for r in result.rows if r["language"] == name])
        for name in names}
  return result


HYPOTHESES_FILE, SUMMARY_FILE = "hypotheses.jsonl", "summary.json"


def evaluate_once(out_dir: str, checkpoint: str, source: str, path: str, split: str, **kwargs) -> dict:
  """Scores `checkpoint` (`evaluate_checkpoint`'s arguments) and writes the evaluation to `out_dir`, or reads the
  summary a previous call wrote there (a rerun of a multi-stage job skips it); returns the summary: the split and
  the metrics."""
  import json  # pylint: disable=g-import-not-at-top
  summary_path = storage.Path(out_dir) / SUMMARY_FILE
  if summary_path.exists():
    return json.loads(summary_path.read_text())
  result = evaluate_checkpoint(checkpoint, source, path, split, **kwargs)
  summary = {"split": split, **result.metrics}
  write_evaluation(out_dir, result, summary)
  return summary


def write_evaluation(out_dir: str, result: Evaluation, summary: dict) -> None:
  """Writes an evaluation to `out_dir` (local or gs://, created if missing): `hypotheses.jsonl`, one JSON row per
  utterance (id, reference, hypothesis, loss), and `summary.json` (`summary`, e.g. the split and the metrics)."""
  import json  # pylint: disable=g-import-not-at-top
  storage.Path(out_dir).mkdir(parents=True, exist_ok=True)
  storage.write_text(storage.join(out_dir, HYPOTHESES_FILE),
                     "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in result.rows))
  storage.write_text(storage.join(out_dir, SUMMARY_FILE), json.dumps(summary, indent=2))
