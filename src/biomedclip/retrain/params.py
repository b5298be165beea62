"""The `retrain` section: syncing PMC, the scheduled retrain, its lock."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from biomedclip.config import PathValue, Rate, S3Params, Section, Slug

# The aliases Prefect's schedules (croniter) accept, as the 5 fields they stand for.
CRON_ALIASES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
                "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}


def cron_problem(expression: str) -> str | None:
    """Why `expression` is not a standard 5-field cron expression (or an alias), None if it is."""
    from cronsim import CronSim, CronSimError

    fields = CRON_ALIASES.get(expression.strip(), expression)
    if (count := len(fields.split())) != 5:
        return f"{count} fields, where cron has 5: minute hour day-of-month month day-of-week"
    try:
        CronSim(fields, dt.datetime(2026, 1, 1))
    except CronSimError as exc:
        return str(exc).lower()
    return None


class ScheduleParams(Section):
    """When the retrain deployment runs (`biomedclip schedule`, `prefect.yaml`)."""

    deployment: Slug = "weekly"  # the deployment is `retrain/<this>`
    cron: str = "0 3 * * 1"  # Mondays 03:00
    timezone: str = "UTC"  # an IANA name: Europe/London, America/New_York, ...

    @model_validator(mode="after")
    def _valid(self) -> Self:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        if problem := cron_problem(self.cron):
            raise ValueError(f"cron: {self.cron!r} is not a cron expression ({problem}; e.g. '0 3 * * 1')")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone: {self.timezone!r} is not an IANA time zone") from None
        return self


class RetrainParams(Section):
    """`biomedclip retrain` / `schedule`: sync new PMC versions, dvc repro, push, register, gate."""

    source: str | None = None  # a folder or s3://bucket/prefix in PMC's layout; null: no sync step
    listing: Literal["prefix", "inventory"] = "prefix"
    s3: S3Params = S3Params()
    workers: Annotated[int, Field(ge=1, le=64)] = 8  # concurrent listings and downloads
    max_removed_fraction: Rate = 0.05  # a sync removing more local versions than this stops
    state_dir: PathValue = Path("data/sync-state")  # what was mirrored (not versioned)
    data_dvc: PathValue = Path("data.dvc")  # the .dvc file recording ingest.source
    push: bool = True  # dvc push after dvc repro
    promote: bool = True  # run the promotion gate on the registered version
    git_branch: str | None = None  # commit the data version (data.dvc, dvc.lock, ...) on this branch
    # the flow-run records are not here: DVC versions them (dvc.lock), in its cache
    git_paths: Annotated[tuple[str, ...], Field(strict=False)] = ("data.dvc", "dvc.lock", "metrics", "registry")
    on_busy: Literal["skip", "wait"] = "skip"  # a retrain already running: skip this one, or wait
    wait_timeout_s: Annotated[int, Field(ge=1)] = 6 * 3600
    lock: PathValue = Path(".retrain.lock")
    schedule: ScheduleParams = ScheduleParams()
