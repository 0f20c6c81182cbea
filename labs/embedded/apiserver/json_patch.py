"""RFC 6902 JSON patch and RFC 7386 merge patch: the two PATCH flavours that need no schema.

The API server takes them as `application/json-patch+json` and `application/merge-patch+json`
(kubectl's default patch for custom resources). Both return a new document and never mutate
their arguments, so a failed patch leaves the stored object untouched.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import ApiError, bad_request
from .objects import json_copy, json_dump, json_equal

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
    result = json_copy(doc)
    for number, operation in enumerate(operations):
        result = _apply_operation(result, operation, number)
    return result


def _apply_operation(doc: Any, operation: Any, number: int) -> Any:
    if not isinstance(operation, dict):
        raise bad_request(f"JSON patch operation {number} must be an object with \"op\" and "
                          f"\"path\", not {json_dump(operation)}")
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
        return _add(doc, path, json_copy(operation["value"]), where)
    if op == "remove":
        return _remove(doc, path, where)[0]
    if op == "replace":
        if not path:
            return json_copy(operation["value"])
        parent = _get(doc, path[:-1], where)
        parent[_step(parent, path[-1], path[:-1], where)] = json_copy(operation["value"])
        return doc
    if op == "test":
        actual = _get(doc, path, where)
        if not json_equal(actual, operation["value"]):
            raise ApiError(422, "Invalid", f"{where}: test failed: the value is "
                           f"{json_dump(actual)}, not {json_dump(operation['value'])}")
        return doc
    source = _pointer(operation["from"], "from", where)
    if op == "move":
        if path[:len(source)] == source and len(path) > len(source):
            raise ApiError(422, "Invalid", f"{where}: cannot move {operation['from']!r} into "
                           "its own child")
        doc, value = _remove(doc, source, where)
        return _add(doc, path, value, where)
    return _add(doc, path, json_copy(_get(doc, source, where)), where)  # copy


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
                   f"{json_dump(node)}, not an object or list")


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
    return _merge_into(json_copy(doc), patch)


def _merge_into(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return json_copy(patch)
    result = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_into(result.get(key), value)
    return result
