"""Evaluation: retrieval and zero-shot metrics as pure functions of embeddings."""
