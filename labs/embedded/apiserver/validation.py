"""Structural-schema validation and pruning, worded like the real API server.

Custom resources are checked against their CRD's `openAPIV3Schema`, built-in kinds against
`builtin_schemas`. The semantics follow apiextensions-apiserver: unknown fields are what its
pruning would drop (so `x-kubernetes-preserve-unknown-fields` and `additionalProperties` keep
them), `oneOf`/`anyOf`/`allOf`/`not` only add constraints on top of the structural schema, a
null property that is not `nullable` counts as absent, and `apiVersion`/`kind`/`metadata` of
the resource (and of embedded resources) are checked against ObjectMeta rather than the schema.
Messages are the ones kube-openapi and `field.Error` produce, so a learner sees the text a
real cluster prints.

Schemas are compiled once and cached by identity: treat a schema dict as immutable after first
use. `x-kubernetes-validations` (CEL) rules are evaluated with `cel-python` when it is
installed; a rule it cannot compile or run is reported in `Report.unevaluated`, never guessed.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .builtin_schemas import object_meta_schema
from .errors import ApiError, FieldCause, bad_request
from .objects import json_copy, json_equal


@functools.cache
def _celpy() -> Any:
    """cel-python, imported on first use (0.1 s off the daemon's start); None if missing, and
    then rules are listed as not evaluated."""
    try:
        import celpy
    except ImportError:  # pragma: no cover - exercised only where cel-python is missing
        return None
    return celpy


@dataclass(frozen=True)
class FieldIssue:
    """One problem with one field; `message` is the real server's text after `path: `."""

    path: str
    kind: str
    message: str


@dataclass(frozen=True)
class Report:
    """Issues, plus the CEL rules that could not be evaluated here (`path: rule: why`)."""

    issues: list[FieldIssue]
    unevaluated: list[str] = field(default_factory=list)


def validate(schema: dict[str, Any], obj: Any) -> list[FieldIssue]:
    """Every problem of `obj` (a whole resource) against `schema`, not only the first."""
    return check(schema, obj).issues


def check(schema: dict[str, Any], obj: Any) -> Report:
    """Like `validate`, also naming the CEL rules that were not evaluated."""
    out = _Out()
    _walk_resource(_compiled(schema), obj, "", out)
    return Report(out.issues, out.unevaluated)


def prune_unknown(schema: dict[str, Any], obj: Any) -> Any:
    """A copy of `obj` without the fields the real server's pruning would drop."""
    return _prune_resource(_compiled(schema), obj)


_REASONS = {
    "unknown": "FieldValueUnknown",
    "type": "FieldValueTypeInvalid",
    "format": "FieldValueTypeInvalid",
    "required": "FieldValueRequired",
    "enum": "FieldValueNotSupported",
    "too-long": "FieldValueTooLong",
    "too-many": "FieldValueTooMany",
    "duplicate": "FieldValueDuplicate",
}
# kube-openapi reports combinator failures without a field (`<nil>: Invalid value: "": ...`).
_COMBINATORS = frozenset({"oneOf", "anyOf", "allOf", "not"})


def to_causes(issues: list[FieldIssue]) -> list[FieldCause]:
    """`Status.details.causes` for a 422 Invalid, as the real server fills them."""
    causes = []
    for issue in issues:
        if issue.kind == "unknown":
            message = "field not declared in schema"
            causes.append(FieldCause(issue.path, _REASONS["unknown"], message))
            continue
        path = "<nil>" if issue.kind in _COMBINATORS else issue.path
        reason = _REASONS.get(issue.kind, "FieldValueInvalid")
        causes.append(FieldCause(path, reason, issue.message))
    return causes


def unknown_field_warnings(issues: list[FieldIssue]) -> list[str]:
    """`Warning` header texts for `fieldValidation=Warn`: `unknown field "spec.foo"`."""
    return [issue.message for issue in issues if issue.kind == "unknown"]


def strict_decoding_error(api_version: str, kind: str, issues: list[FieldIssue]) -> ApiError:
    """The 400 a real server answers for unknown fields under `fieldValidation=Strict`.

    Real wording (create/update/merge patch, built-ins and custom resources alike):
    `Deployment in version "v1" cannot be handled as a Deployment: strict decoding error:
    unknown field "spec.foo", unknown field "spec.bar"`.
    """
    version = api_version.rsplit("/", 1)[-1]
    unknown = ", ".join(unknown_field_warnings(issues))
    return bad_request(
        f'{kind} in version "{version}" cannot be handled as a {kind}: '
        f"strict decoding error: {unknown}"
    )


# ---------------------------------------------------------------------------------------------
# compiled schemas

_ANY = object()  # additionalProperties: true
_META_FIELDS = ("apiVersion", "kind", "metadata")
_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string",
               dict: "object", list: "array", type(None): "null"}


