"""The utterance index of a data config (`config.data` of a training config, or evaluate.py's flags)."""

from data_pipelines import storage
from data_pipelines.errors import DataConfigError
from data_pipelines.sources import AudioIndex


def build_index(data, split: str | None = None) -> AudioIndex:
  """The utterance index of `config.data` (generated corpus, LibriSpeech folder, fairseq manifest or TFDS).

  Args:
    data: an object with attributes source ("corpus", "librispeech", "manifest", "tfds"), path (local or `gs://`,
      except for "tfds"), split, tfds_name and optionally labels ("ltr", "wrd", "auto") and languages
      (comma-separated language names to keep; "" keeps all), e.g. `config.data` of a training config.
    split: comma-separated splits instead of `data.split` (e.g. the eval split).
  """
  index = _source_index(data, data.split if split is None else split)
  languages = [name for name in (getattr(data, "languages", "") or "").split(",") if name]
  return select_languages(index, languages) if languages else index


def select_languages(index: AudioIndex, languages) -> AudioIndex:
  """The utterances of `languages` (names as in `index.languages`); an absent language is a config error."""
  present = sorted(set(index.languages))
  missing = sorted(set(languages) - set(present))
  if missing:
    raise DataConfigError(f"config.data.languages={','.join(languages)!r}: no utterances of {missing} in this split; "
                     f"its languages are {present}")
  wanted = set(languages)
  return index.select([i for i, name in enumerate(index.languages) if name in wanted])


def _source_index(data, split: str) -> AudioIndex:
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

    path = data.path if data.path.endswith(".tsv") or not splits else storage.join(data.path, f"{splits[0]}.tsv")
    return read_manifest(path, labels=getattr(data, "labels", "auto") or None)
  if data.source == "tfds":
    from data_pipelines.tfds_source import tfds_index  # pylint: disable=g-import-not-at-top

    return tfds_index(data.tfds_name, split=split, data_dir=data.path or None)
  raise ValueError(f"config.data.source={data.source!r}: choose 'corpus', 'librispeech', 'manifest' or 'tfds'")
