"""The arithmetic and bookkeeping of pkg/controller/deployment/util, on plain dicts.

Kept apart from the controller loop so the rules `kubectl rollout` depends on (surge and
unavailability rounding, template hashing, revision annotations, conditions) read as the
real ones do.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
from typing import Any

from labs.embedded.apiserver.objects import LAST_APPLIED, now, parse_time

Obj = dict[str, Any]

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
ROLLBACK_TO = "deprecated.deployment.rollback.to"
# Deployment annotations never copied onto its ReplicaSets (and kept by `rollout undo`).
ANNOTATIONS_TO_SKIP = frozenset({LAST_APPLIED, REVISION, REVISION_HISTORY, DESIRED_REPLICAS,
                                 MAX_REPLICAS, ROLLBACK_TO})
MAX_REVISION_HISTORY_CHARS = 2000
NO_PROGRESS_DEADLINE = 2**31 - 1

_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand alphanums


# -- sizes -------------------------------------------------------------------------------------
def replicas(obj: Obj | None) -> int:
    return int(obj["spec"].get("replicas", 1)) if obj else 0


def status_count(obj: Obj | None, field: str) -> int:
    return int((obj or {}).get("status", {}).get(field, 0) or 0)


def sum_replicas(rss: list[Obj]) -> int:
    return sum(replicas(rs) for rs in rss)


def sum_status(rss: list[Obj], field: str) -> int:
    return sum(status_count(rs, field) for rs in rss)


def active(rss: list[Obj]) -> list[Obj]:
    """FilterActiveReplicaSets: those asked to run at least one pod."""
    return [rs for rs in rss if replicas(rs) > 0]


def scaled_value(value: int | str, total: int, round_up: bool, field: str) -> int:
    """GetScaledValueFromIntOrPercent: ints as is, "25%" of `total` rounded up or down."""
    if isinstance(value, bool):
        raise ValueError(f"{field}: {value!r} is not a number or a percentage like '25%'")
    if isinstance(value, int):
        return value
    text = str(value)
    if not text.endswith("%") or not text[:-1].strip().isdigit():
        raise ValueError(f"{field}: {text!r} is not a number or a percentage like '25%'")
    scaled = int(text[:-1]) * total / 100
    return math.ceil(scaled) if round_up else math.floor(scaled)


def is_rolling(d: Obj) -> bool:
    return d["spec"].get("strategy", {}).get("type", "RollingUpdate") == "RollingUpdate"


def fenceposts(d: Obj) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) in pods: surge rounds up, unavailable rounds down, and both
    zero would deadlock the rollout, so unavailable becomes 1."""
    rolling = d["spec"].get("strategy", {}).get("rollingUpdate") or {}
    desired = replicas(d)
    surge = scaled_value(rolling.get("maxSurge", "25%"), desired, True,
                         "spec.strategy.rollingUpdate.maxSurge")
    unavailable = scaled_value(rolling.get("maxUnavailable", "25%"), desired, False,
                               "spec.strategy.rollingUpdate.maxUnavailable")
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def max_surge(d: Obj) -> int:
    return fenceposts(d)[0] if is_rolling(d) else 0


def max_unavailable(d: Obj) -> int:
    if not is_rolling(d) or replicas(d) == 0:
        return 0
    return min(fenceposts(d)[1], replicas(d))


# -- templates ---------------------------------------------------------------------------------
def _pruned(value: Any) -> Any:
    """Drop empty maps and lists: Go's semantic equality treats nil and empty alike."""
    if isinstance(value, dict):
        out = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in ({}, [], None)}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def without_hash(template: Obj) -> Obj:
    template = copy.deepcopy(template)
    labels = template.get("metadata", {}).get("labels")
    if labels:
        labels.pop(HASH_LABEL, None)
    return _pruned(template)


def equal_ignore_hash(a: Obj, b: Obj) -> bool:
    return without_hash(a) == without_hash(b)


def _fnv32a(data: bytes) -> int:
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def template_hash(template: Obj, collision_count: int | None) -> str:
    """ComputeHash: FNV-32a of the template (and collisionCount), spelt in the safe alphabet,
    giving names like `web-7d9c6b5f8`."""
    data = json.dumps(_pruned(template), sort_keys=True, separators=(",", ":")).encode()
    if collision_count is not None:
        data += int(collision_count).to_bytes(8, "little")
    return "".join(_SAFE_ALPHABET[ord(ch) % len(_SAFE_ALPHABET)] for ch in str(_fnv32a(data)))


