"""Deployment status and the Progressing condition (calculateStatus and progress.go).

`kubectl rollout status` reads exactly these fields: observedGeneration, the replica counts and
the Progressing reason (ProgressDeadlineExceeded makes it fail).
"""

from __future__ import annotations

import copy
from typing import Any

from . import deployment_util as du

Obj = dict[str, Any]

PROGRESSING, AVAILABLE, REPLICA_FAILURE = "Progressing", "Available", "ReplicaFailure"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"


def _count(status: Obj, field: str) -> int:
    return int(status.get(field, 0))


def calculate_status(d: Obj, all_rss: list[Obj], new_rs: Obj | None) -> Obj:
    """Counts summed over the ReplicaSets, plus the Available condition. Zero counts are left
    out, as Go's `omitempty` leaves them out of a real server's JSON."""
    available = du.sum_status(all_rss, "availableReplicas")
    counts = {
        "observedGeneration": int(d["metadata"].get("generation", 0)),
        "replicas": du.sum_status(all_rss, "replicas"),
        "updatedReplicas": du.status_count(new_rs, "replicas"),
        "readyReplicas": du.sum_status(all_rss, "readyReplicas"),
        "availableReplicas": available,
        "unavailableReplicas": max(du.sum_replicas(all_rss) - available, 0),
    }
    status: Obj = {k: v for k, v in counts.items() if v}
    status["terminatingReplicas"] = du.sum_status(all_rss, "terminatingReplicas")
    if d["status"].get("conditions"):
        status["conditions"] = copy.deepcopy(d["status"]["conditions"])
    if "collisionCount" in d["status"]:
        status["collisionCount"] = d["status"]["collisionCount"]
    if available >= du.replicas(d) - du.max_unavailable(d):
        du.set_condition(status, du.new_condition(
            AVAILABLE, "True", "MinimumReplicasAvailable", "Deployment has minimum availability."))
    else:
        du.set_condition(status, du.new_condition(
            AVAILABLE, "False", "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability."))
    return status


def deployment_complete(d: Obj, status: Obj) -> bool:
    desired = du.replicas(d)
    return (_count(status, "updatedReplicas") == desired
            and _count(status, "replicas") == desired
            and _count(status, "availableReplicas") == desired
            and _count(status, "observedGeneration") >= int(d["metadata"].get("generation", 0)))


def deployment_progressing(d: Obj, new: Obj) -> bool:
    """More updated, ready or available pods, or fewer old ones, than last time."""
    old = d["status"]
    old_old = _count(old, "replicas") - _count(old, "updatedReplicas")
    new_old = _count(new, "replicas") - _count(new, "updatedReplicas")
    return (_count(new, "updatedReplicas") > _count(old, "updatedReplicas")
            or new_old < old_old
            or _count(new, "readyReplicas") > _count(old, "readyReplicas")
            or _count(new, "availableReplicas") > _count(old, "availableReplicas"))


def deployment_timed_out(d: Obj, status: Obj) -> bool:
    cond = du.get_condition(status, PROGRESSING)
    if cond is None or cond.get("reason") == NEW_RS_AVAILABLE:
        return False
    if cond.get("reason") == TIMED_OUT:
        return True
    deadline = int(d["spec"]["progressDeadlineSeconds"])
    return du.seconds_since(cond.get("lastUpdateTime")) > deadline


def replica_failures(all_rss: list[Obj], new_rs: Obj | None) -> list[Obj]:
    """ReplicaFailure conditions of the new ReplicaSet, else of any other."""
    def failures(rs: Obj) -> list[Obj]:
        return [{"type": REPLICA_FAILURE, "status": c.get("status"),
                 "lastUpdateTime": c.get("lastTransitionTime"),
                 "lastTransitionTime": c.get("lastTransitionTime"),
                 "reason": c.get("reason"), "message": c.get("message")}
                for c in rs.get("status", {}).get("conditions") or []
                if c.get("type") == REPLICA_FAILURE]

    if new_rs is not None and (found := failures(new_rs)):
        return found
    return [c for rs in all_rss for c in failures(rs)]


def rollout_status(d: Obj, all_rss: list[Obj], new_rs: Obj | None) -> Obj:
    """syncRolloutStatus: the status with Progressing brought up to date."""
    status = calculate_status(d, all_rss, new_rs)
    deadline = du.has_progress_deadline(d)
    if not deadline:
        du.remove_condition(status, PROGRESSING)
    current = du.get_condition(d["status"], PROGRESSING)
    complete = (_count(status, "replicas") == _count(status, "updatedReplicas")
                and current is not None and current.get("reason") == NEW_RS_AVAILABLE)
    subject = (f'ReplicaSet "{new_rs["metadata"]["name"]}"' if new_rs is not None
               else f'Deployment "{d["metadata"]["name"]}"')
    if deadline and not complete:
        if deployment_complete(d, status):
            du.set_condition(status, du.new_condition(
                PROGRESSING, "True", NEW_RS_AVAILABLE, f"{subject} has successfully progressed."))
        elif deployment_progressing(d, status):
            cond = du.new_condition(PROGRESSING, "True", RS_UPDATED, f"{subject} is progressing.")
            if current is not None:
                if current.get("status") == "True":
                    cond["lastTransitionTime"] = current.get("lastTransitionTime")
                du.remove_condition(status, PROGRESSING)
            du.set_condition(status, cond)
        elif deployment_timed_out(d, status):
            du.set_condition(status, du.new_condition(
                PROGRESSING, "False", TIMED_OUT, f"{subject} has timed out progressing."))
    failures = replica_failures(all_rss, new_rs)
    if failures:
        du.set_condition(status, failures[0])
    else:
        du.remove_condition(status, REPLICA_FAILURE)
    return status


def progress_check_after(d: Obj, status: Obj) -> float | None:
    """requeueStuckDeployment: seconds until the progress deadline would pass, if it can."""
    current = du.get_condition(d["status"], PROGRESSING)
    if not du.has_progress_deadline(d) or current is None:
        return None
    if deployment_complete(d, status) or current.get("reason") == TIMED_OUT:
        return None
    left = int(d["spec"]["progressDeadlineSeconds"]) - du.seconds_since(
        current.get("lastUpdateTime"))
    return 1.0 if left < 1 else left + 1
