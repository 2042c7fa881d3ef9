"""CTC fine-tuning from imported checkpoints through the one loop, in process: the run takes the checkpoint's
weights and vocabulary (Hugging Face directory, fairseq `.pt` + `dict.ltr.txt`, pre-training checkpoint with a
fresh head), and bad input (out-of-vocabulary characters, empty transcripts, labels longer than the frames, a
vocabulary that does not fit the imported head) is counted or named instead of training on garbage.

Each run is 3 updates of one 8-row batch shape (8 fake devices, one compile); the first update's loss is checked
against transformers' CTC loss on the same batch, so any imported weight that did not arrive moves it.
"""

import json
import os
import re

import jax
import numpy as np
import pytest

import e2e  # tests/e2e.py
import wav2vec_jax
from data_pipelines import synthetic
from data_pipelines.errors import AudioInputError
from data_pipelines.vocab import Vocab
from experiments.configs import finetune
from wav2vec_jax.interop.convert import CheckpointMismatchError
from wav2vec_jax.training import inputs, loop
import hf_reference as ref
from test_fairseq_import import _write_fairseq

torch = ref.torch
transformers = ref.transformers

SAMPLES = 24_000  # 1.5 s: the one bucket length; every clip is 1.0-1.5 s (49-74 frames, ~20 labels)
LETTERS = sorted(synthetic.ALPHABETS["en"])  # covers every synthetic English transcript
HF_VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, **{c: 5 + i for i, c in enumerate(LETTERS)}}


def _corpus(root, utterances_per_speaker: int = 4) -> list[synthetic.Utterance]:
  """A LibriSpeech-layout "train" folder of 2 speakers x `utterances_per_speaker` clips of 1.0-1.5 s."""
  return synthetic.write_librispeech_folder(root, split="train", utterances_per_speaker=utterances_per_speaker,
                                            seconds=(1.0, 1.5), seed=1)


def _config(data_path, init_from: str = "", vocab: str = "", on_error: str = "skip"):
  """The tiny fine-tuning recipe, sized to 3 updates of one `[8, SAMPLES]` batch; SpecAugment off so the first
  update's loss is a deterministic function of the initial weights."""
  c = finetune.get_config("tiny")
  c.init_from = init_from
  c.data.source, c.data.path, c.data.split, c.data.eval_split = "librispeech", str(data_path), "train", ""
  c.data.vocab = vocab
  c.data.input.batch_budget = jax.device_count() * SAMPLES
  c.data.input.max_sample_size = SAMPLES
  c.data.input.bucket_lengths = (SAMPLES,)
  c.data.input.on_error = on_error
  c.model.mask_time_prob = 0.0
  c.model.mask_channel_prob = 0.0
  c.total_steps = 3
  c.freeze_finetune_updates = 3  # only the head trains: the trunk ends as it was imported
  c.log_every = 1
  c.measure_peak_flops, c.plots = False, False
  c.async_checkpoints = False
  return c


def _metrics(workdir) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def _params(path) -> dict:
  return jax.tree_util.tree_map(np.asarray, wav2vec_jax.load_pretrained(str(path))[1]["params"])


def _first_batch(config, vocab: Vocab) -> dict:
  """The batch of the run's first update (the input pipeline is deterministic given its seed)."""
  data, _ = inputs.make_inputs(config, "finetune", jax.device_count() * config.optim.grad_accum, vocab, 0, 1)
  return next(data)


def _transformers_loss(reference, batch: dict) -> float:
  """transformers' CTC loss (sum over sentences, zero-infinity) per labelled sentence: the loop's `loss/ctc`."""
  rows = batch["label_lengths"] > 0  # rows the pipeline added to fill the batch have no labels and no loss
  labels = np.where(np.arange(batch["labels"].shape[1]) < batch["label_lengths"][:, None], batch["labels"], -100)
  reference.config.ctc_loss_reduction, reference.config.ctc_zero_infinity = "sum", True
  with torch.no_grad():
    out = reference(torch.tensor(batch["waveform"][rows]),
                    attention_mask=torch.tensor(batch["attention_mask"][rows].astype(np.int64)),
                    labels=torch.tensor(labels[rows].astype(np.int64)))
  return float(out.loss) / int(rows.sum())


