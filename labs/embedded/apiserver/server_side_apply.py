"""Server-side apply (`application/apply-patch+yaml`, `kubectl apply --server-side`): merge an
apply configuration into the live object and take ownership of its fields, refusing (409) to
change fields another manager owns unless forced.

Server-side apply is a subset of structured-merge-diff. Simplified on purpose:
- field types come from the generated Python models; custom resources are untyped apart from
  `metadata` (objects are maps, every list is atomic), whatever `x-kubernetes-list-type` their
  CRD declares;
- explicit nulls in an apply configuration are dropped instead of being owned as "unset";
- conflicts compare leaf fields only; keyed lists merge applied items in applied order and
  leave live-only items where they were;
- `status` of built-in kinds is ignored in apply configurations (as the real registry strategies
  reset it); an object without `managedFields` gets a `before-first-apply` owner, as for real;
- `managedFields` that cannot be decoded are dropped rather than rejected (the real server resets
  them too); removing a field also removes the maps, lists and structs it leaves empty, except
  top-level fields such as `spec`.
"""

from __future__ import annotations

from typing import Any

from . import patch_merge_keys as schema
from .errors import ApiError, bad_request
from .managed_fields import (
    Manager,
    Path,
    describe,
    key_element,
    leaves,
    managers_of,
    new_entry,
    object_fields,
    prefixes,
    remove_path,
    root_field,
    value_at,
    with_managers,
    without_status,
)
from .objects import json_copy, json_equal, json_unique
from .patch_merge_keys import FieldMeta
from .strategic_merge import supports_strategic_merge


def server_side_apply(live: dict | None, applied: dict, manager: str, force: bool,
                      api_version: str, kind: str) -> dict:
    """Merge an apply configuration into `live` (None: create) with field ownership.

    Returns the new object with `metadata.managedFields` updated; raises a 409 conflict when the
    configuration changes a field another manager owns, unless `force`.
    """
    applied = _check_applied(applied, api_version, kind)
    root = root_field(api_version, kind)
    applied_set = without_status(object_fields(applied, root, config=True), api_version, kind)
    if live is None:
        merged = json_copy(applied)
        me = Manager(new_entry(manager, "Apply", api_version), applied_set)
        return with_managers(merged, [me])
    managers = managers_of(live)
    if not (live.get("metadata") or {}).get("managedFields"):
        managers = [Manager(new_entry("before-first-apply", "Update", api_version),
                            without_status(object_fields(live, root, config=False),
                                           api_version, kind))]
    merged = _apply_merge(json_copy(live), applied, root)
    merged.get("metadata", {}).pop("managedFields", None)
    changed = {p for p in leaves(applied_set)
               if not json_equal(value_at(live, root, p), value_at(merged, root, p))}
    others = [m for m in managers if not m.is_apply_by(manager)]
    conflicts = [(m, p) for m in others for p in sorted(m.fields & changed)]
    if conflicts and not force:
        raise _conflict_error(conflicts)
    for m in others:
        m.fields -= changed
    mine = next((m for m in managers if m.is_apply_by(manager)), None)
    previous = mine.fields if mine else set()
    kept = prefixes(applied_set.union(*(m.fields for m in others)))
    for path in sorted(previous - applied_set, key=len):
        if path not in kept:
            remove_path(merged, root, path)
    if mine is None:
        mine = Manager(new_entry(manager, "Apply", api_version), applied_set)
        managers.append(mine)
    else:
        mine.entry, mine.fields = new_entry(manager, "Apply", api_version), applied_set
    return with_managers(merged, managers)


def _check_applied(applied: Any, api_version: str, kind: str) -> dict:
    if not isinstance(applied, dict):
        raise bad_request("an apply configuration must be an object with apiVersion, kind and "
                          "metadata.name")
    sent = (applied.get("apiVersion"), applied.get("kind"))
    if sent != (api_version, kind):
        raise bad_request(f"the apply configuration has apiVersion {sent[0]!r} and kind "
                          f"{sent[1]!r}, but this endpoint serves {kind} in {api_version}")
    if (applied.get("metadata") or {}).get("managedFields") is not None:
        raise bad_request("metadata.managedFields must be nil in an apply configuration: "
                          "remove it (kubectl apply --server-side never sends it)")
    applied = _drop_nulls(applied)
    if supports_strategic_merge(api_version, kind):
        applied.pop("status", None)
    return applied


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _apply_merge(live: Any, applied: Any, field: FieldMeta) -> Any:
    """Merge an apply configuration into an owned live value (structured-merge-diff's Merge)."""
    t = field.type
    if isinstance(live, dict) and isinstance(applied, dict) and not t.atomic:
        for key, value in applied.items():
            live[key] = (_apply_merge(live[key], value, schema.child(t, key)) if key in live
                         else json_copy(value))
        return live
    if isinstance(live, list) and isinstance(applied, list):
        if field.list_mode == "set":
            return live + [json_copy(v) for v in json_unique(applied)
                           if not any(json_equal(v, x) for x in live)]
        if field.list_mode == "keyed":
            return _apply_keyed(live, applied, field)
    return json_copy(applied)


def _apply_keyed(live: list, applied: list, field: FieldMeta) -> list:
    """Merge two keyed lists: applied items in applied order, live-only items where they were
    (live duplicates of an applied key collapse into the applied item)."""
    item_meta = FieldMeta(field.type.item or schema.ANY)
    live_keys = [key_element(item, field, "", strict=False) for item in live]
    applied_keys = [key_element(item, field, "") for item in applied]
    by_key: dict[str | None, Any] = {}
    for key, item in zip(live_keys, live, strict=True):
        by_key.setdefault(key, item)
    wanted = set(applied_keys)
    out, done, i, j = [], set(), 0, 0
    while i < len(live) or j < len(applied):
        if i < len(live) and live_keys[i] in done:
            i += 1
        elif i < len(live) and (live_keys[i] not in wanted or j >= len(applied)):
            out.append(live[i])
            i += 1
        else:
            key = applied_keys[j]
            out.append(_apply_merge(by_key[key], applied[j], item_meta) if key in by_key
                       else json_copy(applied[j]))
            done.add(key)
            j += 1
    return out


def _conflict_error(conflicts: list[tuple[Manager, Path]]) -> ApiError:
    causes = [{"type": "FieldManagerConflict", "message": f"conflict with {m.describe()}",
               "field": describe(p)} for m, p in conflicts]
    if len(conflicts) == 1:
        manager, path = conflicts[0]
        message = (f"Apply failed with 1 conflict: conflict with {manager.describe()}: "
                   f"{describe(path)}")
    else:
        lines = []
        for who in sorted({m.describe() for m, _ in conflicts}):
            lines.append(f"conflicts with {who}:")
            lines += [f"- {describe(p)}" for m, p in conflicts if m.describe() == who]
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return ApiError(409, "Conflict", message, details={"causes": causes})

