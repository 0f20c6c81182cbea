"""Decoding a written object into its Go type, the step kube-apiserver runs before admission.

kube-apiserver turns every create/update body, and the result of every patch, into the typed
object before defaulting, admission or validation see it, so those steps never meet a `spec`
that is a list or a string. This module repeats that step on the JSON tree:

- Built-in kinds are walked along their structural schema (`builtin_schemas`) with the rules of
  the Go decoder kube-apiserver uses (`sigs.k8s.io/json`, a fork of `encoding/json`,
  internal/golang/encoding/json/decode.go): `null` is the Go zero value (the field counts as
  absent), the first value of the wrong JSON type stops the request with the decoder's own
  words, `json: cannot unmarshal array into Go struct field Pod.spec of type v1.PodSpec`.
- Custom resources are unstructured there: a wrong type is left to schema validation (a 422),
  and `null` in a field that is not `nullable` is pruned, as apiextensions-apiserver does
  before defaulting (`PruneNonNullableNullsWithoutDefaults`).

How the request reports a failure depends on how the object arrived
(staging/src/k8s.io/apiserver/pkg/endpoints/handlers/rest.go `transformDecodeError` and
patch.go `applyPatchToCurrentObject` / `applyPatchToObject`): see `body_error` and
`patch_error`.
"""

from __future__ import annotations

import functools
import json
import math
import re
from typing import Any

from .errors import ApiError, FieldCause, bad_request, invalid
from .protobuf_messages import MESSAGES

Obj = dict[str, Any]
Schema = dict[str, Any]

GO_TYPE = "x-go-type"  # set by builtin_schemas on each struct: "v1.PodSpec"
_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
# resource.Quantity's UnmarshalJSON answers ErrFormatWrong (apimachinery/pkg/api/resource).
QUANTITY_ERROR = ("quantities must match the regular expression "
                  "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
_MODEL = re.compile(r"^(?:[A-Z][a-z]+)?(V\d+(?:(?:alpha|beta)\d+)?)([A-Z].*)$")


class DecodeError(Exception):
    """The Go decoder's error text (without the request's wrapping)."""


def go_type_name(model: str) -> str:
    """`V1PodSpec` -> `v1.PodSpec`, `CoreV1EndpointPort` -> `v1.EndpointPort`: the package-
    qualified name Go's reflection prints for the generated client model's API type."""
    match = _MODEL.match(model)
    return f"{match[1].lower()}.{match[2]}" if match else model


@functools.cache
def _int_kinds(struct: str) -> dict[str, str]:
    """JSON field name -> `int32` / `int64` of a Go struct, from its protobuf field table."""
    fields = MESSAGES.get(struct, {})
    return {name: go.lstrip("[]*") for name, go in fields.values()
            if go.lstrip("[]*") in _INT_RANGES}


def decode_builtin(schema: Schema, obj: Obj, *, unstructured: bool = False) -> Obj:
    """`obj` decoded into the Go type `schema` describes: nulls dropped (zero values), or a
    `DecodeError` for the first value of the wrong type. `unstructured` words errors like
    runtime.DefaultUnstructuredConverter (strategic merge patches) instead of encoding/json."""
    decoder = _Decoder(schema.get("definitions") or {}, unstructured)
    decoded = decoder.struct(schema, obj, [])
    spec = (schema.get("properties") or {}).get("spec")
    if isinstance(spec, dict) and GO_TYPE in spec:
        # `Spec` is a plain (non-pointer) struct in every built-in type, so an absent or null
        # spec is an empty one, and validation still says what it lacks.
        decoded.setdefault("spec", {})
    return decoded


def check_type_meta(obj: Obj) -> None:
    """apiVersion/kind are read first, into an anonymous struct (runtime/serializer/json
    `SimpleMetaFactory.Interpret`)."""
    for key in ("apiVersion", "kind"):
        value = obj.get(key)
        if value is not None and not isinstance(value, str):
            raise DecodeError(
                "couldn't get version/kind; json parse error: json: cannot unmarshal "
                f"{_json_kind(value)} into Go struct field .{key} of type string")


def prune_nulls(schema: Schema, value: Any) -> Any:
    """A custom resource with the `null`s of non-nullable fields removed."""
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        out = {}
        for key, item in value.items():
            sub = props.get(key) if isinstance(props, dict) else None
            if sub is None and isinstance(extra, dict):
                sub = extra
            if item is None and isinstance(sub, dict) and not sub.get("nullable"):
                continue
            out[key] = prune_nulls(sub, item) if isinstance(sub, dict) else item
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune_nulls(schema["items"], item) for item in value]
    return value


