"""CTC vocabulary: building, encoding, decoding, and the fairseq / Hugging Face file formats."""

import json

import numpy as np
import pytest

from data_pipelines import vocab as vocab_lib
from data_pipelines.vocab import Vocab, VocabError

TEXTS = ["HELLO WORLD", "LE CAFÉ EST FERMÉ", "ÜBER ALLES"]


def test_ltr_format_matches_fairseq():
  assert vocab_lib.to_ltr("HI YOU") == "H I | Y O U |"
  assert vocab_lib.from_ltr("H I | Y O U |") == "HI YOU"
  assert vocab_lib.text_to_letters("A  B", trailing_delimiter=False) == ["A", "|", "B"]
  assert vocab_lib.to_ltr("") == ""


def test_from_transcripts_blank_first_and_frequency_order():
  v = Vocab.from_transcripts(TEXTS)
  assert v.tokens[:4] == ("<pad>", "<s>", "</s>", "<unk>")
  assert v.blank_id == v.pad_id == 0 and v.unk_id == 3
  assert set("HELOWRDCAFÉSTMÜB|") <= set(v.tokens)
  # Most frequent symbol first after the specials: "|" (one per word, 8 words) ties with nothing.
  assert v.tokens[4] == "|"
  counts = dict(zip(v.tokens, v.counts))
  assert counts["L"] == 6 and counts["|"] == 8


def test_encode_decode_round_trip_with_accents():
  v = Vocab.from_transcripts(TEXTS)
  for text in TEXTS:
    ids = v.encode(text)
    assert ids.dtype == np.int32 and ids.ndim == 1 and (ids > 0).all()
    assert ids[-1] == v.token_to_id("|")
    assert v.decode(ids) == text
  assert v.decode([0, v.token_to_id("H"), 0, v.token_to_id("E"), 1, 2]) == "HE"


def test_out_of_vocabulary_raises_naming_utterance_or_maps_to_unk():
  v = Vocab.from_transcripts(["ABC"])
  with pytest.raises(VocabError, match=r"utt-7.*'XZ'"):
    v.encode("AXZ B", name="utt-7")
  ids = v.encode("AX", on_unknown="unk")
  assert list(ids) == [v.token_to_id("A"), v.unk_id, v.token_to_id("|")]


def test_hf_round_trip(tmp_path):
  v = Vocab.from_transcripts(TEXTS)
  v.save_hf(tmp_path / "vocab.json")
  mapping = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
  assert mapping["<pad>"] == 0 and mapping["<s>"] == 1 and mapping["É"] == v.token_to_id("É")
  assert Vocab.load(tmp_path / "vocab.json").tokens == v.tokens


def test_fairseq_dict_swaps_s_and_pad(tmp_path):
  # fairseq's Dictionary: <s>=0 <pad>=1 </s>=2 <unk>=3, then the file's symbols; HF (and we) swap <s>/<pad>.
  (tmp_path / "dict.ltr.txt").write_text("| 94802\nE 51860\nT 38431\n", encoding="utf-8")
  v = Vocab.load(tmp_path / "dict.ltr.txt")
  assert v.tokens == ("<pad>", "<s>", "</s>", "<unk>", "|", "E", "T")
  assert v.counts[4:] == (94802, 51860, 38431)
  v.save_fairseq(tmp_path / "out.txt")
  assert (tmp_path / "out.txt").read_text(encoding="utf-8") == "| 94802\nE 51860\nT 38431\n"
  with pytest.raises(ValueError, match="SYMBOL COUNT"):
    (tmp_path / "bad.txt").write_text("E\n", encoding="utf-8")
    Vocab.load_fairseq(tmp_path / "bad.txt")


def test_invalid_vocabularies_rejected():
  with pytest.raises(ValueError, match="id 0"):
    Vocab(("A", "<pad>"))
  with pytest.raises(ValueError, match="duplicate"):
    Vocab(("<pad>", "A", "A"))
