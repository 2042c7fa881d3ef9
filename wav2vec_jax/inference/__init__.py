"""Inference: CTC decoding and evaluation (WER/CER)."""
