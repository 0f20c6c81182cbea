"""Strategic merge patch: what `kubectl apply` (client side) and `kubectl patch` send for built-in
kinds, which merges lists such as `containers` by a key instead of replacing them.

Follows k8s.io/apimachinery's strategicpatch with the server's options (parallel lists, unmatched
nulls ignored): `$patch` replace/delete, `$retainKeys`, `$setElementOrder/`,
`$deleteFromPrimitiveList/`, lists merged by their merge key. Merge keys and strategies come from
the generated Python models (`patch_merge_keys`), so custom resources, which have none, get a 415
as from a real server. Deliberate differences: an unknown `$` directive is a 400 instead of being
stored as a field, and nulls inside newly added values are dropped (the real server drops them
too when it decodes into the Go types).
"""

from __future__ import annotations

from typing import Any

from . import patch_merge_keys as schema
from .errors import ApiError, bad_request
from .objects import json_copy, json_dump, json_equal, json_unique
from .patch_merge_keys import FieldMeta, TypeRef

_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_SET_ORDER = "$setElementOrder/"
_DELETE_PRIMITIVES = "$deleteFromPrimitiveList/"


def supports_strategic_merge(api_version: str, kind: str) -> bool:
    """True for built-in kinds; custom resources have no merge keys (a real server answers 415)."""
    return schema.model_for(api_version, kind) is not None


def strategic_merge_patch(doc: dict, patch: dict, api_version: str, kind: str) -> dict:
    """Apply a strategic merge patch to a built-in object, as the API server does."""
    if not supports_strategic_merge(api_version, kind):
        raise ApiError(415, "UnsupportedMediaType",
                       f"strategic merge patch is not supported for {kind} ({api_version}): "
                       "send a merge patch (kubectl patch --type merge) or a JSON patch")
    if not isinstance(patch, dict):
        raise bad_request("a strategic merge patch must be a JSON object")
    return _smp_map(json_copy(doc), patch, schema.root_type(api_version, kind), "")


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _smp_map(original: dict, patch: dict, t: TypeRef, where: str) -> dict:
    """mergeMap: `original` is owned (mutated and returned), `patch` is never mutated."""
    if _DIRECTIVE in patch:
        directive = patch[_DIRECTIVE]
        if directive == "replace":
            return _smp_map({}, {k: v for k, v in patch.items() if k != _DIRECTIVE}, t, where)
        if directive == "delete":
            return {}
        raise bad_request(f"{where or 'patch'}: unknown patch type: {directive} in map "
                          "(a map accepts \"$patch\": \"replace\" or \"delete\")")
    original = _retain_keys(original, patch, where)
    done = {_RETAIN_KEYS}
    for key, order in patch.items():
        if key.startswith(_SET_ORDER):
            field = key[len(_SET_ORDER):]
            done |= {key, field}
            merged = _smp_ordered(original.get(field), patch.get(field), order,
                                  schema.child(t, field), _at(where, field))
            if merged is not None:
                original[field] = merged
    for key, value in patch.items():
        if key in done:
            continue
        if key.startswith(_DELETE_PRIMITIVES):
            field = key[len(_DELETE_PRIMITIVES):]
            if field in original:
                original[field] = _delete_primitives(original[field], value, _at(where, key))
        elif key.startswith("$"):
            raise bad_request(f"{_at(where, key)}: unknown patch directive {key!r}; known: "
                              f"$patch, {_RETAIN_KEYS}, {_SET_ORDER}<field>, "
                              f"{_DELETE_PRIMITIVES}<field>")
        elif value is None:
            original.pop(key, None)
        else:
            original[key] = _smp_value(original.get(key), value, schema.child(t, key),
                                       _at(where, key))
    return original


def _smp_value(original: Any, patch: Any, field: FieldMeta, where: str) -> Any:
    if isinstance(patch, dict):
        if isinstance(original, dict) and "replace" not in field.strategies:
            return _smp_map(original, patch, field.type, where)
        return _smp_map({}, patch, field.type, where)
    if isinstance(patch, list):
        if "merge" in field.strategies:
            return _smp_list(original if isinstance(original, list) else [], patch, field, where)
        return json_copy(patch)
    return patch


def _retain_keys(original: dict, patch: dict, where: str) -> dict:
    if _RETAIN_KEYS not in patch:
        return original
    keep = patch[_RETAIN_KEYS]
    if not isinstance(keep, list):
        raise bad_request(f"{where}: invalid patch format of retainKeys: $retainKeys must be a "
                          "list of field names")
    for key, value in patch.items():
        if value is not None and not key.startswith("$") and key not in keep:
            raise bad_request(f"{where}: invalid patch format of retainKeys: {key!r} is set in "
                              f"the patch but missing from $retainKeys {keep}")
    return {k: v for k, v in original.items() if k in keep}


def _delete_primitives(original: Any, values: Any, where: str) -> Any:
    if not isinstance(values, list) or not isinstance(original, list):
        raise bad_request(f"{where}: invalid patch format of primitive list: "
                          "$deleteFromPrimitiveList needs a list, applied to a list")
    return [item for item in original if not any(json_equal(item, v) for v in values)]


