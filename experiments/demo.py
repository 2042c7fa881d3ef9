r"""The whole path on this machine: raw audio to text. The README's main job.

  python experiments/demo.py                          # workdir /tmp/wav2vec_jax, the `tiny` recipes
  python experiments/demo.py --workdir=/tmp/w2v --finetune_config.total_steps=3000   # any config field

Stages, each resumed or skipped when run again (the training stages resume from their latest checkpoint):
  1. corpus     the embedded multilingual corpus, generated on first use (cached)
  2. pretrain   wav2vec 2.0 pre-training on its train split                      <workdir>/pretrain
  3. finetune   CTC fine-tuning from the pre-trained model, validated on dev     <workdir>/finetune (+ best/)
  4. lm         a 3-gram word LM from the train transcripts                      <workdir>/lm/train_3gram.arpa
  5. evaluate   greedy and beam search + LM on the held-out test speakers        <workdir>/eval/{greedy,lm}/
                (the LM weight and word score are picked on dev)
  6. transcribe one held-out test file: transcript beside its reference, and its forced alignment
                <workdir>/transcript/{transcript.json,alignment.TextGrid,alignment.png}
Ends by printing where everything is and the error rates reached.
"""

import dataclasses
import json
import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout

from wav2vec_jax.training import runtime  # noqa: E402  pylint: disable=g-import-not-at-top

_CONFIGS = os.path.join(REPO, "experiments", "configs")
config_flags.DEFINE_config_file("pretrain_config", os.path.join(_CONFIGS, "pretrain.py:tiny"),
                                "Pre-training config (file:variant).", lock_config=True)
config_flags.DEFINE_config_file("finetune_config", os.path.join(_CONFIGS, "finetune.py:tiny"),
                                "Fine-tuning config (file:variant); init_from is set to the pre-training run.",
                                lock_config=False)
flags.DEFINE_string("workdir", "/tmp/wav2vec_jax", "Where every stage writes (local or gs://).")
flags.DEFINE_string("compilation_cache_dir", os.path.expanduser("~/.cache/wav2vec_jax/xla"),
                    "Persistent XLA compilation cache (empty: off): a second run skips compiling.")
flags.DEFINE_list("lm_weights", ["0.5", "1.0", "2.0"], "LM weights tried on dev.")
flags.DEFINE_list("word_scores", ["0.0", "1.0", "2.0"], "Word insertion scores tried on dev.")
flags.DEFINE_integer("beam_width", 32, "Beam width of the LM decoding.")


def _stage(number: int, name: str, what: str) -> float:
  logging.info("==== %d/6 %s: %s", number, name, what)
  return time.perf_counter()


def _evaluate(checkpoint: str, split: str, out_dir: str, **kwargs) -> dict:
  """Scores `checkpoint` on a corpus split into `out_dir` (or reads what a previous run wrote); the summary."""
  from wav2vec_jax.inference import checkpoint_eval  # pylint: disable=g-import-not-at-top
  return checkpoint_eval.evaluate_once(out_dir, checkpoint, "corpus", "", split, progress=True, **kwargs)


def _pick_test_file(corpus_dir: str) -> tuple[str, str, str]:
  """A held-out test utterance of 6-12 s with eSpeak word timings: (path, id, reference transcript)."""
  from data_pipelines import sources  # pylint: disable=g-import-not-at-top
  index = sources.librispeech_folder(corpus_dir, "test")
  seconds = index.frames / index.sample_rates
  candidates = [i for i in range(len(index)) if 6.0 <= seconds[i] <= 12.0 and index.languages[i] == "en"]
  i = candidates[0] if candidates else int(seconds.argmax())
  return index.reader.name(i), index.ids[i], index.transcripts[i]


