"""The dataset card: what the ingest produced, as a page a person reads instead of a Parquet file.

`build.build_card` counts the pairs manifest, the rejects and the panel table in streamed passes,
tokenises a sample of the captions with the text tower's tokenizer, optionally estimates the figure
types with a trained model (zero-shot over ImageCLEF 2015's modality classes), and writes
`index.html` with its charts (matplotlib PNGs) and `summary.json`, offline and byte-identical for
the same inputs. `render.card_markdown` is the same summary for the Prefect artifact. No Prefect,
no MLflow here: the flow and the DVC stage wire it.
"""