class _Decoder:
    def __init__(self, definitions: dict[str, Schema], unstructured: bool) -> None:
        self.definitions = definitions
        self.unstructured = unstructured
        self.struct_name = ""

    def resolve(self, schema: Schema) -> Schema:
        ref = schema.get("$ref")
        if isinstance(ref, str):
            return self.definitions.get(ref.removeprefix("#/definitions/"), {})
        return schema

    def go_type(self, schema: Schema) -> str:
        """How Go's reflection prints the field's type (pointers already followed)."""
        schema = self.resolve(schema)
        if GO_TYPE in schema:
            return str(schema[GO_TYPE])
        if schema.get("x-kubernetes-int-or-string"):
            return "intstr.IntOrString"
        if "oneOf" in schema:
            return "resource.Quantity"
        kind = schema.get("type")
        if kind == "array":
            return "[]" + self.go_type(schema.get("items") or {})
        if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
            return "map[string]" + self.go_type(schema["additionalProperties"])
        if kind == "string":
            return "[]uint8" if schema.get("format") == "byte" else "string"
        return {"boolean": "bool", "number": "float64", "integer": str(
            schema.get("format") or "int32")}.get(str(kind), "interface {}")

    def fail(self, value: Any, schema: Schema, path: list[str], expected: str) -> DecodeError:
        """The decoder's error for `value` where a `expected` (struct/map/slice/scalar) goes."""
        if self.unstructured:
            # runtime/converter.go fromUnstructured: struct/map/slice restore errors, else a
            # primitive conversion error, naming Go kinds, never the field.
            got = {dict: "map", list: "slice", str: "string", bool: "bool", int: "int64",
                   float: "float64"}[type(value)]
            if expected == "struct":
                return DecodeError(f"cannot restore struct from: {got}")
            if expected in ("map", "slice"):
                return DecodeError(f"cannot restore {expected} from {got}")
            return DecodeError(f"cannot convert {got} to {self.go_type(schema)}")
        return DecodeError(f"json: cannot unmarshal {_json_kind(value)} into Go struct field "
                           f"{self.struct_name}.{'.'.join(path)} of type "
                           f"{self.go_type(schema)}")

    def struct(self, schema: Schema, value: Any, path: list[str]) -> Obj:
        if not isinstance(value, dict):
            raise self.fail(value, schema, path, "struct")
        name = str(schema.get(GO_TYPE, "")).rpartition(".")[2]
        props = schema.get("properties") or {}
        ints = _int_kinds(name)
        out: Obj = {}
        for key, item in value.items():
            sub = props.get(key)
            if sub is None:
                out[key] = item  # unknown: pruned or refused later, per fieldValidation
                continue
            if item is None:
                continue  # null is the zero value: as if the field were not sent
            outer, self.struct_name = self.struct_name, name
            sub = self.resolve(sub)
            if key in ints and sub.get("type") in ("integer", "array"):
                sub = _with_int_format(sub, ints[key])
            out[key] = self.value(sub, item, [*path, key])
            self.struct_name = outer
        return out

    def value(self, schema: Schema, value: Any, path: list[str]) -> Any:
        schema = self.resolve(schema)
        if value is None:
            return self.zero(schema)
        if GO_TYPE in schema:
            return self.struct(schema, value, path)
        if schema.get("x-kubernetes-int-or-string"):
            if isinstance(value, str):
                return value
            return self.integer({"type": "integer", "format": "int32"}, value, path)
        if "oneOf" in schema:  # resource.Quantity: a string or a number
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise DecodeError(QUANTITY_ERROR)
            return value
        kind = schema.get("type")
        if kind == "array":
            if not isinstance(value, list):
                raise self.fail(value, schema, path, "slice")
            items = schema.get("items") or {}
            return [self.value(items, item, path) for item in value]
        if kind == "object":
            extra = schema.get("additionalProperties")
            if not isinstance(value, dict):
                raise self.fail(value, schema, path, "map")
            if isinstance(extra, dict):
                return {k: self.value(extra, v, path) for k, v in value.items()}
            return value
        if kind == "string":
            if not isinstance(value, str):
                raise self.fail(value, schema, path, "scalar")
        elif kind == "boolean":
            if not isinstance(value, bool):
                raise self.fail(value, schema, path, "scalar")
        elif kind == "integer":
            return self.integer(schema, value, path)
        elif kind == "number" and (isinstance(value, bool) or
                                   not isinstance(value, int | float)):
            raise self.fail(value, schema, path, "scalar")
        return value

    def integer(self, schema: Schema, value: Any, path: list[str]) -> int:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(value, schema, path, "scalar")
        if isinstance(value, float):
            # Lenient where Go is not: an integral float (`1.0`, what a YAML-to-JSON step or a
            # Python client may produce) is taken as the integer.
            if not (math.isfinite(value) and value.is_integer()):
                raise self._number(value, schema, path)
            value = int(value)
        low, high = _INT_RANGES[str(schema.get("format") or "int32")]
        if not low <= value <= high:
            raise self._number(value, schema, path)
        return value

    def _number(self, value: float, schema: Schema, path: list[str]) -> DecodeError:
        """An unrepresentable number: Go quotes the literal (`number 1.5`)."""
        if self.unstructured:
            return self.fail(value, schema, path, "scalar")
        return DecodeError(f"json: cannot unmarshal number {json.dumps(value)} into Go struct "
                           f"field {self.struct_name}.{'.'.join(path)} of type "
                           f"{self.go_type(schema)}")

    def zero(self, schema: Schema) -> Any:
        """The zero value a null becomes inside a list or map (a struct field just goes)."""
        if GO_TYPE in schema:
            return {}
        if schema.get("x-kubernetes-int-or-string"):
            return 0
        return {"string": "", "integer": 0, "number": 0, "boolean": False}.get(
            str(schema.get("type")))


