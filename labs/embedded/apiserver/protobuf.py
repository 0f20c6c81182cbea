"""Decode Kubernetes protobuf request bodies into the dict their JSON form would give.

kubectl (client-go >= 1.32) sends `kubectl create namespace|configmap|secret|deployment|...`
bodies as `application/vnd.kubernetes.protobuf` and does not retry with JSON after a 415, so the
embedded API server has to read them. A body is the magic `k8s\\0` followed by a
`runtime.Unknown` {typeMeta {apiVersion, kind}, raw, contentEncoding, contentType}; `raw` holds
the object message, decoded here by a small wire-format reader driven by the field tables in
protobuf_messages.py. Anything not in those tables is rejected with a 400 that names it, never
guessed at.

Omission rule (see protobuf_messages.py): client-go writes every non-pointer Go field, even when
empty, so zero-valued non-pointer fields are dropped as JSON `omitempty` would drop them, while
pointer fields that are present are kept even when zero (`replicas: 0`, `emptyDir: {}`).
Non-pointer structs that decode to nothing are dropped too (JSON would print `status: {}`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from labs.embedded.apiserver.errors import ApiError, bad_request
from labs.embedded.apiserver.protobuf_messages import KINDS, MESSAGES

PROTOBUF_CONTENT_TYPE = "application/vnd.kubernetes.protobuf"

_MAGIC = b"k8s\x00"
_MAX_DEPTH = 64
_WORKAROUND = (
    "Send the object as YAML or JSON instead: write it with "
    "`kubectl create ... --dry-run=client -o yaml > object.yaml` and run "
    "`kubectl apply -f object.yaml`."
)
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5
_INTS = {"int32", "int64", "bool"}


class _DecodeError(Exception):
    """Raised inside the decoder; turned into one 400 at the public entry point."""


def decode_protobuf_object(body: bytes) -> dict[str, Any]:
    """Decode a `k8s\\0` + runtime.Unknown body into the object's JSON-shaped dict."""
    try:
        return _decode_envelope(body)
    except _DecodeError as exc:
        raise _bad(str(exc)) from None
    except RecursionError:
        raise _bad("the object nests too deeply") from None


def _bad(what: str) -> ApiError:
    return bad_request(f"cannot decode the protobuf request body: {what}. {_WORKAROUND}")


def _decode_envelope(body: bytes) -> dict[str, Any]:
    if not body.startswith(_MAGIC):
        raise _DecodeError(
            f"it does not start with the Kubernetes protobuf magic bytes 'k8s\\x00' "
            f"(got {body[:4]!r}); is the Content-Type right?"
        )
    api_version = kind = ""
    raw: tuple[int, int] | None = None
    for number, wire, value, at in _fields(body, len(_MAGIC), len(body), "runtime.Unknown"):
        if number == 1:
            _expect(wire, _LENGTH, "runtime.Unknown", "typeMeta", at)
            api_version, kind = _type_meta(body, *value)
        elif number == 2:
            _expect(wire, _LENGTH, "runtime.Unknown", "raw", at)
            raw = value
        elif number in (3, 4):
            _expect(wire, _LENGTH, "runtime.Unknown", "contentEncoding/contentType", at)
            if value[0] != value[1]:
                setting = _text(body, *value, "runtime.Unknown contentEncoding/contentType")
                raise _DecodeError(f"unsupported content encoding or type {setting!r}")
        else:
            raise _DecodeError(f"unknown field number {number} in runtime.Unknown (at byte {at})")
    if not api_version or not kind:
        raise _DecodeError("the envelope has no apiVersion/kind")
    message = KINDS.get((api_version, kind))
    if message is None:
        known = ", ".join(f"{k} ({v})" for v, k in sorted(KINDS))
        raise _DecodeError(
            f"no protobuf message known for apiVersion {api_version!r}, kind {kind!r}; "
            f"this server decodes protobuf only for: {known}"
        )
    start, end = raw if raw is not None else (0, 0)
    return {"apiVersion": api_version, "kind": kind, **_message(body, start, end, message, 0)}