def run(f) -> dict:
  """Runs the six stages; returns the final report (also written to `<workdir>/demo.json`)."""
  from data_pipelines import corpus, ngram, storage  # pylint: disable=g-import-not-at-top
  from data_pipelines import audio  # pylint: disable=g-import-not-at-top
  from wav2vec_jax.inference import alignment, alignment_formats, beam  # pylint: disable=g-import-not-at-top
  from wav2vec_jax.inference.alignment_plot import plot_alignment  # pylint: disable=g-import-not-at-top
  from wav2vec_jax.inference.recognizer import Recognizer  # pylint: disable=g-import-not-at-top
  from wav2vec_jax.training import loop  # pylint: disable=g-import-not-at-top

  start = time.perf_counter()
  workdir = storage.absolute(f.workdir)
  pre_dir, ft_dir = storage.join(workdir, "pretrain"), storage.join(workdir, "finetune")
  # The model at the end of fine-tuning (its latest checkpoint), whatever --finetune_config.best_metric picked as
  # <workdir>/finetune/best (by CER in the tiny recipe: the final model too in the runs so far).
  final = ft_dir
  times = {}

  t = _stage(1, "corpus", "the embedded multilingual speech corpus (generated on first use, then cached)")
  corpus_dir = str(corpus.ensure_default_corpus())
  times["corpus"] = time.perf_counter() - t

  t = _stage(2, "pretrain", f"wav2vec 2.0 pre-training ({f.pretrain_config.model_variant}) -> {pre_dir}")
  loop.train_and_evaluate(f.pretrain_config, pre_dir, raise_when_stopped=True)
  times["pretrain"] = time.perf_counter() - t

  t = _stage(3, "finetune", f"CTC fine-tuning from the pre-trained model -> {ft_dir}")
  finetune_config = f.finetune_config
  finetune_config.init_from = pre_dir
  if not finetune_config.data.eval_split:
    finetune_config.data.eval_split = "dev"
  loop.train_and_evaluate(finetune_config, ft_dir, raise_when_stopped=True)
  times["finetune"] = time.perf_counter() - t

  t = _stage(4, "lm", "a 3-gram word LM from the train transcripts")
  lm_path = storage.join(workdir, "lm", "train_3gram.arpa")
  if not storage.Path(lm_path).exists():
    ngram.write_arpa(os.path.join(corpus_dir, "train"), lm_path, order=3)
  times["lm"] = time.perf_counter() - t

  t = _stage(5, "evaluate", "greedy and beam search + LM on the held-out test speakers")
  eval_dir = storage.join(workdir, "eval")
  greedy = _evaluate(final, "test", storage.join(eval_dir, "greedy"))
  options = beam.BeamOptions(beam_width=f.beam_width)
  grid = [(float(a), float(b)) for a in f.lm_weights for b in f.word_scores]
  tuned = _evaluate(final, "dev", storage.join(eval_dir, "lm_dev_grid"), lm=lm_path, beam_options=options, grid=grid)
  options = dataclasses.replace(options, lm_weight=tuned["lm_weight"], word_score=tuned["word_score"])
  with_lm = _evaluate(final, "test", storage.join(eval_dir, "lm"), lm=lm_path, beam_options=options)
  times["evaluate"] = time.perf_counter() - t

  t = _stage(6, "transcribe", "one held-out test file: transcript and forced alignment")
  path, uid, reference = _pick_test_file(corpus_dir)
  recognizer = Recognizer.from_pretrained(final)
  waveform = audio.load_waveform(path)
  log_probs = recognizer.log_probs(waveform, name=path)
  duration = len(waveform) / 16_000
  said_greedy = recognizer.decode(log_probs, duration)
  decoder = beam.BeamSearchDecoder(recognizer.vocab, lm_path, options)
  try:
    said_lm = recognizer.decode(log_probs, duration, decoder=decoder)
  finally:
    decoder.close()
  aligned = alignment.align(log_probs, reference, recognizer.vocab, name=uid)
  out_dir = storage.join(workdir, "transcript")
  storage.Path(out_dir).mkdir(parents=True, exist_ok=True)
  storage.write_text(storage.join(out_dir, "transcript.json"), json.dumps({
      "file": path, "id": uid, "reference": reference, "greedy": said_greedy.text, "beam_lm": said_lm.text,
      "words": [dataclasses.asdict(w) for w in said_lm.words]}, indent=2, ensure_ascii=False))
  alignment_formats.write_alignments([aligned], storage.join(out_dir, "alignment.TextGrid"), "textgrid")
  plot_alignment(waveform, aligned, path=storage.join(out_dir, "alignment.png"),
                 title=f"{uid}: forced alignment of the reference transcript")
  times["transcribe"] = time.perf_counter() - t

  report = {
      "wall_seconds": round(time.perf_counter() - start, 1), "stage_seconds": {k: round(v, 1) for k, v in times.items()},
      "test_greedy": {"wer": greedy["wer"], "cer": greedy["cer"], "utterances": greedy["utterances"]},
      "test_lm": {"wer": with_lm["wer"], "cer": with_lm["cer"], "lm_weight": tuned["lm_weight"],
                  "word_score": tuned["word_score"]},
      "example": {"file": path, "reference": reference, "greedy": said_greedy.text, "beam_lm": said_lm.text},
      "paths": {"pretrain checkpoints": storage.join(pre_dir, "checkpoints"),
                "fine-tuned model (load_pretrained / Recognizer.from_pretrained)": final,
                f"best checkpoint by validation {finetune_config.best_metric.upper()}":
                    storage.join(ft_dir, loop.BEST_DIR),
                "TensorBoard logs": f"{pre_dir}/tensorboard, {ft_dir}/tensorboard",
                "training curves": f"{pre_dir}/curves.png, {ft_dir}/curves.png",
                "hypotheses": f"{eval_dir}/greedy/hypotheses.jsonl, {eval_dir}/lm/hypotheses.jsonl",
                "language model": lm_path,
                "transcript and alignment": f"{out_dir}/transcript.json, {out_dir}/alignment.TextGrid, "
                                            f"{out_dir}/alignment.png"}}
  storage.write_text(storage.join(workdir, "demo.json"), json.dumps(report, indent=2, ensure_ascii=False))
  return report


def _print_report(report: dict) -> None:
  ex = report["example"]
  lines = ["", f"held-out file   {ex['file']}", f"  reference     {ex['reference']}",
           f"  greedy        {ex['greedy']}", f"  beam + LM     {ex['beam_lm']}", ""]
  g, lm = report["test_greedy"], report["test_lm"]
  lines.append(f"test split ({int(g['utterances'])} utterances of held-out speakers): greedy CER {g['cer']:.3f} WER "
               f"{g['wer']:.3f} | beam + 3-gram LM CER {lm['cer']:.3f} WER {lm['wer']:.3f} "
               f"(LM weight {lm['lm_weight']:g}, word score {lm['word_score']:g}, chosen on dev)")
  lines.append(f"wall time {report['wall_seconds'] / 60:.1f} min ("
               + ", ".join(f"{k} {v:.0f} s" for k, v in report["stage_seconds"].items()) + ")")
  lines += ["", "outputs:"] + [f"  {k:<63} {v}" for k, v in report["paths"].items()]
  print("\n".join(lines), flush=True)


def main(argv):
  del argv
  f = flags.FLAGS
  runtime.start_entry_point(f.compilation_cache_dir)
  import train  # pylint: disable=g-import-not-at-top  # experiments/train.py: the errors a run stops on
  report = runtime.stop_on(train.EXPECTED_ERRORS, run, f)
  _print_report(report)


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  app.run(main)
