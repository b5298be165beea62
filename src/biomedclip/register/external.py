"""A model trained elsewhere in the registry: Microsoft's published BiomedCLIP, typically, as alias
`baseline`. Its weights as they were published, an MLflow run holding its evaluation on today's
test split and benchmarks, and lineage tags that say *external* (source, weights sha256, config)
instead of training lineage. The same weights register once.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from biomedclip.digests import file_sha256
from biomedclip.evaluate.params import EvaluateParams
from biomedclip.models import located, write_model_folder
from biomedclip.register.lineage_facts import PREFIX, external_tags
from biomedclip.register.params import RegisterParams
from biomedclip.register.promotion import evaluate_uri
from biomedclip.register.registry import (
    BASELINE,
    CHALLENGER,
    CHAMPION,
    RegistryError,
    create_registered_model,
    log_pyfunc,
)
from biomedclip.tracking import TrackingParams, connect, new_run

log = logging.getLogger(__name__)


def register_external(params: RegisterParams, tracking: TrackingParams, evaluate: EvaluateParams, shards_dir: Path,
                      *, source: str, alias: str = BASELINE) -> dict[str, Any]:
    """Register a model trained elsewhere (any model source) as a version with *external*
    lineage, evaluated on today's test split and benchmarks, and point `alias` at it; returns
    {name, version, uri, created, tags}. The same weights are the version already there."""
    import mlflow

    if alias in (CHAMPION, CHALLENGER):
        raise RegistryError(f"alias {alias!r} is the promotion gate's: an external model takes another "
                            f"(e.g. {BASELINE}), and `biomedclip promote --version N` if it should serve")
    client = connect(tracking)
    name = params.model_name
    create_registered_model(client, name)
    with located(source, tracking=tracking) as files, tempfile.TemporaryDirectory(prefix="biomedclip-external-") as tmp:
        sha = file_sha256(files.weights)
        for existing in client.search_model_versions(f"name='{name}'"):
            if existing.tags.get(f"{PREFIX}lineage.kind") == "external" and \
                    existing.tags.get(f"{PREFIX}model.sha256") == sha:
                client.set_registered_model_alias(name, alias, existing.version)
                log.info("%s version %s already holds these weights (%s): alias %s", name, existing.version,
                         sha[:12], alias)
                return {"name": name, "version": int(existing.version), "uri": f"models:/{name}/{existing.version}",
                        "created": False, "tags": dict(existing.tags)}
        # A self-contained copy: the weights as published, the config in today's spelling, the
        # text tower's config and tokenizer beside them (wherever they were found).
        model_dir = Path(tmp) / "model"
        model_dir.mkdir()
        text_name = files.model_cfg.get("text_cfg", {}).get("hf_model_name")
        write_model_folder(model_dir, final=model_dir, weights=files.weights, model_cfg=files.model_cfg,
                           text=files.text, text_name=text_name, preprocess_cfg=files.spec.get("preprocess_cfg"),
                           card=_external_card(files.folder, source, sha))
        run_id = new_run(tracking, f"external: {source}"[:250], {f"{PREFIX}lineage.kind": "external"})
        metrics, _ = evaluate_uri(str(model_dir), evaluate, shards_dir, tracking, mlflow_run_id=run_id)
        tags = external_tags(source=source, weights=files.weights, sha256=sha, model_cfg=files.model_cfg,
                             run_id=run_id, metrics=metrics, shards_manifest=shards_dir / "manifest.json")
        with mlflow.start_run(run_id=run_id):
            mlflow.set_tags(tags)
            logged = log_pyfunc(model_dir)
    registered = mlflow.register_model(logged, name, tags=tags)
    client.set_registered_model_alias(name, alias, registered.version)
    log.info("registered %s as %s version %s (alias %s)", source, name, registered.version, alias)
    return {"name": name, "version": int(registered.version), "uri": f"models:/{name}/{registered.version}",
            "created": True, "tags": tags}


def _external_card(folder: Path, source: str, sha256: str) -> str:
    own = folder / "README.md"
    header = f"Registered from `{source}` (weights sha256 `{sha256}`), as it was published.\n\n"
    return header + (own.read_text(encoding="utf-8", errors="replace") if own.is_file() else "")


# -- decisions ---------------------------------------------------------------------------------
