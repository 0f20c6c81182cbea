"""Jaeger's query HTTP API (the one its UI calls) over Zipkin v2 spans: the request parsing, the
trace search, and the JSON the API answers, for the Jaeger addon's twin (apps/jaeger.py).

Followed upstream (jaegertracing/jaeger, v2.x):
- cmd/query/app/http_handler.go: the routes, `structuredResponse` {data, total, limit, offset,
  errors} and `structuredError` {code, msg, traceID}; an error is that body with one error, sent
  by Go's `http.Error` (text/plain content type, a trailing newline); a trace search answers
  `total` 0 (`tracesToResponse` sets only data and errors), the services and operations lists
  their length;
- cmd/query/app/query_parser.go: `service`, `operation`, `start`/`end` (µs), `limit` (default
  100), `minDuration`/`maxDuration` (Go durations such as `1.2ms`), `tag` (`key:value`), `tags`
  (a JSON map), `traceID`, and its error messages; `lookback` is the UI's own field, which the
  parser ignores (the UI sends `start`/`end` with it), so it is ignored here too; with no
  `start` the search looks back two days (default_params.go);
- internal/uimodel/model.go: Trace {traceID, spans, processes, warnings}, Span {traceID,
  spanID, operationName, references (CHILD_OF), startTime and duration in µs, tags, logs,
  processID, warnings}, Process {serviceName, tags}; processes are `p1`, `p2`, ... in the order
  their spans come (converter/v1/json/from_domain.go);
- a span a Zipkin receiver got keeps its Zipkin tags as string tags, plus `span.kind`
  (`client`/`server`); trace ids print as 16 hex digits when their high half is zero
  (model.TraceID.String).

Not emulated: Zipkin annotations (Envoy sends none; logs stay empty), process tags, the archive
and metrics endpoints, and adjusters other than sorting tags.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from labs.duration import parse_go_duration

Obj = dict[str, Any]
DEFAULT_LIMIT = 100
DEFAULT_LOOKBACK_US = 2 * 24 * 3600 * 1_000_000  # defaultTraceQueryLookbackDuration, 2 days
TRACE_NOT_FOUND = "trace not found"  # spanstore.ErrTraceNotFound
SERVICE_REQUIRED = "parameter 'service' is required"


class QueryError(ValueError):
    """A request Jaeger answers 400 to; the message is Jaeger's."""


def structured(data: Any, *, total: int = 0, errors: list[Obj] | None = None) -> Obj:
    """`structuredResponse`: every answer of the API, success or error."""
    return {"data": data, "total": total, "limit": 0, "offset": 0, "errors": errors}


def error_body(code: int, message: str) -> Obj:
    """What `handleError` writes: no data, one error."""
    return structured(None, errors=[{"code": code, "msg": message}])


# -- parsing ----------------------------------------------------------------------------------
def go_int(text: str, bits: int = 64) -> int:
    """strconv.ParseInt(text, 10, bits); ValueError with Go's message."""
    if not re.fullmatch(r"[+-]?\d+", text):
        raise ValueError(f'strconv.ParseInt: parsing "{text}": invalid syntax')
    value = int(text)
    if not -(1 << (bits - 1)) <= value < (1 << (bits - 1)):
        raise ValueError(f'strconv.ParseInt: parsing "{text}": value out of range')
    return value


def trace_id(text: str) -> str:
    """model.TraceIDFromString, printed back as Jaeger prints it; ValueError with its message."""
    if len(text) > 32:
        raise ValueError(f"TraceID cannot be longer than 32 hex characters: {text}")
    if not text or not re.fullmatch(r"[0-9a-fA-F]+", text):
        raise ValueError(f'strconv.ParseUint: parsing "{text}": invalid syntax')
    value = int(text, 16)
    high, low = value >> 64, value & ((1 << 64) - 1)
    return f"{low:016x}" if high == 0 else f"{high:016x}{low:016x}"


@dataclass(frozen=True)
class TraceQuery:
    """`traceQueryParameters`: what a search asks for (times and durations in µs)."""

    service: str = ""
    operation: str = ""
    start_us: int = 0
    end_us: int = 0
    tags: Mapping[str, str] = field(default_factory=dict)
    limit: int = DEFAULT_LIMIT
    min_duration_us: float = 0
    max_duration_us: float = 0
    trace_ids: tuple[str, ...] = ()


