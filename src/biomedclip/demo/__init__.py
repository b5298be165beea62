"""A synthetic PMC corpus that looks like the real one: the pipeline's embedded default data."""
