"""Input side of wav2vec_jax: audio sources, TFDS builders, manifests and the tf.data pipeline.

Modules (import them directly; this package imports nothing heavy on its own):
  audio       decode, mono mixdown, resampling, normalisation, crop/pad (numpy, plus tf wrappers)
  sources     `AudioIndex` (what every source returns) and LibriSpeech-layout folders
  manifest    fairseq `.tsv`/`.ltr`/`.wrd` manifests: read and write
  tfds_source TFDS datasets by name from a data_dir, random access
  librispeech_builder  TFDS builder that reads a LibriSpeech-layout manual dir
  checks      bad-input policy (skip and count, or raise) and length filters
  batching    budget-of-samples buckets with a small fixed set of shapes, per-epoch plans
  sampling    multilingual sampling p_l ∝ (n_l / N)^α
  pipeline    `InputConfig`, `make_iterator`: the tf.data pipeline with a resumable position
  benchmark_input  throughput / padding-waste benchmark
  synthetic   tiny tone datasets in LibriSpeech layout, for tests
  corpus      the generated multilingual eSpeak NG corpus, LibriSpeech layout: `corpus.ensure_default_corpus()`
"""
