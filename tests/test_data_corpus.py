"""The generated corpus through all three source paths (folder, TFDS builder, manifest) and the pipeline."""

import pytest
import tensorflow as tf

from data_pipelines import corpus, librispeech_builder, manifest, pipeline, sources, tfds_source
from data_pipelines.vocab import Vocab

tf.config.set_visible_devices([], "GPU")


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
  out = tmp_path_factory.mktemp("gen") / "corpus"
  config = corpus.CorpusConfig(hours=0.01, seed=3, speakers=corpus.SpeakerCounts(train=1, dev=1, test=1))
  corpus.generate_corpus(out, config, workers=2)
  return out, config


def _table(index):
  return {uid: (index.transcripts[i], index.languages[i], int(index.frames[i])) for i, uid in enumerate(index.ids)}


@pytest.mark.slow
def test_corpus_same_utterances_through_folder_builder_and_manifest(tiny_corpus, tmp_path):
  root, config = tiny_corpus
  librispeech_builder.build(root, tmp_path / "tfds")
  manifest.write_folder_manifests(root, tmp_path / "manifests")
  speakers = corpus.read_speakers(root)
  by_speaker = lambda uid: speakers[int(uid.split("-")[0])].language
  for split in corpus.SPLITS:
    folder = _table(sources.librispeech_folder(root, split))
    built = _table(tfds_source.tfds_index("librispeech_manual", split=split, data_dir=str(tmp_path / "tfds")))
    listed = _table(manifest.read_manifest(tmp_path / "manifests" / f"{split}.tsv", language=by_speaker))
    assert folder == built == listed and len(folder) > 0
    assert {lang for _, lang, _ in folder.values()} == set(config.languages)


@pytest.mark.slow
def test_corpus_fine_tuning_batches(tiny_corpus, tmp_path):
  root, config = tiny_corpus
  manifest.write_folder_manifests(root, tmp_path)
  vocab = Vocab.load(tmp_path / "dict.ltr.txt")
  index = sources.librispeech_folder(root, "train")
  cfg = pipeline.InputConfig(mode="finetune", batch_budget=400_000, num_buckets=3, min_sample_size=16_000,
                             max_sample_size=400_000, shuffle=False, drop_remainder=False, num_epochs=1)
  it = pipeline.make_iterator(index, cfg, vocab=vocab)
  seen = 0
  for batch in it:
    assert batch["waveform"].shape in it.shapes
    for r, u in enumerate(batch["utterance"]):
      if u >= 0:
        seen += 1
        n = batch["label_lengths"][r]
        assert vocab.decode(batch["labels"][r, :n]) == it.data.index.transcripts[u]
  assert seen == len(it.data.index) == it.counters()["index/utterances"]
  assert set(it.languages) == set(config.languages)