# -- annotations -------------------------------------------------------------------------------
def annotations_of(obj: Obj) -> dict[str, str]:
    return obj["metadata"].setdefault("annotations", {})


def revision(rs: Obj) -> int:
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def max_revision(rss: list[Obj]) -> int:
    return max((revision(rs) for rs in rss), default=0)


def set_new_rs_annotations(d: Obj, rs: Obj, new_revision: int, exists: bool) -> bool:
    """SetNewReplicaSetAnnotations: copy the deployment's annotations, raise the revision (keeping
    the old one in revision-history when this is a rollback), and size annotations when new."""
    changed = False
    rs_annotations = annotations_of(rs)
    for key, value in (d["metadata"].get("annotations") or {}).items():
        if key in ANNOTATIONS_TO_SKIP or rs_annotations.get(key) == value:
            continue
        rs_annotations[key] = value
        changed = True
    had_revision = REVISION in rs_annotations
    old = revision(rs)
    if old < new_revision:
        rs_annotations[REVISION] = str(new_revision)
        changed = True
        if had_revision:
            history = [h for h in rs_annotations.get(REVISION_HISTORY, "").split(",") if h]
            history.append(str(old))
            while history and len(",".join(history)) > MAX_REVISION_HISTORY_CHARS:
                history.pop(0)
            rs_annotations[REVISION_HISTORY] = ",".join(history)
    if not exists and set_replicas_annotations(rs, replicas(d), replicas(d) + max_surge(d)):
        changed = True
    return changed


def replicas_annotations_need_update(rs: Obj, desired: int, maximum: int) -> bool:
    current = rs["metadata"].get("annotations") or {}
    return current.get(DESIRED_REPLICAS) != str(desired) or current.get(MAX_REPLICAS) != str(
        maximum)


def set_replicas_annotations(rs: Obj, desired: int, maximum: int) -> bool:
    if not replicas_annotations_need_update(rs, desired, maximum):
        return False
    annotations_of(rs).update({DESIRED_REPLICAS: str(desired), MAX_REPLICAS: str(maximum)})
    return True


def desired_replicas_annotation(rs: Obj) -> int | None:
    try:
        return int((rs["metadata"].get("annotations") or {})[DESIRED_REPLICAS])
    except (KeyError, ValueError):
        return None


def max_replicas_annotation(rs: Obj) -> int | None:
    try:
        return int((rs["metadata"].get("annotations") or {})[MAX_REPLICAS])
    except (KeyError, ValueError):
        return None


# -- ordering ----------------------------------------------------------------------------------
def by_creation(rs: Obj) -> tuple[float, str]:
    stamp = rs["metadata"].get("creationTimestamp")
    return (parse_time(stamp).timestamp() if stamp else 0.0, rs["metadata"]["name"])


def by_revision(rs: Obj) -> tuple[int, float, str]:
    return (revision(rs), *by_creation(rs))


# -- conditions (DeploymentCondition carries lastUpdateTime as well) ----------------------------
def new_condition(ctype: str, status: str, reason: str, message: str) -> Obj:
    stamp = now()
    return {"type": ctype, "status": status, "lastUpdateTime": stamp,
            "lastTransitionTime": stamp, "reason": reason, "message": message}


def get_condition(status: Obj, ctype: str) -> Obj | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == ctype), None)


def set_condition(status: Obj, condition: Obj) -> None:
    """SetDeploymentCondition: same status and reason is no change; same status keeps the
    transition time; the condition moves to the end of the list."""
    current = get_condition(status, condition["type"])
    if current is not None and (current.get("status"), current.get("reason")) == (
            condition["status"], condition["reason"]):
        return
    if current is not None and current.get("status") == condition["status"]:
        condition["lastTransitionTime"] = current.get("lastTransitionTime")
    remove_condition(status, condition["type"])
    status.setdefault("conditions", []).append(condition)


def remove_condition(status: Obj, ctype: str) -> None:
    kept = [c for c in status.get("conditions") or [] if c.get("type") != ctype]
    if kept:
        status["conditions"] = kept
    else:
        status.pop("conditions", None)


def has_progress_deadline(d: Obj) -> bool:
    deadline = d["spec"].get("progressDeadlineSeconds")
    return deadline is not None and int(deadline) != NO_PROGRESS_DEADLINE


def seconds_since(stamp: str | None) -> float:
    if not stamp:
        return 0.0
    return (dt.datetime.now(dt.UTC) - parse_time(stamp)).total_seconds()