def _first(params: Mapping[str, Sequence[str]], name: str) -> str:
    values = params.get(name) or [""]
    return values[0]


def _time(params: Mapping[str, Sequence[str]], name: str, default: int) -> int:
    text = _first(params, name)
    if not text:
        return default
    try:
        return go_int(text)
    except ValueError as err:
        raise QueryError(f"unable to parse param '{name}': {err}") from None


def _duration(params: Mapping[str, Sequence[str]], name: str) -> float:
    text = _first(params, name)
    if not text:
        return 0
    try:
        return parse_go_duration(text, "us")
    except ValueError as err:
        raise QueryError(f"unable to parse param '{name}': {err}") from None


def _tags(simple: Sequence[str], as_json: Sequence[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for tag in simple:
        key, colon, value = tag.partition(":")
        if not colon:
            raise QueryError(f"malformed 'tag' parameter, expecting key:value, received: {tag}")
        tags[key] = value
    for text in as_json:
        try:
            parsed = json.loads(text)
        except ValueError as err:
            raise QueryError(f"malformed 'tags' parameter, cannot unmarshal JSON: {err}") from None
        if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
            raise QueryError("malformed 'tags' parameter, cannot unmarshal JSON: expected an "
                             'object of strings, e.g. {"http.status_code":"200"}')
        tags.update(parsed)
    return tags


def parse_trace_query(params: Mapping[str, Sequence[str]],
                      now_us: int | None = None) -> TraceQuery:
    """`parseTraceQueryParams` (query_parser.go), in its order, with its messages."""
    now = now_us if now_us is not None else int(time.time() * 1_000_000)
    start = _time(params, "start", now - DEFAULT_LOOKBACK_US)
    end = _time(params, "end", now)
    tags = _tags(params.get("tag") or [], params.get("tags") or [])
    limit = DEFAULT_LIMIT
    if text := _first(params, "limit"):
        try:
            limit = go_int(text, 32)
        except ValueError as err:
            raise QueryError(str(err)) from None
    min_duration = _duration(params, "minDuration")
    max_duration = _duration(params, "maxDuration")
    ids = []
    for text in params.get("traceID") or []:
        try:
            ids.append(trace_id(text))
        except ValueError as err:
            raise QueryError(f"cannot parse traceID param: {err}") from None
    query = TraceQuery(_first(params, "service"), _first(params, "operation"), start, end, tags,
                       limit, min_duration, max_duration, tuple(ids))
    if not query.trace_ids and not query.service:
        raise QueryError(SERVICE_REQUIRED)
    if min_duration and max_duration and max_duration < min_duration:
        raise QueryError("'maxDuration' should be greater than 'minDuration'")
    return query


# -- Zipkin v2 -> Jaeger's UI model -------------------------------------------------------------
def _field(span: Obj, name: str) -> Obj:
    """An object field of a span; {} when absent or not an object."""
    value = span.get(name)
    return value if isinstance(value, dict) else {}


def _service(span: Obj) -> str:
    return str(_field(span, "localEndpoint").get("serviceName") or "unknown")


def _tags_of(span: Obj) -> list[Obj]:
    tags = {str(k): str(v) for k, v in _field(span, "tags").items()}
    if span.get("kind"):
        tags["span.kind"] = str(span["kind"]).lower()
    return [{"key": key, "type": "string", "value": tags[key]} for key in sorted(tags)]


def _int(value: Any) -> int:
    """A Zipkin number; 0 for what is not one (the collector keeps spans as POSTed)."""
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _shown_id(raw: Any) -> str:
    """A trace id as Jaeger prints it; one that is not hex as it came, lower-cased."""
    try:
        return trace_id(str(raw))
    except ValueError:
        return str(raw).lower()


def to_jaeger(spans: Sequence[Obj]) -> Obj:
    """One trace, from its Zipkin v2 spans, as Jaeger's API answers it; spans by start time."""
    ordered = sorted(spans, key=lambda s: (_int(s.get("timestamp")), str(s.get("id"))))
    processes: dict[str, Obj] = {}
    process_ids: dict[str, str] = {}
    out = []
    for span in ordered:
        service = _service(span)
        if service not in process_ids:
            process_ids[service] = f"p{len(process_ids) + 1}"
            processes[process_ids[service]] = {"serviceName": service, "tags": []}
        tid = _shown_id(span["traceId"])
        parent = span.get("parentId")
        out.append({
            "traceID": tid, "spanID": str(span["id"]).lower(),
            "operationName": str(span.get("name") or ""),
            "references": [{"refType": "CHILD_OF", "traceID": tid,
                            "spanID": str(parent).lower()}] if parent else [],
            "startTime": _int(span.get("timestamp")),
            "duration": _int(span.get("duration")),
            "tags": _tags_of(span), "logs": [], "processID": process_ids[service],
            "warnings": None,
        })
    return {"traceID": out[0]["traceID"] if out else "", "spans": out, "processes": processes,
            "warnings": None}


def span_matches(span: Obj, query: TraceQuery) -> bool:
    """Does one span satisfy every condition of a search (FindTraces' rule)?"""
    duration = _int(span.get("duration"))
    stamp = _int(span.get("timestamp"))
    tags = {t["key"]: t["value"] for t in _tags_of(span)}
    return (_service(span) == query.service
            and (not query.operation or span.get("name") == query.operation)
            and query.start_us <= stamp <= query.end_us
            and (not query.min_duration_us or duration >= query.min_duration_us)
            and (not query.max_duration_us or duration <= query.max_duration_us)
            and all(tags.get(k) == v for k, v in query.tags.items()))


# -- the storage behind it ------------------------------------------------------------------------
Fetch = Callable[[str, Mapping[str, str]], Any]  # Zipkin API path, params -> decoded JSON
SEARCH_DEPTH = 10_000  # traces read from storage when a filter Zipkin's API lacks is asked for


class NotFound(LookupError):
    """Storage has no such trace."""


class SpanStorage:
    """Jaeger's read side over a Zipkin v2 API (the embedded cluster's span collector):
    `fetch(path, params)` returns its decoded JSON, raises NotFound for a 404."""

    def __init__(self, fetch: Fetch) -> None:
        self.fetch = fetch

    def services(self) -> list[str]:
        return sorted(str(s) for s in self.fetch("/api/v2/services", {}))

    def operations(self, service: str) -> list[tuple[str, str]]:
        """(name, span kind) of the service's spans, by name."""
        found = {(str(span.get("name") or ""), str(span.get("kind") or "").lower())
                 for trace in self._traces(service, SEARCH_DEPTH, None) for span in trace
                 if _service(span) == service and span.get("name")}
        return sorted(found)

    def trace(self, tid: str) -> list[Obj]:
        """The trace's spans; its id as given, or in its 32-digit form."""
        for candidate in dict.fromkeys((tid, tid.rjust(32, "0"))):
            try:
                return list(self.fetch(f"/api/v2/trace/{candidate}", {}))
            except NotFound:
                continue
        raise NotFound(TRACE_NOT_FOUND)

    def find_one(self, tid: str) -> Obj:
        """One trace in Jaeger's model; NotFound when storage has none."""
        return to_jaeger(self.trace(tid))

    def find(self, query: TraceQuery) -> list[Obj]:
        """The search's traces, newest first, in Jaeger's model."""
        if query.trace_ids:
            found = []
            for tid in query.trace_ids:
                try:
                    found.append(self.trace(tid))
                except NotFound:
                    continue
        else:
            limit = query.limit if query.limit > 0 else DEFAULT_LIMIT
            # Zipkin's API filters by service, operation, time and minimum duration; tags and
            # the maximum duration are filtered here, over more of the stored traces
            depth = SEARCH_DEPTH if query.tags or query.max_duration_us else limit
            found = [t for t in self._traces(query.service, depth, query)
                     if any(span_matches(s, query) for s in t)][:limit]
        return [to_jaeger(spans) for spans in found if spans]

    def _traces(self, service: str, limit: int, query: TraceQuery | None) -> list[list[Obj]]:
        params = {"serviceName": service, "limit": str(limit)}
        if query is not None:
            params["endTs"] = str(query.end_us // 1000)
            params["lookback"] = str(max(query.end_us - query.start_us, 0) // 1000)
            if query.operation:
                params["spanName"] = query.operation
            if query.min_duration_us:
                params["minDuration"] = str(int(query.min_duration_us))
        return [list(t) for t in self.fetch("/api/v2/traces", params)]
