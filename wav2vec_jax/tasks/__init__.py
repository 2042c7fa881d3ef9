"""Training tasks the one loop runs: pre-training (contrastive) and CTC fine-tuning."""
