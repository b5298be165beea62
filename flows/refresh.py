"""Entry point of the Prefect flow `index`, deployment `index/refresh`: the search index
re-embedded and rebuilt for a new champion, on every `biomedclip.model.promoted` event.

`prefect.yaml` deploys this file's `refresh_flow`; `biomedclip schedule` serves it beside the
retrain. The flow lives in `biomedclip.pipeline.refresh`.
"""

from biomedclip.pipeline.refresh import refresh_flow

__all__ = ["refresh_flow"]
