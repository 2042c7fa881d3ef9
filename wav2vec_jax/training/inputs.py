"""What the loop reads: the utterance index of `config.data`, the CTC vocabulary, and the train/eval iterators."""

import dataclasses
import json

import numpy as np
from absl import logging

from data_pipelines import pipeline
from data_pipelines import storage
from data_pipelines.source_config import build_index
from data_pipelines.sources import AudioIndex
from data_pipelines.vocab import Vocab

VOCAB_FILE = "vocab.json"  # written next to the checkpoints (Hugging Face format, blank = id 0)
INPUT_FILE = "input.json"  # the validation InputConfig (sample rate, normalisation, batching)


def save_input_config(path: str, config: pipeline.InputConfig) -> None:
  """Writes an InputConfig as JSON (read back by `load_input_config`)."""
  storage.write_text(path, json.dumps(dataclasses.asdict(config), indent=2))


def load_input_config(path: str) -> pipeline.InputConfig:
  """Reads a JSON InputConfig written by `save_input_config`."""
  return pipeline.InputConfig.from_dict(json.loads(storage.Path(path).read_text()))


def labelled_subset(index: AudioIndex, seconds: float, seed: int) -> AudioIndex:
  """A fixed random subset of about `seconds` of audio (fairseq's 10 min / 1 h / 10 h splits; 0: everything).

  Utterances are taken in a seeded random order until the budget is reached, so the same seed gives the same
  subset on every host and every relaunch.
  """
  if seconds <= 0:
    return index
  order = np.random.default_rng([seed, 7]).permutation(len(index))
  lengths = index.num_samples() / 16000.0
  keep = order[np.cumsum(np.maximum(lengths[order], 0)) <= seconds]
  if keep.size == 0:
    raise ValueError(f"config.data.train_seconds={seconds}: shorter than any utterance")
  logging.info("labelled subset: %d of %d utterances, %.1f s", keep.size, len(index), lengths[keep].sum())
  return index.select(np.sort(keep))


def load_vocab(config, workdir: str, init_dir: str | None) -> tuple[Vocab, str]:
  """The CTC vocabulary and where it came from, first found of: the workdir's (a resumed run), `config.data.vocab`
  (dict.ltr.txt or vocab.json), the initial checkpoint's `vocab.json`, the training transcripts (letters by
  frequency)."""
  for path in (storage.join(workdir, VOCAB_FILE), config.data.get("vocab", ""),
               storage.join(init_dir, VOCAB_FILE) if init_dir else ""):
    if path and storage.Path(path).exists():
      logging.info("vocabulary from %s", path)
      return Vocab.load(path), path
  index = build_index(config.data)
  if index.transcripts is None:
    raise ValueError(f"config.data ({config.data.source} {config.data.path or ''} {config.data.split}) has no "
                     "transcripts: fine-tuning needs labelled data, or a vocabulary in config.data.vocab")
  return Vocab.from_transcripts(t for t in index.transcripts if t), "built from the training transcripts"


def make_inputs(config, mode: str, batch_multiple: int, vocab: Vocab | None, process_index: int, process_count: int):
  """(train iterator, eval iterator or None) for the task's input mode."""
  fields = config.data.input.to_dict()
  fields.update(mode=mode, batch_multiple=batch_multiple)
  train_config = pipeline.InputConfig.from_dict(fields)
  index = labelled_subset(build_index(config.data), config.data.get("train_seconds", 0), config.data.input.seed)
  train = pipeline.make_iterator(index, train_config, vocab=vocab, process_index=process_index,
                                 process_count=process_count)
  eval_split = config.data.get("eval_split", "")
  if not eval_split:
    return train, None
  eval_fields = dict(fields, shuffle=False, num_epochs=1, drop_remainder=False, multilingual_alpha=None,
                     batch_multiple=batch_multiple // max(config.optim.grad_accum, 1))
  evaluation = pipeline.make_iterator(build_index(config.data, eval_split), pipeline.InputConfig.from_dict(eval_fields),
                                      vocab=vocab, process_index=process_index, process_count=process_count)
  return train, evaluation
