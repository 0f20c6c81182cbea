"""The webhook gates around the analysis (fluxcd/flagger v1.44.0
`pkg/controller/scheduler_hooks.go`), each with upstream's events and phase changes."""

from __future__ import annotations

from typing import Any

from labs.embedded.apiserver.api import ObjectApi

from . import spec
from .events import Recorder
from .status import PROGRESSING, WAITING, WAITING_PROMOTION, StatusWriter
from .webhooks import WebhookError, call_webhook

Obj = dict[str, Any]


def _hooks(cd: Obj, kind: str) -> list[Obj]:
    return [h for h in spec.analysis(cd).get("webhooks") or [] if h.get("type") == kind]


class Hooks:
    def __init__(self, api: ObjectApi, events: Recorder, status: StatusWriter) -> None:
        self.api, self.events, self.status = api, events, status

    async def _call(self, cd: Obj, phase: str, hook: Obj) -> str | None:
        """The webhook's error message, or None when it approved."""
        try:
            await call_webhook(self.api, cd, phase, hook)
        except WebhookError as err:
            return str(err)
        return None

    async def confirm_rollout(self, cd: Obj) -> bool:
        for hook in _hooks(cd, "confirm-rollout"):
            phase = (cd.get("status") or {}).get("phase", "")
            if await self._call(cd, phase, hook) is not None:
                if phase != WAITING:
                    self.status.set_phase(cd, WAITING)
                    await self.events.warning(cd, f"Halt {spec.key(cd)} advancement waiting "
                                                  f"for approval {hook.get('name')}")
                return False
            await self.events.info(cd, f"Confirm-rollout check {hook.get('name')} passed")
        return True

    async def confirm_traffic_increase(self, cd: Obj) -> bool:
        for hook in _hooks(cd, "confirm-traffic-increase"):
            if await self._call(cd, PROGRESSING, hook) is not None:
                await self.events.warning(cd, f"Halt {spec.key(cd)} advancement waiting for "
                                              f"traffic increase approval {hook.get('name')}")
                return False
            await self.events.info(
                cd, f"Confirm-traffic-increase check {hook.get('name')} passed")
        return True

    async def confirm_promotion(self, cd: Obj) -> bool:
        for hook in _hooks(cd, "confirm-promotion"):
            if await self._call(cd, PROGRESSING, hook) is not None:
                if (cd.get("status") or {}).get("phase") != WAITING_PROMOTION:
                    self.status.set_phase(cd, WAITING_PROMOTION)
                    await self.events.warning(
                        cd, f"Halt {spec.key(cd)} advancement waiting for promotion approval "
                            f"{hook.get('name')}")
                else:
                    self.status.set_iterations(
                        cd, int(spec.analysis(cd).get("iterations") or 0) - 1)
                return False
            await self.events.info(cd, f"Confirm-promotion check {hook.get('name')} passed")
        return True

    async def pre_rollout(self, cd: Obj) -> bool:
        for hook in _hooks(cd, "pre-rollout"):
            error = await self._call(cd, PROGRESSING, hook)
            if error is not None:
                await self.events.warning(cd, f"Halt {spec.key(cd)} advancement pre-rollout "
                                              f"check {hook.get('name')} failed {error}")
                return False
            await self.events.info(cd, f"Pre-rollout check {hook.get('name')} passed")
        return True

    async def rollout(self, cd: Obj) -> bool:
        """The `rollout` hooks (also those without a type) of runAnalysis."""
        for hook in spec.analysis(cd).get("webhooks") or []:
            if hook.get("type") in (None, "", "rollout"):
                error = await self._call(cd, PROGRESSING, hook)
                if error is not None:
                    await self.events.warning(
                        cd, f"Halt {spec.key(cd)} advancement external check "
                            f"{hook.get('name')} failed {error}")
                    return False
        return True

    async def post_rollout(self, cd: Obj, phase: str) -> bool:
        for hook in _hooks(cd, "post-rollout"):
            error = await self._call(cd, phase, hook)
            if error is not None:
                await self.events.warning(cd, f"Post-rollout hook {hook.get('name')} failed "
                                              f"{error}")
                return False
            await self.events.info(cd, f"Post-rollout check {hook.get('name')} passed")
        return True

    async def rollback(self, cd: Obj, phase: str) -> bool:
        """True when a rollback hook asks for a rollback (answers 2xx)."""
        for hook in _hooks(cd, "rollback"):
            if await self._call(cd, phase, hook) is not None:
                await self.events.info(cd, f"Rollback hook {hook.get('name')} not signaling "
                                           "a rollback")
            else:
                await self.events.warning(cd, f"Rollback check {hook.get('name')} passed")
                return True
        return False
