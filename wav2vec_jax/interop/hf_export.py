"""A fine-tuned CTC checkpoint as a complete Hugging Face directory: the model (`config.json`, `model.safetensors`)
and the processor files (`vocab.json`, `tokenizer_config.json`, `special_tokens_map.json`,
`preprocessor_config.json`), so that `transformers.pipeline("automatic-speech-recognition", model=directory)` and
`Wav2Vec2Processor.from_pretrained(directory)` work on it as on a hub checkpoint."""

import json

from data_pipelines import storage
from data_pipelines.vocab import BOS, EOS, PAD, UNK, WORD_DELIMITER
from wav2vec_jax.interop.convert import export_hf

SAMPLE_RATE = 16_000


def processor_files(vocab, *, normalize: bool, attention_mask: bool) -> dict[str, dict]:
  """The processor's files as transformers' `Wav2Vec2Processor.save_pretrained` writes them.

  Args:
    vocab: the model's `Vocab` (blank `<pad>` = id 0, `|` between words).
    normalize: the feature extractor's `do_normalize` (zero mean, unit variance per utterance).
    attention_mask: `return_attention_mask` (transformers passes masks to layer-norm encoders, not to group-norm
      BASE ones).

  Returns:
    File name -> its JSON contents.
  """
  specials = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD, "unk_token": UNK}
  return {
      "vocab.json": {token: i for i, token in enumerate(vocab.tokens)},
      "special_tokens_map.json": specials,
      "tokenizer_config.json": {**specials, "word_delimiter_token": WORD_DELIMITER, "do_lower_case": False,
                                "replace_word_delimiter_char": " ", "tokenizer_class": "Wav2Vec2CTCTokenizer",
                                "processor_class": "Wav2Vec2Processor"},
      "preprocessor_config.json": {"feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
                                   "sampling_rate": SAMPLE_RATE, "padding_side": "right", "padding_value": 0.0,
                                   "do_normalize": bool(normalize), "return_attention_mask": bool(attention_mask),
                                   "processor_class": "Wav2Vec2Processor"},
  }


def export_ctc(checkpoint: str, directory: str) -> list[str]:
  """Writes a CTC checkpoint as a transformers `Wav2Vec2ForCTC` directory with its processor.

  Args:
    checkpoint: a CTC checkpoint `Recognizer` reads: a fine-tuning run's `<workdir>/best` (with its `vocab.json`
      and `input.json`), a training workdir, a Hugging Face directory or a fairseq `.pt`.
    directory: the output folder (local or gs://), created if missing.

  Returns:
    The paths written.
  """
  from wav2vec_jax.inference.recognizer import input_normalization, load_ctc_model  # pylint: disable=g-import-not-at-top
  model, variables, vocab = load_ctc_model(checkpoint)
  cfg = model.config
  export_hf(directory, variables["params"], cfg, "Wav2Vec2ForCTC",
            extra_config={"vocab_size": vocab.size, "pad_token_id": vocab.pad_id,
                          "bos_token_id": vocab.tokens.index(BOS) if BOS in vocab.tokens else None,
                          "eos_token_id": vocab.tokens.index(EOS) if EOS in vocab.tokens else None})
  written = [storage.join(directory, "config.json"), storage.join(directory, "model.safetensors")]
  files = processor_files(vocab, normalize=input_normalization(checkpoint, model),
                          attention_mask=cfg.feat_extract_norm == "layer")
  for name, contents in files.items():
    path = storage.join(directory, name)
    storage.write_text(path, json.dumps(contents, indent=2, ensure_ascii=False))
    written.append(path)
  return written
