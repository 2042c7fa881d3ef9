"""Word and character error rates (jiwer), with the one text normalisation that validation and evaluation share."""

import jiwer


def normalize_text(text: str) -> str:
  """Whitespace collapsed to single spaces, stripped. References and hypotheses both go through it."""
  return " ".join(text.split())


def error_rates(references: list[str], hypotheses: list[str]) -> dict[str, float]:
  """Corpus-level WER and CER (edits summed over utterances, divided by reference words / characters).

  Args:
    references: reference transcripts (non-empty after normalisation).
    hypotheses: decoded transcripts, same order.
  Returns:
    {"wer": float, "cer": float, "utterances": float}.
  """
  if len(references) != len(hypotheses):
    raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
  refs = [normalize_text(r) for r in references]
  hyps = [normalize_text(h) for h in hypotheses]
  if not refs or not all(refs):
    raise ValueError("error rates need at least one reference, and no empty reference")
  return {"wer": float(jiwer.wer(refs, hyps)), "cer": float(jiwer.cer(refs, hyps)), "utterances": float(len(refs))}