def _type_meta(buf: bytes, start: int, end: int) -> tuple[str, str]:
    found = {1: "", 2: ""}
    for number, wire, value, at in _fields(buf, start, end, "runtime.TypeMeta"):
        if number not in found:
            raise _DecodeError(f"unknown field number {number} in runtime.TypeMeta (at byte {at})")
        _expect(wire, _LENGTH, "runtime.TypeMeta", "apiVersion/kind", at)
        found[number] = _text(buf, *value, "runtime.TypeMeta")
    return found[1], found[2]


def _message(buf: bytes, start: int, end: int, name: str, depth: int) -> dict[str, Any]:
    if depth > _MAX_DEPTH:
        raise _DecodeError(f"message {name} nests more than {_MAX_DEPTH} levels deep")
    table = MESSAGES[name]
    out: dict[str, Any] = {}
    for number, wire, value, at in _fields(buf, start, end, name):
        spec = table.get(number)
        if spec is None:
            raise _DecodeError(
                f"unknown field number {number} in message {name} (at byte {at}); this server "
                f"knows the Kubernetes API fields up to v1.36"
            )
        key, ftype = spec
        where = f"{name}.{key or ftype}"
        if ftype.startswith("[]"):
            out.setdefault(key, []).extend(_repeated(buf, wire, value, ftype[2:], where, at, depth))
        elif ftype.startswith("map[string]"):
            entry_key, entry_value = _map_entry(buf, wire, value, ftype[11:], where, at, depth)
            out.setdefault(key, {})[entry_key] = entry_value
        else:
            pointer = ftype.startswith("*")
            base = ftype.lstrip("*")
            decoded = _single(buf, wire, value, base, where, at, depth)
            if not key:
                out.update(decoded)
            elif pointer or not _is_zero(base, decoded):
                out[key] = decoded
            else:
                out.pop(key, None)
    return out


def _repeated(
    buf: bytes, wire: int, value: Any, base: str, where: str, at: int, depth: int
) -> list[Any]:
    if base in _INTS and wire == _LENGTH:  # packed encoding
        start, end = value
        items = []
        while start < end:
            item, start = _varint(buf, start, end)
            items.append(_scalar_int(item, base))
        return items
    return [_single(buf, wire, value, base, where, at, depth)]


def _map_entry(
    buf: bytes, wire: int, value: Any, base: str, where: str, at: int, depth: int
) -> tuple[str, Any]:
    _expect(wire, _LENGTH, where, "map entry", at)
    key, decoded = "", _zero(base)
    for number, entry_wire, entry_value, entry_at in _fields(buf, *value, f"{where} map entry"):
        if number == 1:
            key = _single(buf, entry_wire, entry_value, "string", f"{where} key", entry_at, depth)
        elif number == 2:
            decoded = _single(buf, entry_wire, entry_value, base, where, entry_at, depth)
        else:
            raise _DecodeError(
                f"unknown field number {number} in a map entry of {where} (at byte {entry_at})"
            )
    return key, decoded


def _single(buf: bytes, wire: int, value: Any, base: str, where: str, at: int, depth: int) -> Any:
    if base in _INTS:
        _expect(wire, _VARINT, where, base, at)
        return _scalar_int(value, base)
    _expect(wire, _LENGTH, where, base, at)
    start, end = value
    if base == "string":
        return _text(buf, start, end, where)
    if base == "bytes":
        return base64.b64encode(buf[start:end]).decode("ascii")
    if base == "Time":
        return _time(buf, start, end, where)
    if base == "IntOrString":
        return _int_or_string(buf, start, end, where)
    if base == "Quantity":
        return _quantity(buf, start, end, where)
    if base == "FieldsV1":
        return _fields_v1(buf, start, end, where)
    return _message(buf, start, end, base, depth + 1)


def _scalar_int(value: int, base: str) -> int | bool:
    if base == "bool":
        return value != 0
    bits = 32 if base == "int32" else 64
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _is_zero(base: str, value: Any) -> bool:
    if base == "IntOrString":
        return value == 0 and not isinstance(value, str)
    if base == "Quantity":
        return value == ""
    return value is None or value in ("", 0, False) or value == {}


def _zero(base: str) -> Any:
    return {"string": "", "bytes": "", "Quantity": "0", "Time": None}.get(base)


