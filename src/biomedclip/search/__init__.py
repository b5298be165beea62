"""Figure search: a versioned FAISS index over the corpus's image embeddings (`build`), searched by
text and/or image with filters (`searcher`, `filters`), served as a page and a JSON API (`serve`),
refreshed for a new model (`refresh`); and the model report's retrieval pictures (`examples`)."""

from biomedclip.search.build import IndexInputError, build_index
from biomedclip.search.examples import retrieval_examples
from biomedclip.search.filters import Filter, FilterError, parse_filter, parse_filters
from biomedclip.search.params import IndexParams, ServeParams
from biomedclip.search.refresh import refresh, refresh_index
from biomedclip.search.searcher import IndexMissing, IndexModelMismatch, Result, Searcher

__all__ = ["Filter", "FilterError", "IndexInputError", "IndexMissing", "IndexModelMismatch", "IndexParams", "Result",
           "Searcher", "ServeParams", "build_index", "parse_filter", "parse_filters", "refresh", "refresh_index",
           "retrieval_examples"]
