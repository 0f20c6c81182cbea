"""Traces from a notebook: the spans Istio's proxies report, read through the Zipkin v2 API
(`/api/v2/traces`, `/api/v2/trace/{id}`, `/api/v2/services`), the API Istio's Zipkin and Jaeger
addons serve.

Every sidecar reports one span per sampled request it proxies (a CLIENT span on the caller's
side, a SERVER span on the callee's): Istio samples 1 % by default (a Telemetry resource's
`randomSamplingPercentage` changes that), and a request sent with `x-b3-sampled: 1` always. A
trace joins the spans only because the application copies the B3 headers (`x-b3-traceid`, ...)
from the request it got to the requests it makes — Bookinfo does.
Spans reach the collector a moment after the request, so `trace` waits (boundedly) for them.

    >>> from labs.tracing import trace
    >>> spans = trace("463ac35c9f6413ad48485a3953bb6124", services=["productpage.bookinfo"])
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from labs.cluster import ClusterRef, current_cluster
from labs.course import LabError

ZIPKIN_URL_ENV = "MESHLAB_ZIPKIN_URL"
TIMEOUT_S = 10.0
WAIT_S = 15.0
POLL_S = 0.5


class TracingError(LabError):
    """No span collector to ask, or no such trace (yet); the message says what to do."""


@dataclass(frozen=True)
class Span:
    """One span, as the Zipkin v2 API reports it (times in microseconds)."""

    trace_id: str
    id: str
    parent_id: str | None
    name: str
    service: str  # Istio names a workload's spans `<canonical service>.<namespace>`
    kind: str  # CLIENT (the caller's sidecar) or SERVER (the callee's)
    start_us: int
    duration_us: int
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_zipkin(cls, item: dict[str, Any]) -> Span:
        return cls(trace_id=item["traceId"], id=item["id"], parent_id=item.get("parentId"),
                   name=item.get("name", ""),
                   service=(item.get("localEndpoint") or {}).get("serviceName", "unknown"),
                   kind=item.get("kind", ""), start_us=int(item.get("timestamp", 0)),
                   duration_us=int(item.get("duration", 0)), tags=dict(item.get("tags") or {}))


def zipkin_url(cluster: ClusterRef | None = None) -> str:
    """Where the cluster's span collector answers the Zipkin API. The one place that knows.

    The embedded cluster's daemon collects spans itself (its `telemetry` port in the cluster's
    `endpoint.json`). On any other cluster it is Istio's Zipkin (or Jaeger) addon: forward a
    local port to it and say where with MESHLAB_ZIPKIN_URL."""
    if url := os.environ.get(ZIPKIN_URL_ENV):
        return url.rstrip("/")
    ref = cluster or current_cluster()
    if ref.embedded is None:
        raise TracingError(
            f"no Zipkin address for cluster {ref.context!r}. Istio's tracing addons (Zipkin, "
            "or Jaeger with its Zipkin-compatible API) run in istio-system; forward a local "
            "port in a terminal, `kubectl port-forward -n istio-system svc/zipkin 9411:9411`, "
            f"then set {ZIPKIN_URL_ENV}=http://localhost:9411 before starting Jupyter.")
    ports = ref.embedded.paths.read_endpoint()
    if ports is None or "telemetry" not in ports:
        raise TracingError(f"the embedded cluster {ref.context!r} is not running: start it with "
                           f"`meshlab up --name {ref.context}` (or run the notebook's setup cell)")
    return f"http://127.0.0.1:{ports['telemetry']}"


def services(cluster: ClusterRef | None = None) -> list[str]:
    """The service names that have reported spans (`productpage.bookinfo`, ...)."""
    return list(_get(zipkin_url(cluster), "/api/v2/services"))


def traces(service: str, *, limit: int = 10, cluster: ClusterRef | None = None
           ) -> list[list[Span]]:
    """The latest traces with a span of `service` (newest first), each a list of spans."""
    found = _get(zipkin_url(cluster), "/api/v2/traces",
                 {"serviceName": service, "limit": str(limit)})
    return [[Span.from_zipkin(item) for item in trace] for trace in found]


def trace(trace_id: str, *, services: Iterable[str] = (), wait: float = WAIT_S,
          cluster: ClusterRef | None = None) -> list[Span]:
    """The spans of one trace, ordered by start time. Waits up to `wait` seconds until the
    trace has spans of each of `services` (the proxies report a moment after the request)."""
    base, wanted = zipkin_url(cluster), set(services)
    deadline = time.monotonic() + wait
    while True:
        spans = _trace_once(base, trace_id)
        missing = wanted - {s.service for s in spans}
        if spans and not missing:
            return sorted(spans, key=lambda s: (s.start_us, s.kind != "CLIENT"))
        if time.monotonic() + POLL_S > deadline:
            break
        time.sleep(POLL_S)
    if not spans:
        raise TracingError(
            f"no trace {trace_id} after {wait:g} s. Was a request sent with this trace id "
            f"(header x-b3-traceid: {trace_id}, plus x-b3-spanid and x-b3-sampled: 1) through "
            f"a sidecar? Services with spans so far: "
            f"{', '.join(_get(base, '/api/v2/services')) or 'none'}")
    raise TracingError(f"trace {trace_id} has no span of {', '.join(sorted(missing))} after "
                       f"{wait:g} s (it has {', '.join(sorted({s.service for s in spans}))}): "
                       "does the application forward the B3 headers to that service?")


def _trace_once(base: str, trace_id: str) -> list[Span]:
    try:
        return [Span.from_zipkin(item) for item in _get(base, f"/api/v2/trace/{trace_id}")]
    except _NotFound:
        return []


class _NotFound(Exception):
    pass


def _get(base: str, path: str, params: dict[str, str] | None = None) -> Any:
    url = base + path + (f"?{urllib.parse.urlencode(params)}" if params else "")
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as err:
        if err.code == 404:
            raise _NotFound from None
        raise TracingError(f"the Zipkin API at {base} answered {err.code} to {path}: "
                           f"{err.read().decode(errors='replace').strip()}") from None
    except (OSError, ValueError) as err:
        raise TracingError(f"the Zipkin API at {base} did not answer ({err}): is the cluster "
                           "running (`meshlab status`)?") from None
