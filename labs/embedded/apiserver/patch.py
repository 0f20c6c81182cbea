"""The four PATCH flavours of the Kubernetes API, and field ownership (`managedFields`).

- `json_patch`: RFC 6902, as `application/json-patch+json`.
- `merge_patch`: RFC 7386, as `application/merge-patch+json` (kubectl's patch for custom resources).
- `strategic_merge_patch`: what `kubectl apply` (client side) sends for built-in kinds. Follows
  k8s.io/apimachinery's strategicpatch (server options: parallel lists, unmatched nulls ignored):
  `$patch` replace/delete, `$retainKeys`, `$setElementOrder/`, `$deleteFromPrimitiveList/`, lists
  merged by their merge key. Deliberate differences: an unknown `$` directive is a 400 instead of
  being stored as a field, and nulls inside newly added values are dropped (the real server drops
  them too when it decodes into the Go types).
- `server_side_apply`: `application/apply-patch+yaml` with `managedFields` in the real FieldsV1
  format, and `track_update` to record ownership for create/update/patch like the real server.

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

import json
import re
from datetime import UTC, datetime
from typing import Any

from . import patch_merge_keys as schema
from .errors import ApiError, bad_request
from .patch_merge_keys import FieldMeta, TypeRef

# --------------------------------------------------------------------------------- JSON values


def _copy(value: Any) -> Any:
    """Deep copy of a JSON value (several times faster than copy.deepcopy)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: unlike `==`, `true` is not `1`."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_equal, a, b))
    return type(a) is type(b) and a == b


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


# ---------------------------------------------------------------------------- RFC 6902 JSON patch

_OPS = ("add", "remove", "replace", "move", "copy", "test")
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")
_BAD_ESCAPE = re.compile(r"~(?![01])")


def json_patch(doc: Any, operations: Any) -> Any:
    """Apply an RFC 6902 patch; 400 for a malformed patch, 422 when an operation cannot apply."""
    if not isinstance(operations, list):
        raise bad_request(
            'a JSON patch must be a list of operations, e.g. '
            '[{"op": "replace", "path": "/spec/replicas", "value": 3}]')
    result = _copy(doc)
    for number, operation in enumerate(operations):
        result = _apply_operation(result, operation, number)
    return result


def _apply_operation(doc: Any, operation: Any, number: int) -> Any:
    if not isinstance(operation, dict):
        raise bad_request(f"JSON patch operation {number} must be an object with \"op\" and "
                          f"\"path\", not {_dump(operation)}")
    op = operation.get("op")
    if op not in _OPS:
        raise bad_request(f"JSON patch operation {number}: unknown op {op!r}; use one of "
                          f"{', '.join(_OPS)}")
    where = f"JSON patch operation {number} ({op} {operation.get('path')!r})"
    path = _pointer(operation.get("path"), "path", where)
    needed = {"add": "value", "replace": "value", "test": "value", "move": "from",
              "copy": "from"}.get(op)
    if needed and needed not in operation:
        raise bad_request(f"{where}: missing \"{needed}\"")
    if op == "add":
        return _add(doc, path, _copy(operation["value"]), where)
    if op == "remove":
        return _remove(doc, path, where)[0]
    if op == "replace":
        if not path:
            return _copy(operation["value"])
        parent = _get(doc, path[:-1], where)
        parent[_step(parent, path[-1], path[:-1], where)] = _copy(operation["value"])
        return doc
    if op == "test":
        actual = _get(doc, path, where)
        if not _equal(actual, operation["value"]):
            raise ApiError(422, "Invalid", f"{where}: test failed: the value is "
                           f"{_dump(actual)}, not {_dump(operation['value'])}")
        return doc
    source = _pointer(operation["from"], "from", where)
    if op == "move":
        if path[:len(source)] == source and len(path) > len(source):
            raise ApiError(422, "Invalid", f"{where}: cannot move {operation['from']!r} into "
                           "its own child")
        doc, value = _remove(doc, source, where)
        return _add(doc, path, value, where)
    return _add(doc, path, _copy(_get(doc, source, where)), where)  # copy