class _Node:
    """One schema node, with its keywords resolved into attributes for a fast walk."""

    __slots__ = (
        "additional", "all_of", "any_of", "embedded", "enum", "excl_max", "excl_min", "format",
        "items", "list_type", "map_keys", "max_items", "max_length", "max_props", "maximum",
        "min_items", "min_length", "min_props", "minimum", "not_", "nullable", "one_of",
        "pattern", "preserve", "props", "required", "rules", "type_label", "types",
    )


class _Compiler:
    def __init__(self, root: dict[str, Any]) -> None:
        self.definitions = root.get("definitions") or {}
        self.memo: dict[int, _Node] = {}

    def node(self, schema: Any) -> _Node | None:
        if not isinstance(schema, dict):
            return None
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            schema = self.definitions.get(ref.removeprefix("#/definitions/"), {})
        if id(schema) in self.memo:
            return self.memo[id(schema)]
        n = _Node()
        self.memo[id(schema)] = n  # before the children: recursive schemas refer back here
        types = schema.get("type")
        if schema.get("x-kubernetes-int-or-string"):
            types = ["integer", "string"]
        elif isinstance(types, str):
            types = [types]
        n.types = frozenset(types) if types else None
        n.type_label = ",".join(types) if types else ""
        n.nullable = bool(schema.get("nullable"))
        n.preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        n.embedded = bool(schema.get("x-kubernetes-embedded-resource"))
        props = schema.get("properties")
        n.props = {k: self.node(v) for k, v in props.items()} if isinstance(props, dict) else None
        n.required = tuple(schema.get("required") or ())
        additional = schema.get("additionalProperties")
        if additional is True:
            n.additional = _ANY
        elif isinstance(additional, dict):
            n.additional = self.node(additional)
        else:
            n.additional = None
        items = schema.get("items")
        n.items = self.node(items) if isinstance(items, dict) else None
        enum = schema.get("enum")
        n.enum = tuple(enum) if isinstance(enum, list) else None
        n.format = schema.get("format")
        n.minimum, n.maximum = schema.get("minimum"), schema.get("maximum")
        n.excl_min = bool(schema.get("exclusiveMinimum"))
        n.excl_max = bool(schema.get("exclusiveMaximum"))
        n.min_length, n.max_length = schema.get("minLength"), schema.get("maxLength")
        n.min_items, n.max_items = schema.get("minItems"), schema.get("maxItems")
        n.min_props, n.max_props = schema.get("minProperties"), schema.get("maxProperties")
        n.pattern = _Pattern(schema["pattern"]) if isinstance(schema.get("pattern"), str) else None
        n.one_of = self.branches(schema.get("oneOf"))
        n.any_of = self.branches(schema.get("anyOf"))
        n.all_of = self.branches(schema.get("allOf"))
        n.not_ = self.node(schema.get("not"))
        n.list_type = schema.get("x-kubernetes-list-type")
        n.map_keys = tuple(schema.get("x-kubernetes-list-map-keys") or ())
        rules = schema.get("x-kubernetes-validations")
        n.rules = tuple(_Rule(r) for r in rules if isinstance(r, dict)) if rules else ()
        return n

    def branches(self, schemas: Any) -> tuple[_Node, ...]:
        if not isinstance(schemas, list):
            return ()
        return tuple(n for n in (self.node(s) for s in schemas) if n is not None)


class _Pattern:
    """An ECMA/RE2 `pattern`, searched unanchored as JSON Schema says."""

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self.regex: re.Pattern[str] | None = re.compile(source)
        except re.error:
            self.regex = None


