"""Forced-alignment writers: JSON, NIST CTM and Praat TextGrid, written through `data_pipelines.storage`.

Times are seconds, multiples of `alignment.FRAME_SECONDS`; scores are the segments' mean per-frame probability.
"""

import json
from typing import Sequence

from data_pipelines import storage
from wav2vec_jax.inference.alignment import Alignment, Segment

FORMATS = ("json", "ctm", "textgrid")
SUFFIXES = {"json": ".json", "ctm": ".ctm", "textgrid": ".TextGrid"}


def _segment_dict(segment: Segment) -> dict:
  return {"label": segment.label, "start": segment.start, "end": segment.end, "score": round(segment.score, 6),
          "oov": segment.oov}


def to_json(alignments: Sequence[Alignment]) -> str:
  """All alignments as one JSON document.

  Returns:
    `{"frame_seconds": 0.02, "utterances": [{"utterance", "duration", "log_prob", "words": [{"label", "start",
    "end", "score", "oov"}], "chars": [...]}]}`.
  """
  return json.dumps({"frame_seconds": 0.02, "utterances": [
      {"utterance": a.utterance, "duration": a.duration, "log_prob": round(a.log_prob, 4),
       "words": [_segment_dict(s) for s in a.words], "chars": [_segment_dict(s) for s in a.chars]}
      for a in alignments]}, ensure_ascii=False, indent=1) + "\n"


def to_ctm(alignments: Sequence[Alignment]) -> str:
  """NIST CTM, one word a line: `<utterance> 1 <start> <duration> <word> <confidence>` (seconds, score in [0, 1])."""
  lines = [f"{a.utterance} 1 {w.start:.2f} {w.end - w.start:.2f} {w.label} {w.score:.4f}"
           for a in alignments for w in a.words]
  return "".join(line + "\n" for line in lines)


def _num(seconds: float) -> str:
  return str(round(seconds, 6))  # full precision (":g" would cut 1234.56 to 1234.6)


def _quote(text: str) -> str:
  return '"' + text.replace('"', '""') + '"'


def _tier(name: str, segments: Sequence[Segment], duration: float) -> list[str]:
  """One IntervalTier in Praat's long text format; the gaps between segments become empty intervals."""
  intervals, at = [], 0.0
  for s in segments:
    if s.start > at:
      intervals.append((at, s.start, ""))
    intervals.append((s.start, s.end, s.label))
    at = s.end
  if at < duration or not intervals:
    intervals.append((at, duration, ""))
  lines = ['        class = "IntervalTier"', f"        name = {_quote(name)}", "        xmin = 0",
           f"        xmax = {_num(duration)}", f"        intervals: size = {len(intervals)}"]
  for i, (start, end, text) in enumerate(intervals, 1):
    lines += [f"        intervals [{i}]:", f"            xmin = {_num(start)}", f"            xmax = {_num(end)}",
              f"            text = {_quote(text)}"]
  return lines


def to_textgrid(alignment: Alignment) -> str:
  """One recording as a Praat TextGrid (long text format) with two interval tiers, "words" and "chars"."""
  duration = alignment.duration
  lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0", f"xmax = {_num(duration)}",
           "tiers? <exists>", "size = 2", "item []:"]
  for i, (name, segments) in enumerate((("words", alignment.words), ("chars", alignment.chars)), 1):
    lines += [f"    item [{i}]:"] + _tier(name, segments, duration)
  return "\n".join(lines) + "\n"


def write_alignments(alignments: Sequence[Alignment], out: str, fmt: str) -> list[str]:
  """Writes alignments in one format.

  Args:
    alignments: the aligned recordings.
    out: the output file for "json" and "ctm" (all recordings in one file) and for a single "textgrid"; for
      several recordings in "textgrid", a directory that receives `<utterance>.TextGrid` files.
    fmt: "json", "ctm" or "textgrid".
  Returns:
    The paths written.
  """
  if fmt not in FORMATS:
    raise ValueError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
  if fmt != "textgrid" or len(alignments) == 1:
    text = to_json(alignments) if fmt == "json" else to_ctm(alignments) if fmt == "ctm" else to_textgrid(
        alignments[0])
    storage.Path(out).parent.mkdir(parents=True, exist_ok=True)
    storage.write_text(out, text)
    return [str(out)]
  storage.Path(out).mkdir(parents=True, exist_ok=True)
  paths = [storage.join(out, a.utterance + SUFFIXES["textgrid"]) for a in alignments]
  for a, path in zip(alignments, paths):
    storage.write_text(path, to_textgrid(a))
  return paths
