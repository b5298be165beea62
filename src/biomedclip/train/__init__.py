"""Contrastive pretraining with open_clip: profiles, tokenizer, data stream, the trainer."""
