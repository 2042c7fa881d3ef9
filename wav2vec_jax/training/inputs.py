"""What the loop reads: the utterance index of `config.data`, the CTC vocabulary, and the train/eval iterators."""

import os

import numpy as np
from absl import logging

from data_pipelines import pipeline
from data_pipelines.sources import AudioIndex
from data_pipelines.vocab import Vocab

VOCAB_FILE = "vocab.json"  # written next to the checkpoints (Hugging Face format, blank = id 0)


def build_index(data, split: str | None = None) -> AudioIndex:
  """The utterance index of `config.data` (generated corpus, LibriSpeech folder, fairseq manifest or TFDS).

  Args:
    data: `config.data` (source, path, split, tfds_name).
    split: comma-separated splits instead of `data.split` (e.g. the eval split).
  """
  split = data.split if split is None else split
  splits = [s for s in split.split(",") if s]
  if data.source == "corpus":
    from data_pipelines import corpus  # pylint: disable=g-import-not-at-top
    from data_pipelines.sources import librispeech_folder  # pylint: disable=g-import-not-at-top

    return librispeech_folder(data.path or corpus.ensure_default_corpus(), splits)
  if data.source == "librispeech":
    from data_pipelines.sources import librispeech_folder  # pylint: disable=g-import-not-at-top

    return librispeech_folder(data.path, splits or None)
  if data.source == "manifest":
    from data_pipelines.manifest import read_manifest  # pylint: disable=g-import-not-at-top

    path = data.path if not splits else os.path.join(data.path, f"{splits[0]}.tsv")
    return read_manifest(path, labels=data.get("labels", "auto") or None)
  if data.source == "tfds":
    from data_pipelines.tfds_source import tfds_index  # pylint: disable=g-import-not-at-top

    return tfds_index(data.tfds_name, split=split, data_dir=data.path or None)
  raise ValueError(f"config.data.source={data.source!r}: choose 'corpus', 'librispeech', 'manifest' or 'tfds'")


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
  for path in (os.path.join(workdir, VOCAB_FILE), config.data.get("vocab", ""),
               os.path.join(init_dir, VOCAB_FILE) if init_dir else ""):
    if path and os.path.exists(path):
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
