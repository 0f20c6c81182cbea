"""Flagger's events (fluxcd/flagger v1.44.0 `pkg/controller/events.go`): every message is logged
and recorded as a Kubernetes Event of reason `Synced` on the Canary (`recordEventInfof` →
Normal; `recordEventWarningf` and `recordEventErrorf` → Warning), then POSTed to the Canary's
`event` webhooks.

Not emulated: alerts (`analysis.alerts` with AlertProviders, the global Slack/Teams notifier):
no message leaves the cluster; the AlertProvider kind is served so manifests still apply.
"""

from __future__ import annotations

import logging
from typing import Any

from labs.embedded.apiserver.api import ObjectApi

from . import spec
from .webhooks import WebhookError, call_event_webhook

Obj = dict[str, Any]
REASON = "Synced"
COMPONENT = "flagger"
log = logging.getLogger("meshlab.flagger")


class Recorder:
    def __init__(self, api: ObjectApi) -> None:
        self.api = api

    async def info(self, cd: Obj, message: str) -> None:
        await self._record(cd, "Normal", message)

    async def warning(self, cd: Obj, message: str) -> None:
        await self._record(cd, "Warning", message)

    async def error(self, cd: Obj, message: str) -> None:
        log.error("%s: %s", spec.key(cd), message)
        await self._record(cd, "Warning", message, logged=True)

    async def _record(self, cd: Obj, event_type: str, message: str,
                      logged: bool = False) -> None:
        if not logged:
            log.info("%s: %s", spec.key(cd), message)
        self.api.record_event(cd, event_type, REASON, message, component=COMPONENT)
        for hook in spec.analysis(cd).get("webhooks") or []:
            if hook.get("type") == "event":
                try:
                    await call_event_webhook(self.api, cd, hook, message, event_type)
                except WebhookError as err:
                    log.error("%s: error sending event to webhook: %s", spec.key(cd), err)
