"""`evaluate_checkpoint`: WER and CER of a saved CTC model (ours, Hugging Face or fairseq) on a split of any source,
read and scored exactly as the trainer's validation does (`inference/evaluation.py`)."""

import dataclasses
import os
import types

import jax
import numpy as np
from absl import logging

from data_pipelines import pipeline, storage
from data_pipelines.source_config import build_index
from data_pipelines.vocab import Vocab
from wav2vec_jax.inference.evaluation import Evaluation, Evaluator
from wav2vec_jax.interop.loading import load_pretrained
from wav2vec_jax.models.wav2vec2 import Wav2Vec2ForCTC
from wav2vec_jax.training import inputs, partitioning


def _folder(checkpoint: str) -> str:
  """The directory of a checkpoint directory or file."""
  return checkpoint if storage.Path(checkpoint).is_dir() else os.fspath(storage.Path(checkpoint).parent)


def _vocab(checkpoint: str, vocab_path: str | None) -> Vocab:
  folder = _folder(checkpoint)
  candidates = [vocab_path] if vocab_path else [storage.join(folder, "vocab.json"), storage.join(folder, "dict.ltr.txt")]
  for path in candidates:
    if path and storage.Path(path).exists():
      return Vocab.load(path)
  raise FileNotFoundError(f"{checkpoint}: no vocabulary found ({', '.join(candidates)}); pass one with --vocab "
                          "(a vocab.json or a fairseq dict.ltr.txt)")


def evaluate_checkpoint(checkpoint: str, source: str, path: str, split: str, *, tfds_name: str = "",
                        labels: str = "auto", vocab: str | None = None, batch_budget: int | None = None,
                        normalize: bool | None = None) -> Evaluation:
  """Greedy-decoded WER/CER of a CTC checkpoint.

  Args:
    checkpoint: a `save_pretrained` directory (e.g. a fine-tuning run's `<workdir>/best`), a training workdir, a
      Hugging Face directory or a fairseq `.pt`.
    source, path, split, tfds_name, labels: the data, as `config.data` of a training config.
    vocab: vocabulary file; default: `vocab.json` (or `dict.ltr.txt`) next to the checkpoint.
    batch_budget: samples per batch; default: the run's validation setting (`input.json` next to the checkpoint).
    normalize: per-utterance normalisation; default: the run's setting (else off).
  Returns:
    Evaluation: metrics {"wer", "cer", "loss_ctc", "utterances"} and one row per utterance.
  """
  model, variables = load_pretrained(checkpoint)
  if not isinstance(model, Wav2Vec2ForCTC):
    raise ValueError(f"{checkpoint}: a {type(model).__name__} has no CTC head; evaluate a fine-tuned checkpoint")
  vocabulary = _vocab(checkpoint, vocab)
  if vocabulary.size != model.config.vocab_size:
    raise ValueError(f"{checkpoint}: the CTC head has {model.config.vocab_size} outputs but the vocabulary has "
                     f"{vocabulary.size} symbols: pass the vocabulary the model was trained with (--vocab)")
  saved = storage.join(_folder(checkpoint), inputs.INPUT_FILE)
  config = inputs.load_input_config(saved) if storage.Path(saved).exists() else pipeline.InputConfig(
      mode="finetune", shuffle=False, num_epochs=1, drop_remainder=False, min_sample_size=0,
      max_sample_size=16_000 * 3600, batch_budget=1_600_000)
  overrides = {"batch_multiple": jax.device_count()}
  if batch_budget:
    overrides["batch_budget"] = batch_budget
  if normalize is not None:
    overrides["normalize"] = normalize
  config = dataclasses.replace(config, **overrides)
  logging.info("evaluating %s on %s %s %s (normalize=%s)", checkpoint, source, path, split, config.normalize)
  data_config = types.SimpleNamespace(source=source, path=path, split=split, tfds_name=tfds_name, labels=labels)
  data = pipeline.make_iterator(build_index(data_config), config, vocab=vocabulary,
                                process_index=jax.process_index(), process_count=jax.process_count())
  mesh = partitioning.make_mesh(-1, 1, 1)
  rules = partitioning.logical_axis_rules("data")
  with partitioning.activate(mesh, rules):
    params = jax.device_put(jax.tree_util.tree_map(np.asarray, variables["params"]),
                            jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    return Evaluator(model, data, vocabulary, partitioning.host_to_global(mesh, rules))(params)
