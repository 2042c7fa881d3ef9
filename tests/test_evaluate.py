"""Evaluation of a saved checkpoint reproduces the trainer's validation exactly (same reading, decoding, scoring)."""

import glob
import json
import os
import shutil
import subprocess
import sys

import e2e  # tests/e2e.py
import pytest

from data_pipelines import synthetic
from experiments.configs import finetune
from wav2vec_jax.inference import scoring
from wav2vec_jax.inference.checkpoint_eval import evaluate_checkpoint
from wav2vec_jax.training import loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A tiny fine-tuning run on tones with a dev split, validated every 2 of 6 updates."""
  root = tmp_path_factory.mktemp("eval")
  data = str(root / "data")
  for split, seed in (("train", 1), ("dev", 2)):
    synthetic.write_librispeech_folder(data, split=split, languages=("en", "fr"), speakers_per_language=2,
                                       utterances_per_speaker=3, seconds=(1.0, 1.5), seed=seed)
  c = finetune.get_config("tiny")
  c.data.source, c.data.path, c.data.split, c.data.eval_split = "librispeech", data, "train", "dev"
  c.data.input.batch_budget, c.data.input.num_buckets = 200_000, 1  # 8 rows: one per fake device
  c.total_steps, c.eval_every, c.log_every, c.freeze_finetune_updates = 4, 2, 1, 0
  c.measure_peak_flops, c.async_checkpoints = False, False
  workdir = str(root / "run")
  loop.train_and_evaluate(c, workdir)
  return workdir, data


def test_evaluating_the_best_checkpoint_reproduces_its_validation_exactly(run):
  workdir, data = run
  with open(os.path.join(workdir, "best", "best.json")) as f:
    best = json.load(f)
  result = evaluate_checkpoint(os.path.join(workdir, "best"), "librispeech", data, "dev")
  assert result.metrics["utterances"] == best["val/utterances"] == 12
  with open(os.path.join(workdir, "curves.png"), "rb") as f:  # the loop drew the run's curves (config.plots)
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert result.metrics["wer"] == best["val/wer"] and result.metrics["cer"] == best["val/cer"]
  assert abs(result.metrics["loss_ctc"] - best["val/loss_ctc"]) < 1e-4 * best["val/loss_ctc"]
  ids = [r["id"] for r in result.rows]
  assert len(set(ids)) == 12 and all(r["reference"] == scoring.normalize_text(r["reference"]) for r in result.rows)
  # Each language scored on its own rows (speaker 1xx: en, 2xx: fr), and alone when asked for by name.
  for name, prefix in (("en", "1"), ("fr", "2")):
    mine = [r for r in result.rows if r["id"].startswith(prefix)]
    assert all(r["language"] == name for r in mine) and len(mine) == 6
    expected = scoring.error_rates([r["reference"] for r in mine], [r["hypothesis"] for r in mine])
    assert result.metrics["languages"][name] == expected
  alone = evaluate_checkpoint(os.path.join(workdir, "best"), "librispeech", data, "dev", languages="fr")
  assert alone.metrics["utterances"] == 6 and "languages" not in alone.metrics
  assert alone.metrics["cer"] == result.metrics["languages"]["fr"]["cer"]


def test_the_entry_point_writes_hypotheses_and_a_summary(run, tmp_path):
  workdir, data = run
  out = subprocess.run([sys.executable, os.path.join(REPO, "experiments", "evaluate.py"),
                        f"--checkpoint={os.path.join(workdir, 'best')}", "--source=librispeech", f"--path={data}",
                        "--split=dev", f"--output_dir={tmp_path}"], cwd=REPO, capture_output=True, text=True,
                       check=False, env=dict(os.environ, XLA_FLAGS=e2e.xla_flags()))
  assert out.returncode == 0, out.stderr[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  rows = [json.loads(line) for line in (tmp_path / "hypotheses.jsonl").read_text().splitlines()]
  assert len(rows) == summary["utterances"] == 12
  assert scoring.error_rates([r["reference"] for r in rows], [r["hypothesis"] for r in rows])["wer"] == summary["wer"]


def test_a_checkpoint_without_a_ctc_head_is_a_clear_error(run, tmp_path):
  pytest.importorskip("transformers")
  import hf_reference as ref  # pylint: disable=g-import-not-at-top
  directory = str(tmp_path / "pre")
  ref.save_reference(directory, "base", "Wav2Vec2ForPreTraining")
  with pytest.raises(ValueError, match="has no CTC head"):
    evaluate_checkpoint(directory, "librispeech", run[1], "dev")


def test_fine_tuning_reads_fairseq_manifests_through_the_loop(run, tmp_path):
  # The same audio as the librispeech-folder run, through fairseq's .tsv/.ltr/dict.ltr.txt: the loop trains on
  # the manifests' labels with the manifests' dictionary, and evaluate.py reads the same manifests.
  from data_pipelines import manifest  # pylint: disable=g-import-not-at-top
  _, data = run
  manifests = str(tmp_path / "manifests")
  manifest.write_folder_manifests(data, manifests)
  c = finetune.get_config("tiny")
  c.data.source, c.data.path, c.data.split, c.data.eval_split = "manifest", manifests, "train", "dev"
  c.data.labels, c.data.vocab = "ltr", os.path.join(manifests, "dict.ltr.txt")
  c.data.input.batch_budget, c.data.input.num_buckets = 200_000, 1
  c.total_steps, c.eval_every, c.log_every, c.freeze_finetune_updates = 2, 2, 1, 0
  c.measure_peak_flops, c.async_checkpoints, c.plots = False, False, False
  workdir = str(tmp_path / "run")
  last = loop.train_and_evaluate(c, workdir)
  assert last["val/utterances"] == 12 and last["num_sentences"] == 8
  with open(os.path.join(workdir, "vocab.json")) as f:
    assert len(json.load(f)) == len(open(c.data.vocab).read().splitlines()) + 4  # the dictionary + 4 specials
  result = evaluate_checkpoint(os.path.join(workdir, "best"), "manifest", manifests, "dev", labels="ltr")
  assert result.metrics["wer"] == last["val/wer"] and result.metrics["cer"] == last["val/cer"]


def test_evaluation_scores_every_utterance_it_can_and_counts_the_rest(run, tmp_path):
  # A run's input.json may carry training length filters and bucket lengths (here: 1 s at most, one 1.5 s bucket,
  # which every dev clip but none would fail): evaluation scores the whole split anyway. A reference character
  # outside the vocabulary is scored as written (<unk> in the labels); only an empty reference cannot be scored,
  # and it is counted by reason.
  workdir, data = run
  checkpoint, dev = str(tmp_path / "best"), str(tmp_path / "data")
  shutil.copytree(os.path.join(workdir, "best"), checkpoint)
  shutil.copytree(data, dev)
  with open(os.path.join(checkpoint, "input.json")) as f:
    saved = json.load(f)
  with open(os.path.join(checkpoint, "input.json"), "w") as f:
    json.dump(dict(saved, min_sample_size=20_000, max_sample_size=16_000, bucket_lengths=[24_000],
                   on_unknown="raise"), f)
  ids = sorted(r["id"] for r in evaluate_checkpoint(os.path.join(workdir, "best"), "librispeech", data, "dev").rows)
  synthetic.set_transcripts(dev, {ids[0]: "WELL-KNOWN 42", ids[1]: ""})
  # A file whose header reads but whose samples do not: found only while the pass decodes it.
  (damaged,) = glob.glob(os.path.join(dev, "dev", "**", f"{ids[2]}.flac"), recursive=True)
  with open(damaged, "r+b") as f:
    f.truncate(os.path.getsize(damaged) // 3)
  result = evaluate_checkpoint(checkpoint, "librispeech", dev, "dev")
  assert result.metrics["utterances"] == 10 and result.metrics["not_scored"] == 2
  assert result.not_scored == result.metrics["not_scored_by_reason"] == {"skipped/empty_transcript": 1,
                                                                         "skipped/decode_error": 1}
  assert next(r for r in result.rows if r["id"] == ids[0])["reference"] == "WELL-KNOWN 42"
  assert scoring.error_rates([r["reference"] for r in result.rows],
                             [r["hypothesis"] for r in result.rows])["wer"] == result.metrics["wer"]


def test_without_the_runs_input_json_the_checkpoint_says_whether_to_normalise(run, tmp_path):
  # A Hugging Face or fairseq checkpoint has no input.json: evaluation normalises as Recognizer (and so
  # transcribe.py) does, from preprocessor_config.json's do_normalize, not always off.
  workdir, data = run
  checkpoint = str(tmp_path / "hf_like")
  shutil.copytree(os.path.join(workdir, "best"), checkpoint)
  os.remove(os.path.join(checkpoint, "input.json"))
  with open(os.path.join(checkpoint, "preprocessor_config.json"), "w") as f:
    json.dump({"do_normalize": True, "sampling_rate": 16000}, f)
  auto = evaluate_checkpoint(checkpoint, "librispeech", data, "dev")
  on = evaluate_checkpoint(checkpoint, "librispeech", data, "dev", normalize=True)
  off = evaluate_checkpoint(checkpoint, "librispeech", data, "dev", normalize=False)
  assert [r["loss_ctc"] for r in auto.rows] == [r["loss_ctc"] for r in on.rows]
  assert [r["loss_ctc"] for r in auto.rows] != [r["loss_ctc"] for r in off.rows]