def _pointer(value: Any, field: str, where: str) -> list[str]:
    if not isinstance(value, str):
        raise bad_request(f"{where}: \"{field}\" must be a JSON pointer string like "
                          "\"/metadata/labels/app\"")
    if value == "":
        return []
    if not value.startswith("/"):
        raise bad_request(f"{where}: JSON pointer {value!r} must start with '/'")
    if _BAD_ESCAPE.search(value):
        raise bad_request(f"{where}: JSON pointer {value!r} has a '~' not followed by 0 or 1 "
                          "(write '~0' for '~' and '~1' for '/')")
    return [t.replace("~1", "/").replace("~0", "~") for t in value[1:].split("/")]


def _render(tokens: list[str]) -> str:
    return "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in tokens) or "/"


def _step(node: Any, token: str, tokens: list[str], where: str, *, end: bool = False) -> int | str:
    """Check that `token` addresses something inside `node` and return the key or index."""
    here = _render(tokens)
    if isinstance(node, dict):
        if token not in node and not end:
            raise ApiError(422, "Invalid", f"{where}: path does not exist: the object at "
                           f"{here!r} has no key {token!r}")
        return token
    if isinstance(node, list):
        limit = len(node) + 1 if end else len(node)
        if end and token == "-":
            return len(node)
        if not _ARRAY_INDEX.fullmatch(token) or int(token) >= limit:
            raise ApiError(422, "Invalid", f"{where}: path does not exist: {token!r} is not an "
                           f"index of the {len(node)}-item list at {here!r}")
        return int(token)
    raise ApiError(422, "Invalid", f"{where}: path does not exist: the value at {here!r} is "
                   f"{_dump(node)}, not an object or list")


def _get(doc: Any, tokens: list[str], where: str) -> Any:
    node = doc
    for depth, token in enumerate(tokens):
        node = node[_step(node, token, tokens[:depth], where)]
    return node


def _add(doc: Any, tokens: list[str], value: Any, where: str) -> Any:
    if not tokens:
        return value
    parent = _get(doc, tokens[:-1], where)
    at = _step(parent, tokens[-1], tokens[:-1], where, end=True)
    if isinstance(parent, list):
        parent.insert(int(at), value)
    else:
        parent[at] = value
    return doc


def _remove(doc: Any, tokens: list[str], where: str) -> tuple[Any, Any]:
    if not tokens:
        raise ApiError(422, "Invalid", f"{where}: cannot remove the whole document")
    parent = _get(doc, tokens[:-1], where)
    return doc, parent.pop(_step(parent, tokens[-1], tokens[:-1], where))


# --------------------------------------------------------------------------- RFC 7386 merge patch


def merge_patch(doc: Any, patch: Any) -> Any:
    """Apply an RFC 7386 merge patch: objects merge recursively, null deletes, the rest replaces."""
    return _merge_into(_copy(doc), patch)


