"""The dataset card: what the ingest produced, as a page a person reads instead of a Parquet file.

`build_card` counts the pairs manifest, the rejects and the panel table in streamed passes, tokenises
a sample of the captions with the text tower's tokenizer, optionally estimates the figure types
with a trained model (zero-shot over ImageCLEF 2015's modality classes), and writes
`index.html` with its charts (matplotlib PNGs) and `summary.json`, offline and byte-identical for
the same inputs. `card_markdown` is the same summary for the Prefect artifact. No Prefect, no
MLflow here: the flow and the DVC stage wire it.
"""

from biomedclip.card.build import TOKEN_SAMPLE, build_card
from biomedclip.card.figure_types import IMAGECLEF_2015, FigureTypes
from biomedclip.card.render import card_markdown
from biomedclip.card.stats import CardInputError

__all__ = ["IMAGECLEF_2015", "TOKEN_SAMPLE", "CardInputError", "FigureTypes", "build_card", "card_markdown"]
