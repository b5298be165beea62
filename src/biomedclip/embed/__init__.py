"""Batch embeddings: any model the pipeline takes, over a folder of images, a table of image paths
and/or texts, or the corpus's own pairs and panels, into a resumable float16 Parquet."""

from biomedclip.embed.inputs import EmbedInput, EmbedInputError, corpus_input, open_input
from biomedclip.embed.params import EmbedParams
from biomedclip.embed.run import embed, read_metadata, rejects_path
from biomedclip.embed.stage import embed_corpus, embeddings_file

__all__ = ["EmbedInput", "EmbedInputError", "EmbedParams", "corpus_input", "embed", "embed_corpus",
           "embeddings_file", "open_input", "read_metadata", "rejects_path"]