def _merge_into(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return _copy(patch)
    result = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_into(result.get(key), value)
    return result


# ------------------------------------------------------------------------ strategic merge patch

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
    return _smp_map(_copy(doc), patch, schema.root_type(api_version, kind), "")


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
        return _copy(patch)
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
    return [item for item in original if not any(_equal(item, v) for v in values)]


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
        merged = _dedupe([*original, *patch])
        return _order(merged, patch, original, None)
    if not key:
        raise bad_request(f"{where}: cannot merge lists without merge key")
    original, patch = _list_directives(original, patch, key, where)
    server_order = list(original)
    item_type = field.type.item or schema.ANY
    for item in patch:
        if key not in item:
            raise bad_request(f"{where}: map: {_dump(item)} does not contain declared merge "
                              f"key: {key}")
        index = _find(original, key, item[key])
        at = f"{where}[{key}={_dump(item[key])}]"
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
                raise bad_request(f"{where}: map: {_dump(item)} does not contain declared merge "
                                  f"key: {key}")
            original = [o for o in original if not _equal(o.get(key), item[key])]
        elif item[_DIRECTIVE] == "replace":
            replace = True
        elif item[_DIRECTIVE] == "merge":
            raise bad_request(f"{where}: merging lists cannot yet be specified in the patch")
        else:
            raise bad_request(f"{where}: unknown patch type: {item[_DIRECTIVE]} in list item "
                              f"{_dump(item)}")
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
    if not all(any(_equal(w, o) for o in listed) for w in wanted):
        raise bad_request(f"{where}: the order in the patch list {_dump(patch)} doesn't match "
                          f"$setElementOrder list {_dump(order)}")


def _identity(item: Any, key: str | None) -> Any:
    return item.get(key) if key and isinstance(item, dict) else item


def _find(items: list, key: str, value: Any) -> int | None:
    for index, item in enumerate(items):
        if isinstance(item, dict) and _equal(item.get(key), value):
            return index
    return None


def _dedupe(items: list) -> list:
    out: list = []
    for item in items:
        if not any(_equal(item, seen) for seen in out):
            out.append(item)
    return out


def _position(items: list, item: Any, key: str | None) -> int:
    ident = _identity(item, key)
    for index, other in enumerate(items):
        if _equal(_identity(other, key), ident):
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


# ------------------------------------------------------------------- managed fields (FieldsV1)

Path = tuple[str, ...]
# Fields no manager owns (structured-merge-diff strips them from every field set).
_STRIPPED: frozenset[Path] = frozenset(
    {("f:apiVersion",), ("f:kind",)} | {("f:metadata", f"f:{name}") for name in (
        "name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
        "selfLink", "managedFields")})
_MISSING = object()


def _key_element(item: Any, field: FieldMeta, where: str, *, strict: bool = True) -> str | None:
    """The `k:{...}` path element of a keyed-list item (None when lenient and it has no key)."""
    key = {}
    for name, default in field.apply_keys:
        value = item.get(name, default) if isinstance(item, dict) else None
        if value is None:
            if not strict:
                return None
            raise bad_request(f"{where}: associative list with keys has an element that omits "
                              f"key field {name!r}: {_dump(item)}")
        key[name] = value
    return "k:" + _dump(key)


def _fields(value: Any, field: FieldMeta, path: Path, out: set[Path], *, config: bool,
            where: str = "") -> None:
    """Collect the field paths of `value`.

    For an apply configuration (`config`), maps are owned through their entries only and a
    keyed list must have unique, complete keys. For a stored object (the sets of Update
    operations), maps are members themselves (`.: {}`) and items without a usable key, which
    a real server may hold (duplicate env names), are left unowned instead of failing.
    """
    t = field.type
    if isinstance(value, dict) and not t.atomic and t.kind != "scalar":
        if path and (not value or (not config and t.kind == "map")):
            out.add(path)
        for key, child in value.items():
            if child is not None:
                _fields(child, schema.child(t, key), (*path, f"f:{key}"), out, config=config,
                        where=_at(where, key))
        return
    if isinstance(value, list) and value and field.list_mode == "keyed":
        item_meta = FieldMeta(t.item or schema.ANY)
        seen = set()
        for item in value:
            element = _key_element(item, field, where, strict=config)
            if element is None or element in seen:
                if config:
                    raise bad_request(f"{where}: duplicate entries for key {str(element)[2:]}")
                continue
            seen.add(element)
            out.add((*path, element))
            _fields(item, item_meta, (*path, element), out, config=config,
                    where=f"{where}[{_describe_key(element)}]")
        return
    if isinstance(value, list) and value and field.list_mode == "set":
        out.update((*path, "v:" + _dump(item)) for item in value)
        return
    if path:
        out.add(path)


def _object_fields(obj: dict, root: FieldMeta, *, config: bool) -> set[Path]:
    out: set[Path] = set()
    _fields(obj, root, (), out, config=config)
    return {p for p in out if p[:2] not in _STRIPPED and p[:1] not in _STRIPPED}


def _locate(obj: Any, root: FieldMeta, path: Path) -> tuple[Any, Any, FieldMeta] | None:
    """(container, key or index, metadata) of the value at `path`, or None when absent."""
    node, field, parent, slot = obj, root, None, None
    for element in path:
        kind, text = element[:2], element[2:]
        if kind == "f:" and isinstance(node, dict) and text in node:
            parent, slot, field = node, text, schema.child(field.type, text)
        elif kind in ("k:", "v:") and isinstance(node, list):
            index = _list_index(node, element, field)
            if index is None:
                return None
            parent, slot = node, index
            field = FieldMeta(field.type.item or schema.ANY) if kind == "k:" else field
        else:
            return None
        node = parent[slot]
    return (parent, slot, field) if parent is not None else None


def _list_index(items: list, element: str, field: FieldMeta) -> int | None:
    wanted = json.loads(element[2:])
    for index, item in enumerate(items):
        if element.startswith("v:"):
            if _equal(item, wanted):
                return index
        elif isinstance(item, dict) and all(
                _equal(item.get(name, default), wanted.get(name))
                for name, default in field.apply_keys):
            return index
    return None


def _value(obj: Any, root: FieldMeta, path: Path) -> Any:
    found = _locate(obj, root, path)
    return _MISSING if found is None else found[0][found[1]]


def _remove_path(obj: dict, root: FieldMeta, path: Path) -> None:
    """Delete the value at `path`, then what it leaves empty below the top-level fields (so a
    dropped `rollingUpdate.maxSurge` does not leave a `rollingUpdate: {}` behind)."""
    while path:
        found = _locate(obj, root, path)
        if found is None:
            return
        container, slot, _ = found
        del container[slot]
        path = path[:-1]
        if container or len(path) < 2:
            return


def _encode(paths: set[Path]) -> dict:
    """A set of paths as FieldsV1: leaves are `{}`, an owned node with children has `.: {}`."""
    tree: dict = {}
    for path in paths:
        node = tree
        for element in path:
            node = node.setdefault(element, {})
    for path in paths:
        node = tree
        for element in path:
            node = node[element]
        if node:
            node["."] = {}
    return _sorted_tree(tree)


def _sorted_tree(node: dict) -> dict:
    return {k: _sorted_tree(node[k]) for k in sorted(node, key=lambda k: (k != ".", k))}


def _decode(fields: Any, prefix: Path = ()) -> set[Path]:
    if not isinstance(fields, dict):
        raise ValueError(f"FieldsV1 node at {prefix} is not an object")
    out: set[Path] = set()
    for key, child in fields.items():
        if key == ".":
            out.add(prefix)
            continue
        if not _is_path_element(key):
            raise ValueError(f"FieldsV1 key {key!r} at {prefix} is not a field path element")
        if not child:
            out.add((*prefix, key))
        else:
            out |= _decode(child, (*prefix, key))
    return out


def _is_path_element(key: str) -> bool:
    kind, text = key[:2], key[2:]
    if kind in ("f:", "i:"):
        return True
    if kind not in ("k:", "v:"):
        return False
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return kind == "v:" or isinstance(value, dict)


def _describe_key(element: str) -> str:
    if element.startswith("v:"):
        return "=" + element[2:]
    return ",".join(f"{k}={_dump(v)}" for k, v in json.loads(element[2:]).items())


def _describe(path: Path) -> str:
    """A path as the real server prints it: `.spec.containers[name="app"].image`."""
    return "".join(f".{e[2:]}" if e.startswith("f:") else f"[{_describe_key(e)}]"
                   for e in path)


def _leaves(paths: set[Path]) -> set[Path]:
    inner = {p[:i] for p in paths for i in range(1, len(p))}
    return paths - inner


def _prefixes(paths: set[Path]) -> set[Path]:
    return {p[:i] for p in paths for i in range(1, len(p) + 1)}


class _Manager:
    """One `managedFields` entry with its field set decoded."""

    def __init__(self, entry: dict, fields: set[Path]) -> None:
        self.entry, self.fields = entry, fields

    @property
    def name(self) -> str:
        return str(self.entry.get("manager", ""))

    def is_apply_by(self, manager: str) -> bool:
        return (self.entry.get("operation") == "Apply" and self.name == manager
                and not self.entry.get("subresource"))

    def describe(self) -> str:
        text = json.dumps(self.name)
        if self.entry.get("subresource"):
            text += f" with subresource {json.dumps(self.entry['subresource'])}"
        if self.entry.get("operation") == "Update":
            text += f" using {self.entry.get('apiVersion', '')}"
        return text

    def to_entry(self) -> dict:
        return {**self.entry, "fieldsType": "FieldsV1", "fieldsV1": _encode(self.fields)}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _managers(obj: dict) -> list[_Manager]:
    return _decode_entries((obj.get("metadata") or {}).get("managedFields"))


def _decode_entries(entries: Any) -> list[_Manager]:
    out = []
    for entry in entries if isinstance(entries, list) else []:
        try:
            out.append(_Manager({k: v for k, v in entry.items() if k not in (
                "fieldsType", "fieldsV1")}, _decode(entry.get("fieldsV1") or {})))
        except (AttributeError, ValueError):
            continue  # undecodable ownership is reset, as the real server does
    return out


def _entry(manager: str, operation: str, api_version: str, subresource: str = "") -> dict:
    entry = {"manager": manager, "operation": operation, "apiVersion": api_version,
             "time": _now()}
    if subresource:
        entry["subresource"] = subresource
    return entry


def _with_managers(obj: dict, managers: list[_Manager]) -> dict:
    entries = [m.to_entry() for m in managers if m.fields]
    metadata = obj.setdefault("metadata", {})
    if entries:
        metadata["managedFields"] = entries
    else:
        metadata.pop("managedFields", None)
    return obj


def _root(api_version: str, kind: str) -> FieldMeta:
    return FieldMeta(schema.root_type(api_version, kind))


def _without_status(paths: set[Path], api_version: str, kind: str) -> set[Path]:
    if not supports_strategic_merge(api_version, kind):
        return paths
    return {p for p in paths if p[0] != "f:status"}


# ------------------------------------------------------------------------- server-side apply


def server_side_apply(live: dict | None, applied: dict, manager: str, force: bool,
                      api_version: str, kind: str) -> dict:
    """Merge an apply configuration into `live` (None: create) with field ownership.

    Returns the new object with `metadata.managedFields` updated; raises a 409 conflict when the
    configuration changes a field another manager owns, unless `force`.
    """
    applied = _check_applied(applied, api_version, kind)
    root = _root(api_version, kind)
    applied_set = _without_status(_object_fields(applied, root, config=True),
                                  api_version, kind)
    if live is None:
        merged = _copy(applied)
        me = _Manager(_entry(manager, "Apply", api_version), applied_set)
        return _with_managers(merged, [me])
    managers = _managers(live)
    if not (live.get("metadata") or {}).get("managedFields"):
        managers = [_Manager(_entry("before-first-apply", "Update", api_version),
                             _without_status(_object_fields(live, root, config=False),
                                             api_version, kind))]
    merged = _apply_merge(_copy(live), applied, root)
    merged.get("metadata", {}).pop("managedFields", None)
    changed = {p for p in _leaves(applied_set)
               if not _equal(_value(live, root, p), _value(merged, root, p))}
    others = [m for m in managers if not m.is_apply_by(manager)]
    conflicts = [(m, p) for m in others for p in sorted(m.fields & changed)]
    if conflicts and not force:
        raise _conflict_error(conflicts)
    for m in others:
        m.fields -= changed
    mine = next((m for m in managers if m.is_apply_by(manager)), None)
    previous = mine.fields if mine else set()
    kept = _prefixes(applied_set.union(*(m.fields for m in others)))
    for path in sorted(previous - applied_set, key=len):
        if path not in kept:
            _remove_path(merged, root, path)
    if mine is None:
        mine = _Manager(_entry(manager, "Apply", api_version), applied_set)
        managers.append(mine)
    else:
        mine.entry, mine.fields = _entry(manager, "Apply", api_version), applied_set
    return _with_managers(merged, managers)


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


def _apply_merge(live: Any, applied: Any, field: FieldMeta) -> Any:
    """Merge an apply configuration into an owned live value (structured-merge-diff's Merge)."""
    t = field.type
    if isinstance(live, dict) and isinstance(applied, dict) and not t.atomic:
        for key, value in applied.items():
            live[key] = (_apply_merge(live[key], value, schema.child(t, key)) if key in live
                         else _copy(value))
        return live
    if isinstance(live, list) and isinstance(applied, list):
        if field.list_mode == "set":
            return live + [_copy(v) for v in _dedupe(applied)
                           if not any(_equal(v, x) for x in live)]
        if field.list_mode == "keyed":
            return _apply_keyed(live, applied, field)
    return _copy(applied)


def _apply_keyed(live: list, applied: list, field: FieldMeta) -> list:
    """Merge two keyed lists: applied items in applied order, live-only items where they were
    (live duplicates of an applied key collapse into the applied item)."""
    item_meta = FieldMeta(field.type.item or schema.ANY)
    live_keys = [_key_element(item, field, "", strict=False) for item in live]
    applied_keys = [_key_element(item, field, "") for item in applied]
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
                       else _copy(applied[j]))
            done.add(key)
            j += 1
    return out


