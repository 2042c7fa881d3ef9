"""`evaluate_checkpoint`: WER and CER of a saved CTC model (ours, Hugging Face or fairseq) on a split of any source,
read and scored exactly as the trainer's validation does (`inference/evaluation.py`)."""

import dataclasses
import types

import jax
import numpy as np
from absl import logging

from data_pipelines import pipeline, storage
from data_pipelines.source_config import build_index
from wav2vec_jax.inference.evaluation import Evaluation, Evaluator
from wav2vec_jax.inference.recognizer import checkpoint_folder, load_ctc_model
from wav2vec_jax.training import inputs, partitioning


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
  model, variables, vocabulary = load_ctc_model(checkpoint, vocab)
  saved = storage.join(checkpoint_folder(checkpoint), inputs.INPUT_FILE)
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
