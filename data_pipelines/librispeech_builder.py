"""A TFDS builder for LibriSpeech-layout folders given as a manual dir (the stock `librispeech` builder downloads).

    builder = build("/path/to/corpus", data_dir="/path/to/tfds")        # prepares librispeech_manual
    index = tfds_source.tfds_index("librispeech_manual", split="train", data_dir="/path/to/tfds")

Features match the stock `librispeech` builder (`speech` int16 at 16 kHz, `text`, `speaker_id`, `chapter_id`, `id`)
plus `language` (from a SPEAKERS.txt LANG column, see `sources.speaker_languages`). Every sub-folder of the manual
dir that holds speaker folders becomes a split ("train-clean-100" → "train_clean_100"). Audio is decoded, mixed to
mono and resampled to 16 kHz while preparing; bad files are skipped with a warning naming them.
"""

import os
import re

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from data_pipelines import audio as audio_lib
from data_pipelines import sources
from data_pipelines.errors import AudioInputError

NAME = "librispeech_manual"


def split_name(folder: str) -> str:
  """A TFDS split name for a folder name: "train-clean-100" → "train_clean_100"."""
  return re.sub(r"\W", "_", folder)


class LibrispeechManual(tfds.core.GeneratorBasedBuilder):
  """LibriSpeech-layout audio and transcripts from a manual dir."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Point manual_dir at a folder whose sub-folders are splits in LibriSpeech layout: "
      "SPLIT/SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac plus SPEAKER-CHAPTER.trans.txt (e.g. an extracted "
      "LibriSpeech/ folder, or the generated corpus of data_pipelines.corpus).")

  # TFDS 4.9's default code_path needs the `importlib_resources` backport for builders defined in a package, which
  # Python ≥ 3.9 installs do not pull in; the answer it would compute is this file.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    """This file (where TFDS looks for checksums and metadata)."""
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "speech": tfds.features.Audio(sample_rate=audio_lib.TARGET_SAMPLE_RATE, dtype=np.int16,
                                          file_format="flac"),
            "text": tfds.features.Text(),
            "speaker_id": np.str_,
            "chapter_id": np.str_,
            "id": np.str_,
            "language": np.str_,
        }),
        supervised_keys=("speech", "text"),
        metadata=tfds.core.MetadataDict(sample_rate=audio_lib.TARGET_SAMPLE_RATE),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    splits = sources.find_splits(manual_dir)
    if not splits:
      raise FileNotFoundError(f"{manual_dir}: no split folders in LibriSpeech layout. {self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    return {split_name(s): self._generate_examples(manual_dir, s) for s in splits}

  def _generate_examples(self, manual_dir: str, split: str):
    index = sources.librispeech_folder(manual_dir, split)
    for i, uid in enumerate(index.ids):
      try:
        if i in index.errors:
          raise index.errors[i]
        if index.transcripts[i] is None:
          raise AudioInputError("missing_transcript", index.name(i), "no transcript for this utterance")
        wave = audio_lib.load_waveform(index.name(i))
      except AudioInputError as e:
        logging.warning("%s: skipping bad input: %s", NAME, e)
        continue
      speaker, chapter = (uid.split("-") + ["", ""])[:2]
      yield uid, {
          "speech": np.clip(np.round(wave * 32768.0), -32768, 32767).astype(np.int16),
          "text": index.transcripts[i],
          "speaker_id": speaker,
          "chapter_id": chapter,
          "id": uid,
          "language": index.languages[i],
      }


def build(manual_dir: str | os.PathLike, data_dir: str | os.PathLike, *, file_format: str = "array_record"):
  """Prepares `librispeech_manual` from `manual_dir` into `data_dir`.

  Args:
    manual_dir: the LibriSpeech-layout folder.
    data_dir: the TFDS data dir to write.
    file_format: "array_record" (random access, what the pipeline prefers) or "tfrecord".

  Returns:
    The prepared builder.
  """
  builder = LibrispeechManual(data_dir=os.fspath(data_dir), file_format=file_format)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
  return builder