def _conflict_error(conflicts: list[tuple[_Manager, Path]]) -> ApiError:
    causes = [{"type": "FieldManagerConflict", "message": f"conflict with {m.describe()}",
               "field": _describe(p)} for m, p in conflicts]
    if len(conflicts) == 1:
        manager, path = conflicts[0]
        message = (f"Apply failed with 1 conflict: conflict with {manager.describe()}: "
                   f"{_describe(path)}")
    else:
        lines = []
        for who in sorted({m.describe() for m, _ in conflicts}):
            lines.append(f"conflicts with {who}:")
            lines += [f"- {_describe(p)}" for m, p in conflicts if m.describe() == who]
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return ApiError(409, "Conflict", message, details={"causes": causes})


# ------------------------------------------------------------------ ownership for other writes


def track_update(old: dict | None, new: dict, manager: str, api_version: str, kind: str,
                 subresource: str = "") -> dict:
    """Record a create/update/patch by `manager` (operation "Update") in `new`'s managedFields.

    The manager takes the fields it added or changed (from any other owner, no conflicts: that
    is what an update means); fields that no longer exist leave every owner. `managedFields`
    sent in `new` are honoured as the real server does: absent or `[]` keeps the stored ones,
    `[{}]` strips them, any other list replaces them (kubectl uses that to hand client-side
    apply ownership over to server-side apply).
    """
    root = _root(api_version, kind)
    result = _copy(new)
    sent = result.get("metadata", {}).pop("managedFields", None)
    if sent == [{}]:
        return result
    stored = ((old or {}).get("metadata") or {}).get("managedFields")
    before = _object_fields(old, root, config=False) if old is not None else set()
    after = _object_fields(result, root, config=False)
    if subresource:
        before, after = ({p for p in s if p[0] == f"f:{subresource}"} for s in (before, after))
    else:
        before, after = (_without_status(s, api_version, kind) for s in (before, after))
    changed = (after - before) | {p for p in _leaves(after) & before if not _equal(
        _value(old, root, p), _value(result, root, p))}
    gone = before - after
    managers = _decode_entries(sent if sent and sent != stored else stored)
    for m in managers:
        m.fields -= changed | gone
    if changed:
        mine = next((m for m in managers if m.name == manager and m.entry.get("operation") ==
                     "Update" and m.entry.get("apiVersion") == api_version and
                     m.entry.get("subresource", "") == subresource), None)
        if mine is None:
            managers.append(_Manager(_entry(manager, "Update", api_version, subresource),
                                     changed))
        else:
            mine.entry = _entry(manager, "Update", api_version, subresource)
            mine.fields |= changed
    return _with_managers(result, managers)