def _time(buf: bytes, start: int, end: int, where: str) -> str | None:
    """metav1.Time: {seconds, nanos}; JSON is RFC 3339 in UTC, whole seconds; empty is null."""
    if start == end:
        return None
    seconds = 0
    for number, wire, value, at in _fields(buf, start, end, f"{where} (Time)"):
        if number not in (1, 2):
            raise _DecodeError(f"unknown field number {number} in Time {where} (at byte {at})")
        _expect(wire, _VARINT, where, "Time", at)
        if number == 1:
            seconds = int(_scalar_int(value, "int64"))
    try:
        moment = datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise _DecodeError(f"{where} holds an out-of-range time ({seconds} seconds)") from None
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _int_or_string(buf: bytes, start: int, end: int, where: str) -> int | str:
    """intstr.IntOrString: {type 0 int / 1 string, intVal, strVal} -> a JSON number or string."""
    kind, number, text = 0, 0, ""
    for field, wire, value, at in _fields(buf, start, end, f"{where} (IntOrString)"):
        if field in (1, 2):
            _expect(wire, _VARINT, where, "IntOrString", at)
            if field == 1:
                kind = int(_scalar_int(value, "int64"))
            else:
                number = int(_scalar_int(value, "int32"))
        elif field == 3:
            _expect(wire, _LENGTH, where, "IntOrString", at)
            text = _text(buf, *value, where)
        else:
            raise _DecodeError(
                f"unknown field number {field} in IntOrString {where} (at byte {at})"
            )
    if kind not in (0, 1):
        raise _DecodeError(f"{where} has IntOrString type {kind}; expected 0 (int) or 1 (string)")
    return text if kind == 1 else number


def _quantity(buf: bytes, start: int, end: int, where: str) -> str:
    """resource.Quantity: {string} -> its canonical string."""
    text = ""
    for number, wire, value, at in _fields(buf, start, end, f"{where} (Quantity)"):
        if number != 1:
            raise _DecodeError(f"unknown field number {number} in Quantity {where} (at byte {at})")
        _expect(wire, _LENGTH, where, "Quantity", at)
        text = _text(buf, *value, where)
    return text


def _fields_v1(buf: bytes, start: int, end: int, where: str) -> Any:
    """metav1.FieldsV1: {Raw} holding the managed-fields JSON document itself."""
    raw = b""
    for number, wire, value, at in _fields(buf, start, end, f"{where} (FieldsV1)"):
        if number != 1:
            raise _DecodeError(f"unknown field number {number} in FieldsV1 {where} (at byte {at})")
        _expect(wire, _LENGTH, where, "FieldsV1", at)
        raw = buf[value[0] : value[1]]
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise _DecodeError(f"{where} does not hold a JSON document") from None


def _text(buf: bytes, start: int, end: int, where: str) -> str:
    try:
        return buf[start:end].decode("utf-8")
    except UnicodeDecodeError:
        raise _DecodeError(f"{where} is not valid UTF-8 (bytes {start}-{end})") from None


def _expect(wire: int, expected: int, where: str, what: str, at: int) -> None:
    if wire != expected:
        raise _DecodeError(
            f"{where} ({what}) has wire type {wire}, expected {expected} (at byte {at})"
        )


def _fields(buf: bytes, start: int, end: int, where: str) -> Iterator[tuple[int, int, Any, int]]:
    """Yield (field number, wire type, value, byte offset); LENGTH values are (start, end)."""
    pos = start
    while pos < end:
        at = pos
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _DecodeError(f"invalid field number 0 in {where} (at byte {at})")
        value: Any
        if wire == _VARINT:
            value, pos = _varint(buf, pos, end)
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
            if pos + size > end:
                raise _DecodeError(f"truncated fixed-width field {number} in {where} at byte {at}")
            value, pos = int.from_bytes(buf[pos : pos + size], "little"), pos + size
        elif wire == _LENGTH:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise _DecodeError(
                    f"truncated field {number} in {where} at byte {at}: it declares "
                    f"{length} bytes but only {end - pos} remain"
                )
            value, pos = (pos, pos + length), pos + length
        else:
            raise _DecodeError(
                f"unsupported wire type {wire} for field {number} in {where} (at byte {at})"
            )
        yield number, wire, value, at


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    start, result, shift = pos, 0, 0
    while True:
        if pos >= end:
            raise _DecodeError(f"truncated varint at byte {start}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _DecodeError(f"varint longer than 10 bytes at byte {start}")
