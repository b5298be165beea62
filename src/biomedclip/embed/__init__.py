"""Batch embeddings: any model the pipeline takes, over a folder of images, a table of image paths
and/or texts, or the corpus's own pairs and panels, into a resumable float16 Parquet."""