def _save_hf_ctc(directory):
  """A random transformers Wav2Vec2ForCTC with a 32-symbol head and its tokenizer's vocab.json."""
  reference = ref.save_reference(directory, "base", "Wav2Vec2ForCTC", seed=2, vocab_size=len(HF_VOCAB))
  vocab_path = os.path.join(directory, "vocab.json")
  with open(vocab_path, "w") as f:
    json.dump(HF_VOCAB, f)
  transformers.Wav2Vec2CTCTokenizer(vocab_path, word_delimiter_token="|").save_pretrained(directory)
  return reference


def _flat(tree) -> dict:
  return {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _assert_trunk_equal(trained: dict, imported: dict):
  """Every trunk parameter of the trained model is the imported one (the model has no `masked_spec_embed` when
  SpecAugment is off, as transformers' model, so the imported trees may have more)."""
  ours, theirs = _flat(trained["wav2vec2"]), _flat(imported["wav2vec2"])
  assert len(ours) > 20 and not set(ours) - set(theirs), sorted(set(ours) - set(theirs))
  for name, value in ours.items():
    np.testing.assert_array_equal(value, theirs[name], err_msg=name)


def _assert_continues_from(workdir, config, reference, vocab: Vocab, imported: dict):
  """The run trained `imported` with `vocab`: its first loss is transformers' on the same batch, the trunk is
  unchanged (held by freeze_finetune_updates) and the head moved."""
  rows = _metrics(workdir)
  assert [r["step"] for r in rows] == [1, 2, 3]
  expected = _transformers_loss(reference, _first_batch(config, vocab))
  np.testing.assert_allclose(rows[0]["loss/ctc"], expected, rtol=1e-5)
  trained = _params(workdir)
  _assert_trunk_equal(trained, imported)
  moved = np.abs(trained["lm_head"]["kernel"] - imported["lm_head"]["kernel"]).max()
  assert moved > 1e-4, moved


def test_continues_from_huggingface_ctc_directory(tmp_path):
  _corpus(tmp_path / "data")
  reference = _save_hf_ctc(tmp_path / "hf")
  config = _config(tmp_path / "data", init_from=str(tmp_path / "hf"))
  workdir = tmp_path / "run"
  loop.train_and_evaluate(config, str(workdir))

  with open(workdir / "vocab.json") as f, open(tmp_path / "hf" / "vocab.json") as g:
    assert json.load(f) == json.load(g) == HF_VOCAB  # the directory's, not one built from the transcripts
  with open(workdir / "wav2vec_jax.json") as f:
    model_config = json.load(f)["model_config"]
  assert model_config["hidden_size"] == 64 and model_config["vocab_size"] == len(HF_VOCAB)  # the checkpoint's
  assert model_config["mask_time_prob"] == 0.0  # the config's regime, not the checkpoint's 0.65
  _assert_continues_from(workdir, config, reference, Vocab.load_hf(workdir / "vocab.json"), _params(tmp_path / "hf"))


def test_continues_from_fairseq_ctc_checkpoint_with_its_dictionary(tmp_path):
  _corpus(tmp_path / "data")
  reference = ref.save_reference(tmp_path / "hf", "base", "Wav2Vec2ForCTC", seed=3, vocab_size=len(HF_VOCAB))
  _write_fairseq(tmp_path / "checkpoint_best.pt", reference, "base", "Wav2Vec2ForCTC", legacy_args=False)
  # fairseq's dictionary: symbols by decreasing count, its specials implied (the head has 4 + 28 rows).
  symbols = ["|", *"ETAOINSHRDLUCMFWYPVBGKQJXZ", "'"]
  with open(tmp_path / "dict.ltr.txt", "w") as f:
    f.writelines(f"{s} {1000 - i}\n" for i, s in enumerate(symbols))
  config = _config(tmp_path / "data", init_from=str(tmp_path / "checkpoint_best.pt"),
                   vocab=str(tmp_path / "dict.ltr.txt"))
  workdir = tmp_path / "run"
  loop.train_and_evaluate(config, str(workdir))

  vocab = Vocab.load_hf(workdir / "vocab.json")
  assert vocab.tokens == ("<pad>", "<s>", "</s>", "<unk>", *symbols)  # fairseq's ids, blank (its <s>) at 0
  _assert_continues_from(workdir, config, reference, vocab, _params(tmp_path / "checkpoint_best.pt"))


def test_pretraining_checkpoint_gets_a_fresh_head_on_its_trunk(tmp_path):
  utterances = _corpus(tmp_path / "data")
  ref.save_reference(tmp_path / "hf", "base", "Wav2Vec2ForPreTraining", seed=4)
  config = _config(tmp_path / "data", init_from=str(tmp_path / "hf"))
  workdir = tmp_path / "run"
  loop.train_and_evaluate(config, str(workdir))

  vocab = Vocab.load_hf(workdir / "vocab.json")  # no vocabulary anywhere: built from the training transcripts
  assert vocab.tokens == Vocab.from_transcripts(u.text for u in utterances).tokens
  trained, imported = _params(workdir), _params(tmp_path / "hf")
  assert sorted(trained) == ["lm_head", "wav2vec2"]  # the quantizer and the pre-training heads are dropped
  head = trained["lm_head"]["kernel"]
  assert head.shape == (64, vocab.size) and np.all(np.isfinite(head)) and head.std() > 1e-3
  _assert_trunk_equal(trained, imported)
  assert all(np.isfinite(r["loss/ctc"]) and r["loss/ctc"] > 0 for r in _metrics(workdir))


def _optimiser_counts(workdir) -> dict[str, int]:
  """Adam's update count of each optimiser group ("trunk", "head") in the last checkpoint, read as saved."""
  counts = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(e2e.saved_item(str(workdir))["opt_state"])[0]:
    names = [str(getattr(p, "key", getattr(p, "idx", p))) for p in path]
    group = next((n for n in names if n in ("trunk", "head")), None)
    if group and names[-1] == "count" and group not in counts:  # the first count on the path is Adam's
      counts[group] = int(np.asarray(leaf))
  return counts


def test_the_freeze_counts_applied_updates_not_batches_and_holds_the_trunks_optimiser(tmp_path):
  # fairseq counts freeze_finetune_updates (and the learning rate) in applied updates: a NaN batch's skipped update
  # does not count. 4 batches, the second NaN: 3 applied updates, all within a freeze of 3.
  _corpus(tmp_path / "data")
  _save_hf_ctc(tmp_path / "hf")
  config = _config(tmp_path / "data", init_from=str(tmp_path / "hf"))
  config.total_steps = 4
  config.fault_injection.nan_steps = (1,)
  workdir = tmp_path / "run"
  loop.train_and_evaluate(config, str(workdir))

  rows = _metrics(workdir)
  assert [r["skipped"] for r in rows] == [0.0, 1.0, 0.0, 0.0], rows
  _assert_trunk_equal(_params(workdir), _params(tmp_path / "hf"))  # batch 4 (update 3) still frozen
  # The loop ran the frozen phase's optimiser: the trunk's Adam never counted an update; the head's counted 3.
  assert _optimiser_counts(workdir) == {"trunk": 0, "head": 3}
  # The logged rate is the one applied: the schedule at updates 0, 1, 1, 2.
  schedule = loop.schedule_of(config, config.total_steps)
  np.testing.assert_allclose([r["learning_rate"] for r in rows], [float(schedule(u)) for u in (0, 1, 1, 2)],
                             rtol=1e-6)


def test_switching_masking_off_on_resume_names_the_mask_embedding_and_keeps_the_checkpoints(tmp_path):
  # mask_time_prob and mask_channel_prob may change on resume, but with both 0 the model has no masked_spec_embed:
  # the checkpoint could not restore, so the relaunch must stop first, naming why.
  _corpus(tmp_path / "data")
  config = _config(tmp_path / "data")
  config.total_steps, config.model.mask_time_prob = 1, 0.05
  workdir = tmp_path / "run"
  loop.train_and_evaluate(config, str(workdir))
  before = sorted(os.listdir(workdir / "checkpoints"))
  config.total_steps, config.model.mask_time_prob = 2, 0.0
  with pytest.raises(loop.ConfigError, match=r"masked_spec_embed.*mask_time_prob 0.05.*mask_time_prob 0.0, "
                     r"mask_channel_prob 0.0.*init_from"):
    loop.train_and_evaluate(config, str(workdir))
  assert sorted(os.listdir(workdir / "checkpoints")) == before
  config.model.mask_time_prob = 0.02  # other masking values resume
  loop.train_and_evaluate(config, str(workdir))
  assert [r["step"] for r in _metrics(workdir)] == [1, 2]


def _bad_corpus(root, **problems) -> list[synthetic.Utterance]:
  """`_corpus` of 2 x 5 clips (8 good ones fill the one batch) with transcripts replaced: {index: text}."""
  utterances = _corpus(root, utterances_per_speaker=5)
  synthetic.set_transcripts(root, {utterances[int(i)].id: text for i, text in problems.items()})
  return utterances


def _data_counters(workdir) -> dict:
  """The input pipeline's counters (`skipped/<kind>`, `index/utterances`, ...) as the last checkpoint stores them
  with the input position: the loop reports them nowhere else."""
  return e2e.saved_item(str(workdir), "data")["counters"]


@pytest.mark.parametrize("kind,text,names", [
    ("out_of_vocabulary", "CAFÉ AU LAIT", ["'É'", "not in the vocabulary"]),
    ("empty_transcript", "", ["transcript is empty"]),
], ids=["out_of_vocabulary", "empty_transcript"])
def test_bad_transcript_raises_naming_the_file(tmp_path, kind, text, names):
  utterances = _bad_corpus(tmp_path / "data", **{"3": text})
  with open(tmp_path / "vocab.json", "w") as f:
    json.dump(HF_VOCAB, f)
  config = _config(tmp_path / "data", vocab=str(tmp_path / "vocab.json"), on_error="raise")
  with pytest.raises(AudioInputError) as raised:
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert raised.value.kind == kind and raised.value.source == utterances[3].path
  for name in names:
    assert name in str(raised.value), str(raised.value)


def test_bad_transcripts_are_skipped_and_counted(tmp_path):
  _bad_corpus(tmp_path / "data", **{"3": "CAFÉ AU LAIT", "6": ""})
  with open(tmp_path / "vocab.json", "w") as f:
    json.dump(HF_VOCAB, f)
  workdir = tmp_path / "run"
  loop.train_and_evaluate(_config(tmp_path / "data", vocab=str(tmp_path / "vocab.json")), str(workdir))

  counters = _data_counters(workdir)
  assert counters["skipped/out_of_vocabulary"] == 1 and counters["skipped/empty_transcript"] == 1, counters
  assert counters["index/utterances"] == 8, counters
  assert [r["step"] for r in _metrics(workdir)] == [1, 2, 3]


def test_labels_longer_than_the_frames_are_zeroed_and_counted(tmp_path):
  utterances = _bad_corpus(tmp_path / "data")
  shortest = min(range(len(utterances)), key=lambda i: utterances[i].num_samples)
  # 1.0-1.5 s is 49-74 frames; 78 letters and 3 delimiters (no repeats) cannot align.
  synthetic.set_transcripts(tmp_path / "data", {
      utterances[shortest].id: " ".join(["ABCDEFGHIJKLMNOPQRSTUVWXYZ"] * 3)})
  with open(tmp_path / "vocab.json", "w") as f:
    json.dump(HF_VOCAB, f)
  workdir = tmp_path / "run"
  loop.train_and_evaluate(_config(tmp_path / "data", vocab=str(tmp_path / "vocab.json")), str(workdir))

  rows = _metrics(workdir)
  zeroed = [r["ctc/zeroed_sentences"] for r in rows]
  assert 1.0 in zeroed and set(zeroed) <= {0.0, 1.0}, zeroed
  for r in rows:
    assert np.isfinite(r["loss/ctc"]) and 0 < r["loss/ctc"] < 1e3, r  # an unzeroed impossible alignment is ~1e5
    assert np.isfinite(r["grad_norm"]) and r["bad_steps"] == 0.0, r


def test_vocabulary_that_does_not_fit_the_imported_head_names_it(tmp_path):
  _corpus(tmp_path / "data")
  _save_hf_ctc(tmp_path / "hf")
  with open(tmp_path / "vocab.json", "w") as f:  # covers the transcripts, two symbols more than the head has
    json.dump({**HF_VOCAB, "É": len(HF_VOCAB), "Ç": len(HF_VOCAB) + 1}, f)
  config = _config(tmp_path / "data", init_from=str(tmp_path / "hf"), vocab=str(tmp_path / "vocab.json"))
  with pytest.raises(CheckpointMismatchError) as raised:
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  # Named before any data is read: the head, both sizes, and where the vocabulary came from.
  message = str(raised.value)
  assert re.search(r"\['lm_head'\]\['kernel'\] has 32 outputs but the vocabulary \(.*vocab\.json\) has 34",
                   message), message
  assert "does not fit the vocabulary" in message
  assert not os.listdir(tmp_path / "run" / "checkpoints")  # nothing trained, nothing saved
