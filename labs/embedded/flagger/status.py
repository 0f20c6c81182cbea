"""Writing a Canary's status as Flagger does (fluxcd/flagger v1.44.0 `pkg/canary/status.go`,
`pkg/canary/deployment_status.go`): each setter re-reads the Canary, changes its fields on a
copy and PUTs the `status` subresource, like the RetryOnConflict loops there.

The `Promoted` condition (MakeStatusConditions) is replaced only when its status or reason
changes; its lastTransitionTime survives a reason change that keeps the status.
"""

from __future__ import annotations

from typing import Any

from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.objects import now
from labs.embedded.apiserver.resources import ResourceType

from .spec import analysis

Obj = dict[str, Any]
MANAGER = "flagger"

# Phases (pkg/apis/flagger/v1beta1/status.go)
INITIALIZING, INITIALIZED = "Initializing", "Initialized"
WAITING, PROGRESSING = "Waiting", "Progressing"
WAITING_PROMOTION, PROMOTING, FINALISING = "WaitingPromotion", "Promoting", "Finalising"
SUCCEEDED, FAILED = "Succeeded", "Failed"


def condition_for(kind: str, phase: str) -> tuple[str, str]:
    """(status, message) of the Promoted condition for `phase`."""
    return {
        INITIALIZING: ("Unknown", f"New {kind} detected, starting initialization."),
        INITIALIZED: ("True", f"{kind} initialization completed."),
        WAITING: ("Unknown", "Waiting for approval."),
        WAITING_PROMOTION: ("Unknown", "Waiting for approval."),
        PROGRESSING: ("Unknown", "New revision detected, progressing canary analysis."),
        PROMOTING: ("Unknown", "Canary analysis completed, starting primary rolling update."),
        FINALISING: ("Unknown", "Canary analysis completed, routing all traffic to primary."),
        SUCCEEDED: ("True", "Canary analysis completed successfully, promotion finished."),
        FAILED: ("False", f"Canary analysis failed, {kind} scaled to zero."),
    }.get(phase, ("Unknown", f"New {kind} detected, starting initialization."))


def make_conditions(cd: Obj, phase: str) -> list[Obj] | None:
    """MakeStatusConditions: the new conditions, or None when Promoted already says this."""
    current = next((c for c in (cd.get("status") or {}).get("conditions") or []
                    if c.get("type") == "Promoted"), None)
    status, message = condition_for(
        ((cd.get("spec") or {}).get("targetRef") or {}).get("kind", "Deployment"), phase)
    stamp = now()
    new = {"type": "Promoted", "status": status, "lastUpdateTime": stamp,
           "lastTransitionTime": stamp, "reason": phase, "message": message}
    if current is not None and current.get("status") == status and \
            current.get("reason") == phase:
        return None
    if current is not None and current.get("status") == status:
        new["lastTransitionTime"] = current.get("lastTransitionTime", stamp)
    return [new]


class StatusWriter:
    """The status setters of a canary.Controller, for one API."""

    def __init__(self, api: ObjectApi, canaries: ResourceType) -> None:
        self.api = api
        self.canaries = canaries

    def _update(self, cd: Obj, change: Any) -> Obj:
        meta = cd["metadata"]
        fresh = self.api.get(self.canaries, meta["namespace"], meta["name"])
        status = fresh.setdefault("status", {})
        change(fresh, status)
        status["lastTransitionTime"] = now()
        return self.api.update(self.canaries, meta["namespace"], meta["name"], fresh,
                               subresource="status", manager=MANAGER).object

    def set_initializing(self, cd: Obj) -> Obj:
        """setPhaseInitializing (scheduler.go): conditions, phase, time."""
        def change(fresh: Obj, status: Obj) -> None:
            conditions = make_conditions(fresh, INITIALIZING)
            if conditions is not None:
                status["conditions"] = conditions
            status["phase"] = INITIALIZING
        return self._update(cd, change)

    def sync(self, cd: Obj, phase: str, spec_hash: str, tracked_configs: dict[str, str], *,
             canary_weight: int = 0, failed_checks: int = 0, iterations: int = 0) -> Obj:
        """syncCanaryStatus: phase and counters as given, lastAppliedSpec = the target's
        template hash (and lastPromotedSpec too when Initialized), the tracked configs."""
        def change(fresh: Obj, status: Obj) -> None:
            status.update(phase=phase, canaryWeight=canary_weight, failedChecks=failed_checks,
                          iterations=iterations, lastAppliedSpec=spec_hash,
                          trackedConfigs=tracked_configs)
            if phase == INITIALIZED:
                status["lastPromotedSpec"] = spec_hash
            conditions = make_conditions(cd, phase)
            if conditions is not None:
                status["conditions"] = conditions
        return self._update(cd, change)

    def set_failed_checks(self, cd: Obj, value: int) -> Obj:
        return self._update(cd, lambda _f, s: s.update(failedChecks=value))

    def set_weight(self, cd: Obj, value: int) -> Obj:
        return self._update(cd, lambda _f, s: s.update(canaryWeight=value))

    def set_iterations(self, cd: Obj, value: int) -> Obj:
        return self._update(cd, lambda _f, s: s.update(iterations=value))

    def set_phase(self, cd: Obj, phase: str) -> Obj:
        """setStatusPhase: outside Progressing/Waiting/Promoting weight and iterations reset;
        Initialized/Succeeded record the applied spec as promoted."""
        def change(fresh: Obj, status: Obj) -> None:
            status["phase"] = phase
            if phase not in (PROGRESSING, WAITING, PROMOTING):
                status["canaryWeight"] = 0
                status["iterations"] = 0
                if phase == WAITING_PROMOTION:
                    status["iterations"] = int(analysis(cd).get("iterations") or 0) - 1
            if phase in (INITIALIZED, SUCCEEDED):
                status["lastPromotedSpec"] = (cd.get("status") or {}).get("lastAppliedSpec", "")
            conditions = make_conditions(fresh, phase)
            if conditions is not None:
                status["conditions"] = conditions
        return self._update(cd, change)
