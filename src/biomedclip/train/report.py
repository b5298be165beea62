"""The training run for people: the loss curve as a figure, the run summary as markdown."""

from __future__ import annotations

from typing import Any


def loss_figure(history: list[dict[str, Any]]):
    """The loss curve as a matplotlib figure (None before the first logged step)."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot([r["step"] for r in history], [r["loss"] for r in history])
    axis.set_xlabel("step")
    axis.set_ylabel("contrastive loss")
    axis.set_title("training loss")
    figure.tight_layout()
    return figure


def markdown(info: dict[str, Any], metrics: dict[str, Any]) -> str:
    """The run summary (the Prefect artifact): profile, MLflow run, steps, model, metrics."""
    rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(metrics.items()))
    return (f"## Training `{info['profile']}`\n\nMLflow run `{info['mlflow_run_id']}`, {info['steps']} steps, "
            f"model `{info['model_dir']}`\n\n| metric | value |\n|---|---|\n{rows}\n")


def text_tower_note(hub_id: str | None) -> str:
    """How plain open_clip finds this folder's text tower, and what to do before moving it."""
    if hub_id:
        return (f"`open_clip_config.json` names the text tower `{hub_id}`, as Microsoft's BiomedCLIP does: "
                "open_clip reads that BERT config from your Hugging Face cache (on a machine with access, "
                f"`hf download {hub_id} config.json vocab.txt` populates it). Uploaded to a hub repo as it is, "
                "this folder loads with `hf-hub:<org>/<repo>`.")
    return ("This vocabulary was built by the pipeline and has no hub id, so `hf_model_name` and "
            "`hf_tokenizer_name` in `open_clip_config.json` say `.`: the folder itself, where the text "
            "tower's `config.json` and tokenizer sit. The folder holds no absolute path, so it can be moved "
            "or downloaded as it is, and every `biomedclip` command (`--model THIS_FOLDER` or "
            "`local-dir:THIS_FOLDER`) reads it from anywhere. Plain open_clip resolves `.` against its "
            "working directory: for `open_clip.create_model_from_pretrained('local-dir:...')` from any "
            "folder, run `biomedclip export THIS_FOLDER OUT` (OUT's config names OUT's absolute path); "
            "before uploading to a hub repo, `biomedclip export THIS_FOLDER OUT --hub-id ORG/REPO`, which "
            "names that repo.")


def model_card(*, title: str, facts: dict[str, Any], metrics: dict[str, Any], hub_id: str | None,
               folder: str) -> str:
    """The model folder's `README.md`: what it is, what it was trained on, how it scores, how to
    load it, what it is for and not for (the card a hub page shows)."""
    fact_rows = "\n".join(f"| {k} | {v} |" for k, v in facts.items())
    # A tower without a hub id is named `.` (the folder itself): open_clip loads an export of it.
    export = "" if hub_id else f"# biomedclip export {folder} my-biomedclip    (then local-dir:my-biomedclip)\n"
    loaded = folder if hub_id else "my-biomedclip"
    metric_rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(metrics.items())) or "| (none measured) | |"
    return f"""---
library_name: open_clip
pipeline_tag: zero-shot-image-classification
tags: [clip, biomedical, pubmed-central]
---

# {title}

A CLIP model for biomedicine (image tower + BERT text tower), in the layout of Microsoft's published
BiomedCLIP: `open_clip_config.json`, the weights, and the text tower's `config.json` and tokenizer.

| | |
|---|---|
{fact_rows}

## Metrics

| metric | value |
|---|---|
{metric_rows}

Measured on the pipeline's own held-out split at training time; `biomedclip evaluate --model
{folder}` measures it on the test split and your benchmarks, `biomedclip compare` against another model.

## Use

```python
{export}import open_clip, torch
model, preprocess = open_clip.create_model_from_pretrained("local-dir:{loaded}")
tokenizer = open_clip.get_tokenizer("local-dir:{loaded}")
model.eval()
with torch.no_grad():
    image = model.encode_image(preprocess(pil_image).unsqueeze(0), normalize=True)
    text = model.encode_text(tokenizer(["chest X-ray showing pneumonia"]), normalize=True)
```

{text_tower_note(hub_id)}

## Intended use

Research on biomedical image-text retrieval, zero-shot classification and as a starting point for
fine-tuning (`train.init_from`). Not for clinical decisions: it was never validated on patients.

## Limitations

- Trained on figures and captions of scientific articles (PubMed Central Open Access): figures are
  not clinical images, and compound figures were kept whole, one caption for all their panels.
- Captions longer than the context length were truncated.
- Licences of the training articles vary (see the ingest's licence counts); check them before
  redistributing a model trained on non-commercial articles.
"""