def _with_int_format(schema: Schema, go: str) -> Schema:
    if schema.get("type") == "array":
        items = schema.get("items") or {}
        return {**schema, "items": {**items, "format": go}} if items.get(
            "type") == "integer" else schema
    return {**schema, "format": go}


def _json_kind(value: Any) -> str:
    """What encoding/json calls a JSON value in `cannot unmarshal X`."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "value")


def body_error(kind: str, api_version: str, err: DecodeError) -> ApiError:
    """A create/update body that does not decode: 400, worded by `transformDecodeError`."""
    text = str(err)
    if text.startswith("couldn't get version/kind"):
        return bad_request(f"the object provided is unrecognized (must be of type {kind}): "
                           f"{text}")
    version = api_version.rpartition("/")[2]
    return bad_request(f'{kind} in version "{version}" cannot be handled as a {kind}: {text}')


def patch_error(patched: Any, patch: Any, strategic: bool, err: DecodeError) -> ApiError:
    """A patch whose result does not decode: 422 on the field `patch`, whose value is the
    patched object (JSON and merge patches) or the patch (strategic merge, printed `%+v`)."""
    shown = _go_print(patch) if strategic else json.dumps(patched, separators=(",", ":"))
    cause = FieldCause("patch", "FieldValueInvalid",
                       f"Invalid value: {json.dumps(shown)}: {err}")
    return invalid("", "", [cause])


def _go_print(value: Any) -> str:
    """Go's `%+v` of an unstructured value: `map[spec:[]]`."""
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go_print(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_go_print(v) for v in value) + "]"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
