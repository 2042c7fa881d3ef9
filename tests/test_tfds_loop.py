"""Fine-tuning on a TFDS dataset (`config.data.source = "tfds"`, the `librispeech_manual` builder) through the loop
reads the right data: every step's losses and the validation scores equal a run on the same audio and transcripts
through fairseq manifests listed in the TFDS splits' order."""

import os

import numpy as np
import pytest

import e2e  # tests/e2e.py
from data_pipelines import librispeech_builder, manifest, synthetic, tfds_source
from experiments.configs import finetune
from wav2vec_jax.training import loop

pytestmark = pytest.mark.slow  # ~40 s with a cold compilation cache

SPLITS = {"train": 1, "dev": 2}  # split: seed of its audio
COMPARED = ("loss/ctc", "loss/ctc_per_token", "grad_norm", "num_sentences", "val/loss_ctc", "val/wer", "val/cer", "val/utterances")


def _reorder_manifest(directory: str, split: str, ids: tuple[str, ...]) -> None:
  """Rewrites `split.{tsv,ltr,wrd}` of `directory` with the utterances in the order of `ids`."""
  with open(os.path.join(directory, f"{split}.tsv"), encoding="utf-8") as f:
    root, *rows = f.read().splitlines()
  listed = [os.path.splitext(os.path.basename(row.split("\t")[0]))[0] for row in rows]
  order = [listed.index(uid) for uid in ids]
  assert sorted(order) == list(range(len(rows)))  # the same utterances, only reordered
  with open(os.path.join(directory, f"{split}.tsv"), "w", encoding="utf-8") as f:
    f.write("\n".join([root] + [rows[i] for i in order]) + "\n")
  for ext in ("ltr", "wrd"):
    with open(os.path.join(directory, f"{split}.{ext}"), encoding="utf-8") as f:
      lines = f.read().splitlines()
    with open(os.path.join(directory, f"{split}.{ext}"), "w", encoding="utf-8") as f:
      f.write("\n".join(lines[i] for i in order) + "\n")


def _finetune(source: str, path: str, workdir: str, vocab: str, **fields) -> tuple[list[dict], dict]:
  """Three updates of the tiny fine-tuning recipe on `config.data` = (source, path, fields), validated at the end;
  returns the metrics rows and the last step's metrics."""
  c = finetune.get_config("tiny")
  c.data.source, c.data.path, c.data.split, c.data.eval_split, c.data.vocab = source, path, "train", "dev", vocab
  for k, v in fields.items():
    c.data[k] = v
  c.data.input.batch_budget, c.data.input.num_buckets = 200_000, 1  # 8 rows: one per fake device
  c.data.input.normalize = False  # as the BASE recipes: the audio's scale reaches the model
  c.total_steps, c.eval_every, c.log_every, c.freeze_finetune_updates = 3, 3, 1, 0
  c.measure_peak_flops, c.async_checkpoints, c.tensorboard, c.plots = False, False, False, False
  last = loop.train_and_evaluate(c, workdir)
  return e2e.metrics(workdir), last


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """A LibriSpeech-layout folder (two languages), its TFDS build, and manifests in the TFDS splits' order."""
  root = tmp_path_factory.mktemp("tfds_loop")
  folder = str(root / "folder")
  for split, seed in SPLITS.items():
    synthetic.write_librispeech_folder(folder, split=split, languages=("en", "de"), speakers_per_language=2,
                                       utterances_per_speaker=4, seconds=(1.0, 1.5), seed=seed)
  tfds_dir = str(root / "tfds")
  librispeech_builder.build(folder, tfds_dir)
  manifests = str(root / "manifests")
  manifest.write_folder_manifests(folder, manifests)
  indexes = {split: tfds_source.tfds_index(librispeech_builder.NAME, split=split, data_dir=tfds_dir)
             for split in SPLITS}
  for split, index in indexes.items():
    _reorder_manifest(manifests, split, index.ids)
  return tfds_dir, manifests, indexes


def test_tfds_fine_tuning_reads_the_splits_like_manifests_in_their_order(data, tmp_path):
  tfds_dir, manifests, indexes = data
  # TFDS writes a split in the order of hashed keys, not the folder's sorted order: were the loop to read records
  # other than the ones the index lists (or in another order), the batches would differ.
  assert list(indexes["train"].ids) != sorted(indexes["train"].ids)
  assert len(indexes["train"]) == len(indexes["dev"]) == 16
  vocab = os.path.join(manifests, "dict.ltr.txt")
  rows, last = _finetune("tfds", tfds_dir, str(tmp_path / "tfds"), vocab, tfds_name=librispeech_builder.NAME)
  want, _ = _finetune("manifest", manifests, str(tmp_path / "manifest"), vocab, labels="ltr")
  assert [r["step"] for r in rows] == [r["step"] for r in want] == [1, 2, 3]
  assert last["val/utterances"] == len(indexes["dev"])  # the whole TFDS dev split was validated
  assert last["num_sentences"] == 8
  for key in COMPARED:  # the same utterances, transcripts and batches, step by step
    np.testing.assert_array_equal([r.get(key) for r in rows], [r.get(key) for r in want], err_msg=key)
