"""Figure search: a versioned FAISS index over the corpus's image embeddings (`build`), searched by
text and/or image with filters (`searcher`, `filters`), served as a page and a JSON API (`serve`),
refreshed for a new model (`refresh`); and the model report's retrieval pictures (`examples`)."""
