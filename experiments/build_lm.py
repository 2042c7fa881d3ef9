r"""Builds a word n-gram language model (interpolated modified Kneser-Ney, as KenLM's lmplz) as an ARPA file, for
beam-search decoding with pyctcdecode + KenLM.

  python experiments/build_lm.py --text=/data/lm_sentences.txt --out=/tmp/lm/3gram.arpa --order=3
  python experiments/build_lm.py --text=$CORPUS/train --out=gs://bucket/lm/corpus_4gram.arpa --order=4
  python experiments/build_lm.py --text=/data/manifests/train.wrd --out=/tmp/lm.arpa --case=upper
`--text` is a file of sentences (one per line), a transcript file (`.trans.txt`, `.ltr`, `.wrd`, fairseq `.tsv`)
or a LibriSpeech-layout split folder (the generated corpus' `train`); several are comma-separated. The CTC
vocabularies are upper case: `--case=upper` matches a lower-case text to them. Orders with ill-defined discounts
(small text) use lmplz's fallback D = 0.5, 1, 1.5 and say so; `--discount_fallback=` (empty) stops instead.
"""

import os
import sys

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from data_pipelines import ngram  # noqa: E402  pylint: disable=g-import-not-at-top

flags.DEFINE_list("text", None, "Sentences: text or transcript file(s), or corpus split folder(s), comma-separated.")
flags.DEFINE_string("out", None, "The ARPA file to write (local or gs://).")
flags.DEFINE_integer("order", 3, f"Highest n-gram order ({ngram.MIN_ORDER}..{ngram.MAX_ORDER}).")
flags.DEFINE_enum("case", "keep", ["keep", "upper", "lower"], "Case the text is mapped to.")
flags.DEFINE_list("discount_fallback", [str(d) for d in ngram.DEFAULT_FALLBACK],
                  "D1,D2,D3+ for orders whose discounts are ill-defined; empty: stop with an error instead.")
flags.mark_flags_as_required(["text", "out"])


def _fallback(values):
  try:
    return tuple(float(d) for d in values) if values else None
  except ValueError as e:
    raise ngram.NgramError(f"--discount_fallback must be three numbers D1,D2,D3+ (or empty), got {values}") from e


def main(argv):
  del argv
  f = flags.FLAGS
  try:
    fallback = _fallback(f.discount_fallback)
    sentences = [s for path in f.text for s in ngram.read_sentences(path, case=f.case)]
    model = ngram.write_arpa(sentences, f.out, f.order, discount_fallback=fallback, source=",".join(f.text))
  except (ngram.NgramError, FileNotFoundError) as e:  # the cause and the fix are in the message
    logging.error("stopped: %s: %s", type(e).__name__, e)
    sys.exit(1)
  for n, d in enumerate(model.discounts, 1):
    note = " (fallback: too little text to estimate them)" if n in model.fallback_orders else ""
    logging.info("%d-grams: %d, discounts D1=%.4f D2=%.4f D3+=%.4f%s", n, model.ngram_counts[n - 1], *d, note)
  logging.info("wrote %s: order %d, %d sentences, %d words, %d word types", f.out, model.order, model.sentences,
               model.tokens, len(model.words) - 3)


if __name__ == "__main__":
  app.run(main)
