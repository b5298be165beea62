"""The Prefect event a champion change emits, which automations hang on (the `index/refresh`
deployment re-embeds and re-indexes for the new champion; a team adds notifications).

`biomedclip.model.promoted`, resource `biomedclip.model.<name>`, related to the version; payload:
model, version, `uri` (`models:/NAME/N`), the previous champion, why, and the gate's numbers. A
promotion and a rollback both emit it: either way the served model changed.
"""

from __future__ import annotations

import logging
import os
from typing import Any

PROMOTED_EVENT = "biomedclip.model.promoted"
log = logging.getLogger(__name__)


def announce_champion(name: str, record: dict[str, Any]) -> None:
    """Emit `PROMOTED_EVENT` for the decision `record` (a promotion or a rollback that moved
    `champion` to `record["version"]`) to the Prefect API of this process."""
    from prefect.events import emit_event

    version = int(record["version"])
    emit_event(
        event=PROMOTED_EVENT,
        resource={"prefect.resource.id": f"biomedclip.model.{name}", "prefect.resource.name": name},
        related=[{"prefect.resource.id": f"biomedclip.model-version.{name}.{version}",
                  "prefect.resource.role": "model-version", "prefect.resource.name": f"{name} v{version}"}],
        payload={"model": name, "version": version, "uri": f"models:/{name}/{version}", "action": record.get("action"),
                 "previous_champion": record.get("previous_champion"), "why": record.get("why") or record.get("reason"),
                 "metrics": record.get("challenger_metrics", {})},
    )


def announce_if_served(name: str, record: dict[str, Any]) -> bool:
    """`announce_champion` when a Prefect server is named (PREFECT_API_URL): its automations are
    what the event is for. Without one nothing listens, and starting a temporary server to tell
    it would only cost seconds; a failure to reach the server is logged, never the decision's."""
    if not os.environ.get("PREFECT_API_URL"):
        log.info("no PREFECT_API_URL: the champion change is not announced (nothing would hear it)")
        return False
    try:
        announce_champion(name, record)
    except Exception as exc:  # the decision is made and recorded; the announcement is a courtesy
        log.warning("the champion change could not be announced to %s: %s", os.environ["PREFECT_API_URL"], exc)
        return False
    return True
