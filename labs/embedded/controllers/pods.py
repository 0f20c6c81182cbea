"""Pod state as the controllers judge it (the rules of k8s.io/kubernetes/pkg/api/v1/pod)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from labs.embedded.apiserver.objects import parse_time

Obj = dict[str, Any]

TERMINAL_PHASES = ("Succeeded", "Failed")


def phase(pod: Obj) -> str:
    return pod.get("status", {}).get("phase", "Pending")


def is_terminating(pod: Obj) -> bool:
    return bool(pod.get("metadata", {}).get("deletionTimestamp"))


def is_active(pod: Obj) -> bool:
    """Counts towards a ReplicaSet's replicas: not being deleted, not finished."""
    return not is_terminating(pod) and phase(pod) not in TERMINAL_PHASES


def ready_condition(pod: Obj) -> Obj | None:
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond
    return None


def is_ready(pod: Obj) -> bool:
    cond = ready_condition(pod)
    return cond is not None and cond.get("status") == "True"


def seconds_until_available(pod: Obj, min_ready_seconds: int, now: dt.datetime) -> float | None:
    """None when the pod is not ready; 0 once it has been ready for `min_ready_seconds`;
    otherwise how long is left."""
    cond = ready_condition(pod)
    if cond is None or cond.get("status") != "True":
        return None
    if min_ready_seconds <= 0:
        return 0.0
    since = cond.get("lastTransitionTime")
    if not since:
        return 0.0
    left = (parse_time(since) + dt.timedelta(seconds=min_ready_seconds) - now).total_seconds()
    return max(left, 0.0)


def restart_count(pod: Obj) -> int:
    return sum(int(cs.get("restartCount", 0))
               for cs in pod.get("status", {}).get("containerStatuses") or [])
