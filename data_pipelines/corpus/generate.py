"""Generates the multilingual eSpeak NG speech corpus in LibriSpeech layout.

  python -m data_pipelines.corpus.generate --out /tmp/corpus [--hours 1.5] [--seed 0] [--languages en,de,fr]

Without --out it fills the cache that `data_pipelines.corpus.ensure_default_corpus` reads (when the arguments are the
defaults) and prints the folder.
"""

import argparse
import json
import logging
import time

from data_pipelines.corpus import build
from data_pipelines.corpus import cache
from data_pipelines.corpus import speakers as speakers_lib


def main(argv=None):
  default = build.CorpusConfig()
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", help="corpus folder to create (must not exist); default: the cache")
  parser.add_argument("--hours", type=float, default=default.hours, help="total hours of audio")
  parser.add_argument("--seed", type=int, default=default.seed)
  parser.add_argument("--languages", default=",".join(default.languages), help="comma-separated language codes")
  parser.add_argument("--speakers", default="{0.train},{0.dev},{0.test}".format(default.speakers),
                      help="speakers per language in train,dev,test")
  parser.add_argument("--workers", type=int, default=2, help="processes (the corpus does not depend on it)")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  config = build.CorpusConfig(hours=args.hours, seed=args.seed, languages=tuple(args.languages.split(",")),
                              speakers=speakers_lib.SpeakerCounts(*map(int, args.speakers.split(","))))
  start = time.perf_counter()
  if args.out:
    summary = build.generate_corpus(args.out, config, workers=args.workers)
    path = args.out
  else:
    path = cache.ensure_corpus(config, workers=args.workers)
    summary = json.loads((path / build.SUMMARY_FILE).read_text(encoding="utf-8"))
  print(json.dumps({k: summary[k] for k in ("hours", "hours_per_split", "hours_per_language",
                                            "utterances_per_split", "speakers_per_split")}, indent=2))
  print(f"{path}: done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
  main()