def _is_map_list(original: list, patch: list, where: str) -> bool:
    kinds = {isinstance(item, dict) for item in (*original, *patch)}
    if len(kinds) > 1:
        raise bad_request(f"{where}: list mixes objects and plain values; cannot merge it")
    return kinds == {True}


def _smp_list(original: list, patch: list, field: FieldMeta, where: str) -> list:
    """mergeSlice for a list with the "merge" strategy. `original` is owned."""
    if not original and not patch:
        return original
    key = field.merge_key
    if not _is_map_list(original, patch, where):
        merged = json_unique([*original, *patch])
        return _order(merged, patch, original, None)
    if not key:
        raise bad_request(f"{where}: cannot merge lists without merge key")
    original, patch = _list_directives(original, patch, key, where)
    server_order = list(original)
    item_type = field.type.item or schema.ANY
    for item in patch:
        if key not in item:
            raise bad_request(f"{where}: map: {json_dump(item)} does not contain declared merge "
                              f"key: {key}")
        index = _find(original, key, item[key])
        at = f"{where}[{key}={json_dump(item[key])}]"
        if index is None:
            original.append(_smp_map({}, item, item_type, at))
        else:
            original[index] = _smp_map(original[index], item, item_type, at)
    return _order(original, patch, server_order, key)


def _list_directives(original: list, patch: list, key: str, where: str) -> tuple[list, list]:
    """Handle `{"$patch": ...}` items: delete by key, or replace the whole list."""
    plain, replace = [], False
    for item in patch:
        if _DIRECTIVE not in item:
            plain.append(item)
        elif item[_DIRECTIVE] == "delete":
            if key not in item:
                raise bad_request(f"{where}: map: {json_dump(item)} does not contain declared "
                                  f"merge key: {key}")
            original = [o for o in original if not json_equal(o.get(key), item[key])]
        elif item[_DIRECTIVE] == "replace":
            replace = True
        elif item[_DIRECTIVE] == "merge":
            raise bad_request(f"{where}: merging lists cannot yet be specified in the patch")
        else:
            raise bad_request(f"{where}: unknown patch type: {item[_DIRECTIVE]} in list item "
                              f"{json_dump(item)}")
    if replace:
        return [], plain
    return original, plain


def _smp_ordered(original: Any, patch: Any, order: Any, field: FieldMeta,
                 where: str) -> list | None:
    """A list with `$setElementOrder`: merge it, then sort it by the order the patch gives."""
    if not isinstance(order, list) or not isinstance(patch, list | None):
        raise bad_request(f"{where}: invalid patch format of setElementOrder list: "
                          "$setElementOrder and its list must both be lists")
    if original is None and patch is None:
        return None
    original = original if isinstance(original, list) else []
    key = field.merge_key
    is_map = _is_map_list(original, order, where)
    if is_map and (not key or any(not isinstance(o, dict) or key not in o for o in order)):
        raise bad_request(f"{where}: every $setElementOrder item needs the merge key "
                          f"{key!r}")
    _check_order(patch or [], order, key if is_map else None, where)
    server_order = list(original)
    merged = _smp_value(original, patch, field, where) if patch is not None else original
    return _order(merged, order, server_order, key if is_map else None)


def _check_order(patch: list, order: list, key: str | None, where: str) -> None:
    """Items of the patch list must appear in $setElementOrder in the same relative order."""
    wanted = [_identity(item, key) for item in patch if not (
        isinstance(item, dict) and _DIRECTIVE in item)]
    listed = iter([_identity(item, key) for item in order])
    if not all(any(json_equal(w, o) for o in listed) for w in wanted):
        raise bad_request(f"{where}: the order in the patch list {json_dump(patch)} doesn't match "
                          f"$setElementOrder list {json_dump(order)}")


def _identity(item: Any, key: str | None) -> Any:
    return item.get(key) if key and isinstance(item, dict) else item


def _find(items: list, key: str, value: Any) -> int | None:
    for index, item in enumerate(items):
        if isinstance(item, dict) and json_equal(item.get(key), value):
            return index
    return None


def _position(items: list, item: Any, key: str | None) -> int:
    ident = _identity(item, key)
    for index, other in enumerate(items):
        if json_equal(_identity(other, key), ident):
            return index
    return -1


def _order(merged: list, patch_order: list, server_order: list, key: str | None) -> list:
    """normalizeElementOrder: patch items in patch order, server-only items in live order,
    interleaved so both relative orders hold (live order decides between the two)."""
    in_patch = [i for i in merged if _position(patch_order, i, key) >= 0]
    server_only = [i for i in merged if _position(patch_order, i, key) < 0]
    in_patch.sort(key=lambda i: _position(patch_order, i, key))
    server_only.sort(key=lambda i: (_position(server_order, i, key) < 0,
                                    _position(server_order, i, key)))
    out, left, right = [], server_only, in_patch
    while left and right:
        li, ri = _position(server_order, left[0], key), _position(server_order, right[0], key)
        out.append(left.pop(0) if li >= 0 and ri >= 0 and li < ri else right.pop(0))
    return out + left + right

