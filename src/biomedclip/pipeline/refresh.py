"""Prefect flow `index`, deployment `index/refresh`: the corpus re-embedded and re-indexed for a
new champion, run by the `biomedclip.model.promoted` event (a promotion or a rollback).

The `embed` and `index` stages' own entries run, for the model the event names (by version,
`models:/NAME/N`), holding their locks, and record this flow run beside their outputs. Where
`embed.model` is the champion alias (`@champion`, `models:/NAME@champion`), those outputs are what
the stages' definition now means: `dvc commit` records them in `dvc.lock`. Otherwise the stages'
outputs now differ from their definition and `dvc status` says so (`dvc repro` rebuilds them for
`embed.model`). A search never answers from an index whose model is not the one it names: the
search opens the index with the model the index records.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from biomedclip.models import model_uri
from biomedclip.params import Params, load_params
from biomedclip.pipeline.events import PROMOTED_EVENT
from biomedclip.pipeline.flows import publish
from biomedclip.pipeline.runner import run_stage
from biomedclip.pipeline.runtime import current_flow_run, record_flow_run
from biomedclip.pipeline.stages import stage
from biomedclip.stage import StageContext

log = logging.getLogger(__name__)
DEPLOYMENT = "refresh"  # served as index/refresh
REFRESHED = ("embed", "index")


def follows_champion(params: Params) -> bool:
    """Whether the embed stage is defined as the champion's (then a refresh is what it means)."""
    name = params.register.model_name
    return params.embed.model is not None and model_uri(params.embed.model, name) == f"models:/{name}@champion"


@flow(name="index")
def refresh_flow(model: str, params_path: str = "params.yaml") -> dict[str, Any]:
    """Re-embed and re-index the corpus for `model` (the new champion, as the event names it)."""
    params = load_params(Path(params_path))
    chosen = params.model_copy(update={"embed": params.embed.model_copy(update={"model": model})})
    context = StageContext(params_path=Path(params_path), flow_run_id=current_flow_run().id)
    done = {}
    for name in REFRESHED:
        stage_ = stage(name)
        report = task(run_stage, name=name, cache_policy=NO_CACHE)(stage_, chosen, context)
        publish(stage_, report)
        record_flow_run(chosen, name)
        done[name] = report.markdown()
    if follows_champion(params) and Path("dvc.yaml").is_file():
        from biomedclip.retrain.workspace import run_command

        run_command("dvc", "commit", "--force", *REFRESHED)
        get_run_logger().info("embed.model is the champion: dvc.lock records the refreshed %s", ", ".join(REFRESHED))
    elif follows_champion(params):
        get_run_logger().info("no dvc.yaml here: the refreshed %s are not recorded by DVC", ", ".join(REFRESHED))
    else:
        get_run_logger().warning("embed.model is %s, not the champion alias: the refreshed outputs differ from the "
                                 "stages' definition until `dvc repro` (set embed.model: models:/%s@champion to "
                                 "keep them)", params.embed.model or "the train stage's model",
                                 params.register.model_name)
    return {"model": model, "reports": done}


def refresh_deployment(params_path: Path, model_name: str) -> Any:
    """`index/refresh`, run by every `biomedclip.model.promoted` event of `model_name`, one run at
    a time (a second promotion meanwhile waits, then refreshes for the newer champion)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    trigger = DeploymentEventTrigger(expect={PROMOTED_EVENT},
                                     match={"prefect.resource.id": f"biomedclip.model.{model_name}"},
                                     parameters={"model": "{{ event.payload.uri }}", "params_path": str(params_path)})
    return refresh_flow.to_deployment(
        name=DEPLOYMENT, triggers=[trigger], parameters={"params_path": str(params_path)},
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        tags=["biomedclip", "index"], description=(__doc__ or "").splitlines()[0],
        entrypoint_type=EntrypointType.MODULE_PATH)
