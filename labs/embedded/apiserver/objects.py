"""Small helpers on Kubernetes object dicts shared by the API server, controllers and runtime."""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import string
import uuid
from typing import Any

Obj = dict[str, Any]

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the real generator's alphabet: no vowels


def now() -> str:
    """RFC 3339 UTC to the second, as metav1.Time serialises."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    """RFC 3339 UTC with microseconds, as metav1.MicroTime serialises."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def new_uid() -> str:
    return str(uuid.uuid4())


def random_suffix(length: int = 5) -> str:
    return "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(length))


def random_token(length: int = 32) -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(length))


def json_copy(value: Any) -> Any:
    """Deep copy of a JSON value (several times faster than copy.deepcopy)."""
    if isinstance(value, dict):
        return {k: json_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_copy(v) for v in value]
    return value


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: unlike `==`, `true` is not `1` (at any depth)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(json_equal, a, b))
    return type(a) is type(b) and a == b


def json_unique(items: list) -> list:
    """`items` without repeats under `json_equal`, first occurrence kept (JSON values are not
    hashable, and `set` would merge `true` with `1`)."""
    out: list = []
    for item in items:
        if not any(json_equal(item, seen) for seen in out):
            out.append(item)
    return out


def json_dump(value: Any) -> str:
    """Compact JSON with sorted keys, for error messages and field-path keys."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def with_last_applied(obj: Obj) -> Obj:
    """`obj` annotated as `kubectl apply` leaves what it created (its configuration in
    kubectl's JSON, `go_json`, without status or this annotation),
    so a later `kubectl apply` of the same manifest reports it unchanged instead of warning that
    the annotation is missing. For what the cluster installs as if applied."""
    applied = {k: v for k, v in obj.items() if k != "status"}
    annotations = {k: v for k, v in ((applied.get("metadata") or {}).get("annotations") or {}
                                     ).items() if k != LAST_APPLIED}
    applied["metadata"] = {**(applied.get("metadata") or {}), "annotations": annotations}
    if not annotations:
        del applied["metadata"]["annotations"]
    return {**obj, "metadata": {**obj.get("metadata", {}), "annotations": {
        **annotations, LAST_APPLIED: go_json(applied) + "\n"}}}


GO_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                            "\u2028": "\\u2028", "\u2029": "\\u2029"})


def go_json(value: Any) -> str:
    """Compact JSON byte for byte as Go's encoding/json writes it (sorted keys, UTF-8 kept, the
    HTML characters and line separators escaped): kubectl compares its last-applied annotation
    as a string, so any other spelling reads to it as a change."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True,
                      ensure_ascii=False).translate(GO_ESCAPES)


def meta(obj: Obj) -> Obj:
    return obj.setdefault("metadata", {})


def name_of(obj: Obj) -> str:
    return obj.get("metadata", {}).get("name", "")


def namespace_of(obj: Obj) -> str:
    return obj.get("metadata", {}).get("namespace", "")


def uid_of(obj: Obj) -> str:
    return obj.get("metadata", {}).get("uid", "")


def labels_of(obj: Obj) -> dict[str, str]:
    return obj.get("metadata", {}).get("labels") or {}


def owner_reference(owner: Obj, controller: bool = True) -> Obj:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": name_of(owner),
        "uid": uid_of(owner),
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def controller_uid(obj: Obj) -> str | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid")
    return None


def set_condition(status: Obj, ctype: str, value: bool, reason: str, message: str = "") -> bool:
    """Set a status condition; returns True when something changed. Transition time moves only
    when the status flips, as the real controllers do."""
    conditions = status.setdefault("conditions", [])
    wanted = "True" if value else "False"
    for cond in conditions:
        if cond.get("type") == ctype:
            changed = (cond.get("status"), cond.get("reason"), cond.get("message")) != (
                wanted, reason, message)
            if cond.get("status") != wanted:
                cond["lastTransitionTime"] = now()
            cond.update(status=wanted, reason=reason, message=message)
            return changed
    conditions.append({"type": ctype, "status": wanted, "reason": reason, "message": message,
                       "lastTransitionTime": now()})
    return True
