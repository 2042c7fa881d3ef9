"""Bad-input checks and length filters over an `AudioIndex`, before any batch is planned.

Everything decidable from headers and transcripts is decided here, once, so that a bad file costs nothing at train
time: unreadable or empty files, clips too short for the conv encoder, wrong sample rates (when resampling is off),
multichannel files (when mixdown is off), missing transcripts and characters outside the vocabulary. Each becomes an
`AudioInputError` naming the file, handled by the `on_error` switch ("skip": counted under `skipped/<kind>`;
"raise": stop). Length filters are not errors; they are counted under `filtered/<reason>`.
"""

import dataclasses

import numpy as np

from data_pipelines import audio as audio_lib
from data_pipelines.errors import AudioInputError, Counters, handle
from data_pipelines.sources import AudioIndex
from data_pipelines.vocab import Vocab, VocabError


@dataclasses.dataclass(frozen=True, eq=False)
class CheckedIndex:
  """An index whose every item passed the checks and filters.

  Attributes:
    index: the surviving utterances.
    num_samples: `[N]` int64 lengths at the target sample rate.
    labels: `[N]` int32 label-id arrays (fine-tuning), or None.
  """

  index: AudioIndex
  num_samples: np.ndarray
  labels: tuple[np.ndarray, ...] | None


def check_index(
    index: AudioIndex,
    *,
    counters: Counters,
    on_error: str = "skip",
    target_sample_rate: int = audio_lib.TARGET_SAMPLE_RATE,
    allow_resample: bool = True,
    mono_mixdown: bool = True,
    min_sample_size: int = 0,
    max_sample_size: int | None = None,
    vocab: Vocab | None = None,
    on_unknown: str = "raise",
) -> CheckedIndex:
  """Applies the bad-input policy and the length filters.

  Args:
    index: what a source listed.
    counters: receives `skipped/<kind>`, `filtered/too_short`, `filtered/too_long` and `index/utterances`.
    on_error: "skip" or "raise" (see `errors.handle`).
    target_sample_rate: Hz.
    allow_resample: if False, another sample rate is an error.
    mono_mixdown: if False, a multichannel file is an error.
    min_sample_size: drop clips shorter than this (at the target rate); fairseq's `min_sample_size`.
    max_sample_size: drop clips longer than this, or None to keep them (pre-training crops them instead).
    vocab: if given, transcripts are required and encoded; characters outside it are errors.
    on_unknown: "raise" makes out-of-vocabulary characters bad input; "unk" maps them to `<unk>`.

  Returns:
    The `CheckedIndex`.

  Raises:
    AudioInputError: the first bad item, when `on_error == "raise"`.
  """
  lengths = index.num_samples(target_sample_rate)
  keep, labels = [], []
  for i in range(len(index)):
    error = _problem(index, i, lengths[i], target_sample_rate, allow_resample, mono_mixdown, vocab)
    label = None
    if error is None and vocab is not None:
      try:
        label = vocab.encode(index.transcripts[i], on_unknown=on_unknown, name=index.name(i))
      except VocabError as e:
        error = AudioInputError("out_of_vocabulary", index.name(i), str(e).split(": ", 1)[-1])
    if error is not None:
      handle(error, on_error, counters)
    elif lengths[i] < min_sample_size:
      counters.add("filtered/too_short")
    elif max_sample_size is not None and lengths[i] > max_sample_size:
      counters.add("filtered/too_long")
    else:
      keep.append(i)
      labels.append(label)
  counters.add("index/utterances", len(keep))
  keep = np.asarray(keep, np.int64)
  return CheckedIndex(index.select(keep), lengths[keep], tuple(labels) if vocab is not None else None)


def _problem(index, i, length, target_sample_rate, allow_resample, mono_mixdown, vocab) -> AudioInputError | None:
  """The first problem of item i, or None."""
  name = index.name(i)
  if i in index.errors:
    return index.errors[i]
  if index.frames[i] == 0:
    return AudioInputError("too_short", name, "zero-length clip")
  if length < audio_lib.RECEPTIVE_FIELD:
    return AudioInputError("too_short", name, f"{length} samples at {target_sample_rate} Hz, fewer than the "
                           f"{audio_lib.RECEPTIVE_FIELD}-sample receptive field")
  if not allow_resample and index.sample_rates[i] != target_sample_rate:
    return AudioInputError("sample_rate", name, f"{index.sample_rates[i]} Hz, expected {target_sample_rate} Hz "
                           "(resampling disabled)")
  if not mono_mixdown and index.channels[i] > 1:
    return AudioInputError("multichannel", name, f"{index.channels[i]} channels and mono mixdown is disabled")
  if vocab is not None and (index.transcripts is None or index.transcripts[i] is None):
    return AudioInputError("missing_transcript", name, "no transcript for this utterance")
  if vocab is not None and not index.transcripts[i].strip():
    return AudioInputError("empty_transcript", name, "the transcript is empty: CTC needs at least one label "
                           "(fix or remove the line in the transcript file)")
  return None
