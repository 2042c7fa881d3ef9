"""What the loop reads: the utterance index of `config.data`, the CTC vocabulary, and the train/eval iterators."""

import dataclasses
import json

import numpy as np
from absl import logging

from data_pipelines import pipeline
from data_pipelines import storage
from data_pipelines.errors import DataConfigError
from data_pipelines.source_config import build_index
from data_pipelines.sources import AudioIndex
from data_pipelines.vocab import Vocab

VOCAB_FILE = "vocab.json"  # written next to the checkpoints (Hugging Face format, blank = id 0)
INPUT_FILE = "input.json"  # the validation InputConfig (sample rate, normalisation, batching)
# Validation and evaluation score every utterance they can read: no length filter or bucket length of the training
# input applies, and a reference character outside the vocabulary is `<unk>` in the labels (the loss) and scored as
# written (WER, CER). What cannot be scored is counted (`Evaluation.not_scored`).
EVAL_INPUT = {"min_sample_size": 0, "max_sample_size": None, "bucket_lengths": (), "on_unknown": "unk"}


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
  keep = _take_seconds(index, np.arange(len(index)), seconds, seed)
  if keep.size == 0:
    raise DataConfigError(f"config.data.train_seconds={seconds}: shorter than any utterance")
  logging.info("labelled subset: %d of %d utterances, %.1f s", keep.size, len(index), _seconds(index, keep))
  return index.select(np.sort(keep))


def parse_language_seconds(text: str) -> dict[str, float]:
  """"cs=60,pl=180" -> {"cs": 60.0, "pl": 180.0} (config.data.language_seconds)."""
  caps = {}
  for item in text.split(","):
    name, _, value = (part.strip() for part in item.partition("="))
    try:
      seconds = float(value)
    except ValueError:
      seconds = 0.0
    if not name or not seconds > 0:
      raise DataConfigError(f"config.data.language_seconds={text!r}: {item.strip()!r} is not LANGUAGE=SECONDS with "
                       "SECONDS > 0 (e.g. 'cs=60,pl=180')")
    caps[name] = seconds
  return caps


def language_subset(index: AudioIndex, language_seconds: str, seed: int) -> AudioIndex:
  """Caps the audio of some languages at a fixed random subset of about the given seconds each (a low-resource
  language in a multilingual mix); the other languages are kept whole.

  Args:
    index: the training utterances.
    language_seconds: "LANGUAGE=SECONDS,..." (config.data.language_seconds); "" keeps everything.
    seed: the same seed gives the same subset on every host and relaunch.
  """
  if not language_seconds:
    return index
  caps = parse_language_seconds(language_seconds)
  names = np.asarray(index.languages, dtype=object)
  unknown = sorted(set(caps) - set(index.languages))
  if unknown:
    raise DataConfigError(f"config.data.language_seconds={language_seconds!r}: no training utterances of {unknown}; "
                     f"the languages are {sorted(set(index.languages))}")
  keep = [np.flatnonzero(~np.isin(names, list(caps)))]
  for name, seconds in sorted(caps.items()):
    chosen = _take_seconds(index, np.flatnonzero(names == name), seconds, seed)
    if chosen.size == 0:
      raise DataConfigError(f"config.data.language_seconds: {name}={seconds:g} is shorter than any of its utterances")
    logging.info("language %s: %d utterances, %.1f s", name, chosen.size, _seconds(index, chosen))
    keep.append(chosen)
  return index.select(np.sort(np.concatenate(keep)))


def _seconds(index: AudioIndex, positions: np.ndarray) -> float:
  return float(np.maximum(index.num_samples()[positions], 0).sum() / 16000.0)


def _take_seconds(index: AudioIndex, positions: np.ndarray, seconds: float, seed: int) -> np.ndarray:
  """`positions` in a seeded random order, up to `seconds` of audio in all."""
  order = positions[np.random.default_rng([seed, 7]).permutation(len(positions))]
  lengths = np.maximum(index.num_samples()[order], 0) / 16000.0
  return order[np.cumsum(lengths) <= seconds]


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
  seed = config.data.input.seed
  index = language_subset(build_index(config.data), config.data.get("language_seconds", ""), seed)
  index = labelled_subset(index, config.data.get("train_seconds", 0), seed)
  train = pipeline.make_iterator(index, train_config, vocab=vocab, process_index=process_index,
                                 process_count=process_count)
  eval_split = config.data.get("eval_split", "")
  if not eval_split:
    return train, None
  eval_fields = dict(fields, shuffle=False, num_epochs=1, drop_remainder=False, multilingual_alpha=None,
                     batch_multiple=batch_multiple // max(config.optim.grad_accum, 1), **EVAL_INPUT)
  evaluation = pipeline.make_iterator(build_index(config.data, eval_split), pipeline.InputConfig.from_dict(eval_fields),
                                      vocab=vocab, process_index=process_index, process_count=process_count)
  return train, evaluation
