"""Transcripts as files: plain text, JSON lines (text and timed words), SRT and WebVTT subtitles."""

import json
import math

from wav2vec_jax.inference.decoding import Word

FORMATS = ("txt", "jsonl", "srt", "vtt")


def to_json(name: str, transcript) -> str:
  """One JSON line: {"audio", "duration", "text", "words": [{"word", "start", "end", "confidence"}]}; seconds
  rounded to ms, confidence to 4 digits (null when unknown, e.g. with beam search)."""
  words = [{"word": w.text, "start": round(w.start, 3), "end": round(w.end, 3),
            "confidence": None if math.isnan(w.confidence) else round(w.confidence, 4)} for w in transcript.words]
  return json.dumps({"audio": name, "duration": round(transcript.duration, 3), "text": transcript.text,
                     "words": words}, ensure_ascii=False)


def cues(words: tuple[Word, ...], max_words: int = 12, max_seconds: float = 6.0, max_gap: float = 1.0):
  """Groups words into subtitle cues: a new cue after `max_words` words, `max_seconds`, or a pause over `max_gap`.

  Returns:
    [(start seconds, end seconds, text)].
  """
  out, current = [], []
  for word in words:
    if current and (len(current) >= max_words or word.end - current[0].start > max_seconds
                    or word.start - current[-1].end > max_gap):
      out.append((current[0].start, current[-1].end, " ".join(w.text for w in current)))
      current = []
    current.append(word)
  if current:
    out.append((current[0].start, current[-1].end, " ".join(w.text for w in current)))
  return out


def _clock(seconds: float, separator: str) -> str:
  millis = int(round(seconds * 1000))
  hours, millis = divmod(millis, 3_600_000)
  minutes, millis = divmod(millis, 60_000)
  secs, millis = divmod(millis, 1000)
  return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_srt(transcript) -> str:
  """SubRip subtitles: numbered cues `HH:MM:SS,mmm --> HH:MM:SS,mmm`."""
  blocks = [f"{i}\n{_clock(s, ',')} --> {_clock(e, ',')}\n{text}\n"
            for i, (s, e, text) in enumerate(cues(transcript.words), 1)]
  return "\n".join(blocks)


def to_vtt(transcript) -> str:
  """WebVTT subtitles: a `WEBVTT` header, cues `HH:MM:SS.mmm --> HH:MM:SS.mmm`."""
  blocks = [f"{_clock(s, '.')} --> {_clock(e, '.')}\n{text}\n" for s, e, text in cues(transcript.words)]
  return "WEBVTT\n\n" + "\n".join(blocks)


def render(fmt: str, name: str, transcript) -> str:
  """The file content of `transcript` in `fmt` (one of FORMATS); `name` is the audio file it came from."""
  if fmt == "txt":
    return transcript.text + "\n"
  if fmt == "jsonl":
    return to_json(name, transcript) + "\n"
  if fmt == "srt":
    return to_srt(transcript)
  if fmt == "vtt":
    return to_vtt(transcript)
  raise ValueError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")
