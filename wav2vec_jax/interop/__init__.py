"""Checkpoint interop: Hugging Face and fairseq import/export, the safe torch-checkpoint reader, load_pretrained."""