_CACHE: OrderedDict[int, tuple[dict[str, Any], _Node]] = OrderedDict()
_CACHE_SIZE = 512


def _compiled(schema: dict[str, Any]) -> _Node:
    key = id(schema)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is schema:
        _CACHE.move_to_end(key)
        return hit[1]
    if not isinstance(schema, dict):
        kind = type(schema).__name__
        raise TypeError(f"a schema must be a dict (an OpenAPI v3 object), not {kind}")
    node = _Compiler(schema).node(schema)
    assert node is not None
    _CACHE[key] = (schema, node)  # holding the schema keeps its id from being reused
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return node


def _meta_node() -> _Node:
    return _compiled(object_meta_schema())


# ---------------------------------------------------------------------------------------------
# validation


class _Out:
    __slots__ = ("issues", "unevaluated")

    def __init__(self) -> None:
        self.issues: list[FieldIssue] = []
        self.unevaluated: list[str] = []

    def add(self, path: str, kind: str, message: str) -> None:
        self.issues.append(FieldIssue(path, kind, message))


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _walk_resource(node: _Node, obj: Any, path: str, out: _Out) -> None:
    """A resource root or an embedded resource: meta fields are checked against ObjectMeta."""
    if not isinstance(obj, dict):
        _walk(node, obj, path, out, True)
        return
    for key in ("apiVersion", "kind"):
        if key in obj and obj[key] is not None and not isinstance(obj[key], str):
            _type_issue(out, _child(path, key), "string", obj[key])
    meta = obj.get("metadata")
    if meta is not None:
        meta_path = _child(path, "metadata")
        _walk(_meta_node(), meta, meta_path, out, True)
        declared = node.props.get("metadata") if node.props else None
        if declared is not None:  # a CRD may constrain metadata.name; it cannot add fields
            seen = set(out.issues)
            extra = _Out()
            _walk(declared, meta, meta_path, extra, False)
            out.issues.extend(i for i in extra.issues if i not in seen)
            out.unevaluated.extend(extra.unevaluated)
    _walk(node, obj, path, out, True, skip_meta=True)


def _walk_value(node: _Node | None, value: Any, path: str, out: _Out, structural: bool) -> None:
    if node is not None and node.embedded:
        _walk_resource(node, value, path, out)
    else:
        _walk(node, value, path, out, structural)


def _walk(node: _Node | None, value: Any, path: str, out: _Out, structural: bool,
          skip_meta: bool = False) -> None:
    if node is None:
        if structural:
            _report_all_unknown(value, path, out)
        return
    actual = _JSON_TYPES.get(type(value))
    if actual is None:  # a Python value no JSON document can carry
        out.add(path, "type", f'Invalid value: "{type(value).__name__}": {path} in body must '
                f"be of type {node.type_label or 'JSON'}")
        return
    if value is None:
        if node.types is not None and not node.nullable:
            _type_issue(out, path, node.type_label, None)
        return
    if node.types is not None and not _type_ok(node.types, actual, value):
        _type_issue(out, path, node.type_label, value)
        return
    if node.enum is not None and not any(json_equal(value, e) for e in node.enum):
        supported = ", ".join(json.dumps(e if isinstance(e, str) else _json(e)) for e in node.enum)
        bad = _go_value(value)
        out.add(path, "enum", f"Unsupported value: {bad}: supported values: {supported}")
    if actual == "string":
        _check_string(node, value, path, out)
    elif actual in ("integer", "number"):
        _check_number(node, value, path, out)
    elif actual == "object":
        _check_object(node, value, path, out, structural, skip_meta)
    elif actual == "array":
        _check_array(node, value, path, out, structural)
    if node.all_of or node.any_of or node.one_of or node.not_ is not None:
        _check_combinators(node, value, path, out)
    if node.rules:
        _check_rules(node, value, path, out)


