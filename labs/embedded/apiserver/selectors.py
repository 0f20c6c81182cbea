"""Label and field selectors, parsed with the real API server's grammar and error wording."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from .errors import bad_request

Matcher = Callable[[dict[str, Any]], bool]

_SET_OP = re.compile(r"^\s*(!?)\s*([A-Za-z0-9./_-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_OP = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s*(==|!=|=)\s*([A-Za-z0-9._-]*)\s*$")
_EXISTS = re.compile(r"^\s*(!?)\s*([A-Za-z0-9./_-]+)\s*$")


def _split_requirements(selector: str) -> list[str]:
    """Split on commas that are not inside `in (a,b)` parentheses."""
    parts, depth, current = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current)
    return parts


def _label_requirement(text: str) -> Callable[[Mapping[str, str]], bool]:
    if m := _SET_OP.match(text):
        negated, key, op, values = m.groups()
        if negated:
            raise bad_request(f"unable to parse requirement: {text!r}")
        allowed = {v.strip() for v in values.split(",") if v.strip()}
        if op == "in":
            return lambda labels: labels.get(key) in allowed
        return lambda labels: labels.get(key) not in allowed
    if m := _EQ_OP.match(text):
        key, op, value = m.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if m := _EXISTS.match(text):
        negated, key = m.groups()
        if negated:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    raise bad_request(
        f"unable to parse requirement: {text.strip()!r}: label selectors look like "
        "'app=web', 'tier!=db', 'env in (a,b)', 'release' or '!canary'"
    )


def label_matcher(selector: str | None) -> Matcher:
    """A predicate on objects for `?labelSelector=`; empty selects everything."""
    if not selector:
        return lambda obj: True
    requirements = [_label_requirement(part) for part in _split_requirements(selector)]

    def match(obj: dict[str, Any]) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(req(labels) for req in requirements)

    return match


def labels_match(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A `metav1.LabelSelector` (matchLabels + matchExpressions) against labels.

    A nil or empty selector matches everything here; callers for which empty means nothing
    (Services) check that themselves.
    """
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def field_value(obj: dict[str, Any], path: str) -> str:
    """The string value at a dotted field path, "" when absent (like the real field sets)."""
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, dict):
            return ""
        value = value.get(part)
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def field_matcher(selector: str | None, supported: frozenset[str]) -> Matcher:
    """A predicate for `?fieldSelector=`; unsupported fields are a 400 as on a real server."""
    if not selector:
        return lambda obj: True
    requirements: list[tuple[str, bool, str]] = []
    for part in _split_requirements(selector):
        m = re.match(r"^\s*([A-Za-z0-9._-]+)\s*(==|!=|=)\s*(.*?)\s*$", part)
        if not m:
            raise bad_request(f"invalid field selector: {part.strip()!r}: use 'field=value'")
        path, op, value = m.groups()
        if path not in supported:
            raise bad_request(
                f"field label not supported: {path} "
                f"(supported here: {', '.join(sorted(supported))})"
            )
        requirements.append((path, op == "!=", value))

    def match(obj: dict[str, Any]) -> bool:
        return all((field_value(obj, p) == v) != neg for p, neg, v in requirements)

    return match