def _report_all_unknown(value: Any, path: str, out: _Out) -> None:
    if isinstance(value, dict):
        for key in value:
            _unknown(out, _child(path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _report_all_unknown(item, f"{path}[{i}]", out)


def _unknown(out: _Out, path: str) -> None:
    out.add(path, "unknown", f'unknown field "{path}"')


def _type_ok(types: frozenset[str], actual: str, value: Any) -> bool:
    if actual in types:
        return True
    if actual == "integer":
        return "number" in types
    return actual == "number" and "integer" in types and math.isfinite(value) and value.is_integer()


def _type_issue(out: _Out, path: str, expected: str, value: Any) -> None:
    actual = _JSON_TYPES.get(type(value), "object")
    out.add(path, "type", f'Invalid value: "{actual}": {path} in body must be of type '
            f'{expected}: "{actual}"')


def _check_string(node: _Node, value: str, path: str, out: _Out) -> None:
    if node.max_length is not None and len(value) > node.max_length:
        out.add(path, "too-long", f"Too long: may not be more than {node.max_length} bytes")
    if node.min_length is not None and len(value) < node.min_length:
        out.add(path, "length", f"Invalid value: {_go_value(value)}: {path} in body should be at "
                f"least {node.min_length} chars long")
    if node.pattern is not None:
        if node.pattern.regex is None:
            out.unevaluated.append(f"{path}: pattern {node.pattern.source!r}: not a Python regex")
        elif not node.pattern.regex.search(value):
            out.add(path, "pattern", f"Invalid value: {_go_value(value)}: {path} in body should "
                    f"match '{node.pattern.source}'")
    if node.format is not None and not _format_ok(node.format, value):
        out.add(path, "format", f"Invalid value: {_go_value(value)}: {path} in body must be of "
                f"type {node.format}: {_go_value(value)}")


_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_IPV4 = re.compile(r"^((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$")


def _format_ok(fmt: str, value: str) -> bool:
    """The string formats kube-openapi checks for CRDs; unknown formats are not checked."""
    if fmt == "date-time":
        return bool(_DATE_TIME.match(value))
    if fmt == "date":
        return bool(_DATE.match(value))
    if fmt == "byte":
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return False
        return True
    if fmt == "uuid":
        return bool(_UUID.match(value))
    if fmt == "ipv4":
        return bool(_IPV4.match(value))
    return True


_INT32 = (-(2**31), 2**31 - 1)


def _check_number(node: _Node, value: float, path: str, out: _Out) -> None:
    if node.format == "int32" and not _INT32[0] <= value <= _INT32[1]:
        out.add(path, "format", f"Invalid value: {_go_value(value)}: {path} in body must be of "
                f"type int32: {json.dumps(_go_value(value))}")
    top = node.maximum
    if top is not None and (value > top or (node.excl_max and value == top)):
        than = "less than" if node.excl_max else "less than or equal to"
        out.add(path, "range", f"Invalid value: {_go_value(value)}: {path} in body should be "
                f"{than} {_go_float(top)}")
    bottom = node.minimum
    if bottom is not None and (value < bottom or (node.excl_min and value == bottom)):
        than = "greater than" if node.excl_min else "greater than or equal to"
        out.add(path, "range", f"Invalid value: {_go_value(value)}: {path} in body should be "
                f"{than} {_go_float(bottom)}")


def _check_object(node: _Node, value: dict[str, Any], path: str, out: _Out, structural: bool,
                  skip_meta: bool) -> None:
    props = node.props or {}
    skip = skip_meta or node.embedded
    for key, item in value.items():
        if skip and key in _META_FIELDS:
            continue
        if key in props:
            sub = props[key]
            if sub is not None and not (item is None and not sub.nullable):
                # (the real server drops non-nullable nulls before validating)
                _walk_value(sub, item, _child(path, key), out, structural)
        elif isinstance(node.additional, _Node):
            _walk_value(node.additional, item, _child(path, key), out, structural)
        elif node.additional is None and not node.preserve and structural:
            _unknown(out, _child(path, key))
    for key in node.required:
        sub = props.get(key)
        if value.get(key) is None and not (key in value and sub is not None and sub.nullable):
            out.add(_child(path, key), "required", "Required value")
    count = len(value)
    if node.max_props is not None and count > node.max_props:
        out.add(path, "too-many", f"Too many: {count}: must have at most {node.max_props} items")
    if node.min_props is not None and count < node.min_props:
        out.add(path, "properties", f"Invalid value: {count}: {path} in body should have at least "
                f"{node.min_props} properties")


def _check_array(node: _Node, value: list[Any], path: str, out: _Out, structural: bool) -> None:
    items = node.items
    if items is not None or (structural and not node.preserve):
        for i, item in enumerate(value):
            _walk_value(items, item, f"{path}[{i}]", out, structural)
    count = len(value)
    if node.max_items is not None and count > node.max_items:
        out.add(path, "too-many", f"Too many: {count}: must have at most {node.max_items} items")
    if node.min_items is not None and count < node.min_items:
        out.add(path, "items", f"Invalid value: {count}: {path} in body should have at least "
                f"{node.min_items} items")
    if node.list_type in ("set", "map"):
        _check_duplicates(node, value, path, out)


def _check_duplicates(node: _Node, value: list[Any], path: str, out: _Out) -> None:
    seen: set[str] = set()
    for i, item in enumerate(value):
        if node.list_type == "map" and isinstance(item, dict):
            key_value: Any = {k: item.get(k) for k in node.map_keys}
        else:
            key_value = item
        key = _json(key_value)
        if key in seen:
            out.add(f"{path}[{i}]", "duplicate", f"Duplicate value: {_go_value(key_value)}")
        seen.add(key)


def _branch_issues(node: _Node, value: Any, path: str) -> list[FieldIssue]:
    sub = _Out()
    _walk(node, value, path, sub, False)
    return sub.issues


_NO_VALUE = 'Invalid value: "": '


def _check_combinators(node: _Node, value: Any, path: str, out: _Out) -> None:
    quoted = json.dumps(path)
    for branch in node.all_of:
        issues = _branch_issues(branch, value, path)
        if issues:
            out.issues.extend(issues)
            out.add(path, "allOf", f'{_NO_VALUE}{quoted} must validate all the schemas (allOf)')
            break
    if node.any_of:
        results = [_branch_issues(b, value, path) for b in node.any_of]
        if all(results):
            out.add(path, "anyOf", f"{_NO_VALUE}{quoted} must validate at least one schema (anyOf)")
            out.issues.extend(min(results, key=len))
    if node.one_of:
        results = [_branch_issues(b, value, path) for b in node.one_of]
        valid = sum(1 for r in results if not r)
        if valid != 1:
            found = "Found none valid" if valid == 0 else f"Found {valid} valid alternatives"
            out.add(path, "oneOf", f"{_NO_VALUE}{quoted} must validate one and only one "
                    f"schema (oneOf). {found}")
            if valid == 0:
                out.issues.extend(min(results, key=len))
    if node.not_ is not None and not _branch_issues(node.not_, value, path):
        out.add(path, "not", f"{_NO_VALUE}{quoted} must not validate the schema (not)")


# ---------------------------------------------------------------------------------------------
# CEL (x-kubernetes-validations)


class _Rule:
    """One `x-kubernetes-validations` entry, compiled on first use."""

    __slots__ = ("field_path", "message", "message_expression", "program", "rule", "skipped")

    def __init__(self, spec: dict[str, Any]) -> None:
        self.rule = str(spec.get("rule", ""))
        self.message = spec.get("message")
        self.message_expression = spec.get("messageExpression")
        self.field_path = spec.get("fieldPath") or ""
        self.program: Any = None
        self.skipped: str | None = None
        if "oldSelf" in self.rule:
            self.skipped = "transition rule (needs oldSelf): evaluated on update only"

    def compile(self) -> Any:
        if self.program is None and self.skipped is None:
            if _celpy() is None:
                self.skipped = "cel-python is not installed"
            else:
                self.program = _cel_program(self.rule)
                if self.program is None:
                    self.skipped = "uses CEL that cel-python cannot compile"
        return self.program


_CEL_PROGRAMS: dict[str, Any] = {}


def _cel_program(source: str) -> Any:
    if source not in _CEL_PROGRAMS:
        env = _celpy().Environment()
        try:
            _CEL_PROGRAMS[source] = env.program(env.compile(source))
        except Exception:  # celpy raises several unrelated types for unsupported syntax
            _CEL_PROGRAMS[source] = None
    return _CEL_PROGRAMS[source]


_CEL_RESULTS: OrderedDict[tuple[str, str], bool | str] = OrderedDict()
_CEL_RESULTS_SIZE = 4096


def _evaluate(rule: _Rule, program: Any, value: Any) -> bool | str:
    """True/False, or why the rule could not be evaluated; memoised (cel-python is ~1 ms)."""
    key = (rule.rule, _json(value))
    if key in _CEL_RESULTS:
        return _CEL_RESULTS[key]
    try:
        result = program.evaluate({"self": _celpy().json_to_cel(value)})
    except Exception as exc:  # Kubernetes-only functions (isURL, quantity ...) fail here
        result = exc
    verdict: bool | str
    if isinstance(result, bool | _celpy().celtypes.BoolType):
        verdict = bool(result)
    else:
        verdict = f"cel-python could not evaluate it ({type(result).__name__})"
    _CEL_RESULTS[key] = verdict
    if len(_CEL_RESULTS) > _CEL_RESULTS_SIZE:
        _CEL_RESULTS.popitem(last=False)
    return verdict


def _check_rules(node: _Node, value: Any, path: str, out: _Out) -> None:
    for rule in node.rules:
        program = rule.compile()
        if program is None:
            if rule.skipped and not rule.skipped.startswith("transition"):
                out.unevaluated.append(f"{path}: {rule.rule}: {rule.skipped}")
            continue
        verdict = _evaluate(rule, program, value)
        if isinstance(verdict, str):
            out.unevaluated.append(f"{path}: {rule.rule}: {verdict}")
        elif not verdict:
            fallback = f"failed rule: {' '.join(rule.rule.split())}"
            message = _rule_message(rule, value) or fallback
            target = path + rule.field_path if rule.field_path.startswith((".", "[")) else path
            out.add(target, "rule", f'Invalid value: "{node.type_label or "object"}": {message}')


def _rule_message(rule: _Rule, value: Any) -> str | None:
    if rule.message_expression:
        program = _cel_program(str(rule.message_expression))
        if program is not None:
            try:
                text = program.evaluate({"self": _celpy().json_to_cel(value)})
            except Exception:  # fall back to the static message, as the real server does
                text = None
            if isinstance(text, str) and text.strip():
                return str(text)
    return str(rule.message) if rule.message else None


# ---------------------------------------------------------------------------------------------
# pruning


def _prune_resource(node: _Node, obj: Any) -> Any:
    if not isinstance(obj, dict):
        return _prune(node, obj)
    out = _prune(node, obj, skip_meta=True)
    if isinstance(obj.get("metadata"), dict):
        out["metadata"] = _prune(_meta_node(), obj["metadata"])
    return out


def _prune_value(node: _Node | None, value: Any) -> Any:
    if node is not None and node.embedded:
        return _prune_resource(node, value)
    return _prune(node, value)


def _prune(node: _Node | None, value: Any, skip_meta: bool = False) -> Any:
    if isinstance(value, list):
        if node is not None and node.preserve and node.items is None:
            return json_copy(value)
        items = node.items if node is not None else None
        return [_prune_value(items, v) for v in value]
    if not isinstance(value, dict):
        return value
    if node is None:
        return {}
    props = node.props or {}
    skip = skip_meta or node.embedded
    out: dict[str, Any] = {}
    for key, item in value.items():
        if skip and key in _META_FIELDS:
            out[key] = json_copy(item)
        elif key in props:
            sub = props[key]
            out[key] = _prune_value(sub, item) if sub is not None else json_copy(item)
        elif isinstance(node.additional, _Node):
            out[key] = _prune_value(node.additional, item)
        elif node.additional is _ANY or node.preserve:
            out[key] = json_copy(item)
    return out


# ---------------------------------------------------------------------------------------------
# Go-style value formatting (what `field.Error` and kube-openapi print)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _go_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return _json(value)


def _go_float(value: float) -> str:
    """Go's `%v` for a float64: shortest digits, exponent form below 1e-4 and from 1e+06."""
    if isinstance(value, int):
        value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits))
    exp10 = len(text) + exponent - 1
    prefix = "-" if sign else ""
    if exp10 < -4 or exp10 >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    if exponent >= 0:
        return prefix + text + "0" * exponent
    point = len(text) + exponent
    if point > 0:
        return f"{prefix}{text[:point]}.{text[point:]}"
    return f"{prefix}0.{'0' * -point}{text}"
