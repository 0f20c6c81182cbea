"""The daemon's telemetry server: Istio's standard metrics and a Zipkin-compatible span collector.

Istio's proxies compute `istio_requests_total` and friends in a stats filter that plain Envoy
lacks. Here every sidecar writes one JSON line per request (`<pod dir>/istio-proxy/telemetry.log`,
see xds/observability.py); this server tails those files and keeps the same metrics, with the
same names, labels and buckets, at `/metrics` for Prometheus. Workload, app and version labels
come from the pods of the latest mesh snapshot; the caller of an inbound request is known by
its certificate (mTLS) and, when several workloads share a service account, by matching the
request id against the lines the caller's own sidecar wrote.

Other meshes' proxies whose metrics are their own (Linkerd's, per proxy on its admin port) add a
`ProxyMetrics` (`add_proxy_metrics`): the server tails `<pod dir>/<its container>/telemetry.log`
the same way, hands it each pod's lines, and serves its text at `/proxies/<pod dir>/metrics`,
where that proxy's own `/metrics` route leads. `GET /proxies/tap?pods=<pod dir>,...` streams
those proxies' lines as they are read (one JSON object a line, with its `pod_dir`): what
`linkerd viz tap` and `top` show (labs/linkerd/viz/tap.py).

Spans arrive from the sidecars' Zipkin tracers (`POST /api/v2/spans`) and are kept in memory,
bounded, and served by the Zipkin v2 read API (`/api/v2/traces`, `/api/v2/trace/{id}`,
`/api/v2/services`, `/api/v2/spans`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from bisect import bisect_left
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from labs.istio_names import SIDECAR_CONTAINER

from ..paths import pods_dir
from ..workload import TELEMETRY_LOG, host_ports, workload_name
from .kube_state import KubeState, pod_spiffe_id

log = logging.getLogger(__name__)
Obj = dict[str, Any]
POLL_INTERVAL = 0.2
# With no new line, the poll backs off to this: an idle cluster should cost no CPU, and a scrape
# of /metrics reads the logs first anyway, so Prometheus never sees counts older than its scrape.
IDLE_POLL_INTERVAL = 2.0
SPAN_LIMIT = 10_000
TAP_INTERVAL = 0.25  # seconds between reads of the logs while a tap stream is open
TAP_QUEUE = 10_000  # lines a slow tap client may lag behind before lines are dropped
UNKNOWN = "unknown"
CLUSTER_NAME = "Kubernetes"  # Istio's default cluster id, in source_/destination_cluster
# An inbound line whose caller cannot be told from its certificate alone waits this long for
# the caller's outbound line (sidecars flush their logs independently).
CORRELATION_WAIT = 2.0
CORRELATION_MEMORY = 20_000
# The labels of each distinct kind of request, per mesh snapshot (LABEL_MEMORY at most): the same
# few combinations of caller, callee and response recur, and working them out again for every
# log line was two thirds of the CPU the daemon spent per line (measured: 11 of 16 us; 5.5 us
# with this), CPU taken from the proxies and apps on a small machine.
LABEL_MEMORY = 10_000
# The log fields that, with the caller found for an inbound request, decide its labels.
OUTBOUND_KEY = ("namespace", "pod", "workload", "principal", "upstream_peer_uri_san",
                "upstream_tls_version", "upstream_host", "upstream_cluster", "authority",
                "content_type", "response_code", "response_flags")
INBOUND_KEY = ("namespace", "pod", "workload", "principal", "downstream_peer_uri_san",
               "connection_security", "authority", "content_type", "response_code",
               "response_flags")

# Envoy's default histogram buckets, which Istio's request duration uses (milliseconds).
DURATION_BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000,
                    60000, 300000, 600000, 1800000, 3600000)
BYTES_BUCKETS = (1, 10, 100, 1000, 10000, 100000, 1000000, 10000000)
LABELS = (
    "reporter", "source_workload", "source_canonical_service", "source_canonical_revision",
    "source_workload_namespace", "source_principal", "source_app", "source_version",
    "source_cluster", "destination_workload", "destination_workload_namespace",
    "destination_principal", "destination_app", "destination_version", "destination_service",
    "destination_canonical_service", "destination_canonical_revision",
    "destination_service_name", "destination_service_namespace", "destination_cluster",
    "request_protocol", "response_code", "grpc_response_status", "response_flags",
    "connection_security_policy",
)
LabelValues = tuple[str, ...]
INF = 'le="+Inf"'


# -- metrics ---------------------------------------------------------------------------------
@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket, not cumulative
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)
        index = bisect_left(self.buckets, value)
        if index < len(self.buckets):
            self.counts[index] += 1
        self.total += value
        self.count += 1


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels_text(labels: LabelValues, extra: str = "") -> str:
    parts = [f'{name}="{_escape(value)}"' for name, value in zip(LABELS, labels, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}"


class IstioMetrics:
    """Istio's standard request metrics, rendered in Prometheus' text format."""

    HISTOGRAMS = (
        ("istio_request_duration_milliseconds", DURATION_BUCKETS),
        ("istio_request_bytes", BYTES_BUCKETS),
        ("istio_response_bytes", BYTES_BUCKETS),
    )

    def __init__(self) -> None:
        self.requests: dict[LabelValues, int] = {}
        self.histograms: dict[str, dict[LabelValues, Histogram]] = {
            name: {} for name, _ in self.HISTOGRAMS}
        self._recorded = 0  # requests recorded so far: the text below is current while equal
        self._text: tuple[int, str] | None = None

    def record(self, labels: LabelValues, duration_ms: float, request_bytes: float,
               response_bytes: float) -> None:
        self._recorded += 1
        self.requests[labels] = self.requests.get(labels, 0) + 1
        for (name, buckets), value in zip(self.HISTOGRAMS,
                                          (duration_ms, request_bytes, response_bytes),
                                          strict=True):
            series = self.histograms[name]
            if labels not in series:
                series[labels] = Histogram(buckets)
            series[labels].observe(value)

    def render(self) -> str:
        """The text, made again only after a new request: Prometheus asks every second, and
        rendering every series each time was most of an idle daemon's CPU."""
        if self._text is None or self._text[0] != self._recorded:
            self._text = (self._recorded, self._render())
        return self._text[1]

    def _render(self) -> str:
        lines = ["# HELP istio_requests_total Total requests.",
                 "# TYPE istio_requests_total counter"]
        lines += [f"istio_requests_total{_labels_text(labels)} {count}"
                  for labels, count in self.requests.items()]
        for name, buckets in self.HISTOGRAMS:
            lines += [f"# HELP {name} {name.replace('_', ' ')}.", f"# TYPE {name} histogram"]
            for labels, hist in self.histograms[name].items():
                cumulative = 0
                for bound, count in zip(buckets, hist.counts, strict=True):
                    cumulative += count
                    le = 'le="' + _number(bound) + '"'
                    lines.append(f"{name}_bucket{_labels_text(labels, le)} {cumulative}")
                lines.append(f"{name}_bucket{_labels_text(labels, INF)} {hist.count}")
                lines.append(f"{name}_sum{_labels_text(labels)} {_number(hist.total)}")
                lines.append(f"{name}_count{_labels_text(labels)} {hist.count}")
        return "\n".join(lines) + "\n"


# -- who called whom -------------------------------------------------------------------------
def _present(value: Any) -> str | None:
    """A log field's value, or None for what Envoy writes when it has none."""
    if value is None:
        return None
    text = str(value)
    return None if text in ("", "-") else text


def _number_field(line: Obj, key: str) -> float:
    try:
        return float(_present(line.get(key)) or 0)
    except ValueError:
        return 0.0


@dataclass(frozen=True)
class Workload:
    """The workload labels of one side of a request."""

    name: str = UNKNOWN
    namespace: str = UNKNOWN
    app: str = UNKNOWN
    version: str = UNKNOWN
    canonical_service: str = UNKNOWN
    canonical_revision: str = UNKNOWN

    @classmethod
    def of(cls, pod: Obj) -> Workload:
        labels = pod["metadata"].get("labels") or {}
        name = workload_name(pod)
        app = labels.get("app") or labels.get("app.kubernetes.io/name") or UNKNOWN
        version = labels.get("version") or labels.get("app.kubernetes.io/version") or UNKNOWN
        return cls(name, pod["metadata"].get("namespace", ""), app, version,
                   labels.get("service.istio.io/canonical-name") or (
                       app if app != UNKNOWN else name),
                   labels.get("service.istio.io/canonical-revision") or (
                       version if version != UNKNOWN else "latest"))


@dataclass(frozen=True)
class Destination:
    """The service a request was for: its FQDN, name and namespace."""

    service: str = UNKNOWN
    name: str = UNKNOWN
    namespace: str = UNKNOWN

    @classmethod
    def of_host(cls, host: str) -> Destination:
        parts = host.split(".")
        if len(parts) == 5 and parts[2] == "svc":
            return cls(host, parts[0], parts[1])
        return cls(host, host, UNKNOWN)


class MeshDirectory:
    """The lookups that turn a log line into labels, from one mesh snapshot."""

    def __init__(self, state: KubeState | None = None) -> None:
        self.state = state or KubeState()
        self.pods = {(p["metadata"].get("namespace", ""), p["metadata"]["name"]): p
                     for p in self.state.pods}
        self.by_host_port: dict[int, Obj] = {}
        self.by_identity: dict[str, list[Obj]] = {}
        self.labels: dict[tuple[object, ...], LabelValues] = {}  # see LABEL_MEMORY
        self._workloads: dict[tuple[str, str], Workload] = {}
        for pod in self.state.pods:
            for port in host_ports(pod).values():
                self.by_host_port[port] = pod
            self.by_identity.setdefault(pod_spiffe_id(pod), []).append(pod)

    def workload_of(self, pod: Obj) -> Workload:
        """`Workload.of(pod)`, worked out once per pod of this snapshot."""
        meta = pod["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        found = self._workloads.get(key)
        if found is None:
            found = self._workloads[key] = Workload.of(pod)
        return found

    def pod_at(self, upstream_host: str | None) -> Obj | None:
        if not upstream_host or ":" not in upstream_host:
            return None
        try:
            return self.by_host_port.get(int(upstream_host.rsplit(":", 1)[1]))
        except ValueError:
            return None

    def workload_with(self, identity: str) -> tuple[Workload | None, bool]:
        """The one workload running as `identity`; (None, True) when several do."""
        workloads = {Workload.of(p) for p in self.by_identity.get(identity, [])
                     if not p["metadata"].get("deletionTimestamp")} or {
            Workload.of(p) for p in self.by_identity.get(identity, [])}
        if len(workloads) == 1:
            return next(iter(workloads)), False
        return None, len(workloads) > 1

    def service_for_authority(self, authority: str | None, namespace: str) -> Destination:
        if not authority:
            return Destination()
        host = authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority
        svc = self.state.service_for_host(host, namespace)
        if svc is None:
            return Destination.of_host(host)
        meta = svc["metadata"]
        return Destination(f"{meta['name']}.{meta.get('namespace', '')}.svc.cluster.local",
                           meta["name"], meta.get("namespace", ""))


def destination_of_cluster(cluster: str | None) -> Destination | None:
    """`outbound|9080|v1|reviews.default.svc.cluster.local` -> that service."""
    parts = (cluster or "").split("|")
    if len(parts) == 4 and parts[0] == "outbound" and parts[3]:
        return Destination.of_host(parts[3])
    return None


class RequestClassifier:
    """Turns access log lines into Istio metric labels."""

    def __init__(self) -> None:
        self.directory = MeshDirectory()
        # (request id, destination pod) -> calling pod, from the callers' outbound lines
        self._callers: OrderedDict[tuple[str, tuple[str, str]], tuple[str, str]] = OrderedDict()

    def remember_caller(self, line: Obj) -> None:
        request_id = _present(line.get("request_id"))
        target = self.directory.pod_at(_present(line.get("upstream_host")))
        if request_id is None or target is None:
            return
        meta = target["metadata"]
        self._callers[(request_id, (meta.get("namespace", ""), meta["name"]))] = (
            str(line.get("namespace", "")), str(line.get("pod", "")))
        while len(self._callers) > CORRELATION_MEMORY:
            self._callers.popitem(last=False)

    def labels(self, line: Obj, *, final: bool) -> LabelValues | None:
        """The labels of one request; None while an inbound caller may still be learned from
        its own sidecar's line (never when `final`). Remembered per kind of request for the
        current mesh snapshot (LABEL_MEMORY)."""
        caller: Workload | None = None
        if line.get("direction") == "outbound":
            fields = OUTBOUND_KEY
        else:
            fields = INBOUND_KEY
            own_key = (str(line.get("namespace", "")), str(line.get("pod", "")))
            caller = self._caller(line, own_key, _present(line.get("downstream_peer_uri_san")))
            if caller is None and not final:
                return None
        key = (caller, *map(line.get, fields))
        memo = self.directory.labels
        try:
            found = memo.get(key)
        except TypeError:  # a field that is not a JSON scalar: nothing to remember it by
            return self._labels(line, caller)
        if found is None:
            if len(memo) >= LABEL_MEMORY:
                memo.clear()
            found = memo[key] = self._labels(line, caller)
        return found

    def _labels(self, line: Obj, caller: Workload | None) -> LabelValues:
        """The labels of one request whose inbound `caller` was looked for (None: unknown)."""
        own_key = (str(line.get("namespace", "")), str(line.get("pod", "")))
        own_pod = self.directory.pods.get(own_key)
        own = Workload.of(own_pod) if own_pod is not None else Workload(
            str(line.get("workload") or UNKNOWN), own_key[0])
        own_principal = str(line.get("principal") or UNKNOWN)
        if line.get("direction") == "outbound":
            peer_principal = _present(line.get("upstream_peer_uri_san"))
            mtls = peer_principal is not None or _present(
                line.get("upstream_tls_version")) is not None
            target = self.directory.pod_at(_present(line.get("upstream_host")))
            destination = destination_of_cluster(_present(line.get("upstream_cluster"))) or (
                self.directory.service_for_authority(_present(line.get("authority")), own_key[0]))
            return _label_values(
                "source", own, own_principal if mtls else UNKNOWN,
                Workload.of(target) if target is not None else Workload(),
                peer_principal or UNKNOWN, destination, line, mtls)
        peer_principal = _present(line.get("downstream_peer_uri_san"))
        mtls = _present(line.get("connection_security")) is not None
        source = caller or Workload()
        namespace = source.namespace if source.namespace != UNKNOWN else own_key[0]
        destination = self.directory.service_for_authority(
            _present(line.get("authority")), namespace)
        return _label_values("destination", source, peer_principal or UNKNOWN, own,
                             own_principal if mtls else UNKNOWN, destination, line, mtls)

    def _caller(self, line: Obj, own_key: tuple[str, str],
                peer_principal: str | None) -> Workload | None:
        request_id = _present(line.get("request_id"))
        if request_id is not None:
            caller_key = self._callers.get((request_id, own_key))
            caller = self.directory.pods.get(caller_key) if caller_key else None
            if caller is not None:
                return self.directory.workload_of(caller)
        if peer_principal is None:  # a plaintext caller: no identity, as in Istio
            return Workload()
        workload, ambiguous = self.directory.workload_with(peer_principal)
        if workload is not None:
            return workload
        return None if ambiguous else Workload()


def _label_values(reporter: str, source: Workload, source_principal: str,
                  destination: Workload, destination_principal: str, service: Destination,
                  line: Obj, mtls: bool) -> LabelValues:
    protocol = "grpc" if str(line.get("content_type") or "").startswith(
        "application/grpc") else "http"
    return (
        reporter, source.name, source.canonical_service, source.canonical_revision,
        source.namespace, source_principal, source.app, source.version, CLUSTER_NAME,
        destination.name, destination.namespace, destination_principal, destination.app,
        destination.version, service.service, destination.canonical_service,
        destination.canonical_revision, service.name, service.namespace, CLUSTER_NAME,
        protocol, str(_present(line.get("response_code")) or "0"), "",
        _present(line.get("response_flags")) or "-", _security_policy(reporter, mtls),
    )


def _security_policy(reporter: str, mtls: bool) -> str:
    """Istio's standard metrics (istio.io reference/config/metrics): `mutual_tls` or `none`
    when the destination reports; `unknown` from the source, which cannot tell."""
    if reporter != "destination":
        return UNKNOWN
    return "mutual_tls" if mtls else "none"


# -- tailing the access logs -----------------------------------------------------------------
@dataclass
class _Position:
    inode: int
    offset: int = 0
    partial: bytes = b""


class LogTailer:
    """Reads what was appended to a set of files since the last call; starts a file over when
    it is truncated or replaced (a new inode)."""

    def __init__(self) -> None:
        self._positions: dict[Path, _Position] = {}

    def read(self, paths: list[Path]) -> list[tuple[Path, str]]:
        found: list[tuple[Path, str]] = []
        for path in paths:
            found += [(path, line) for line in self._read_one(path)]
        for gone in self._positions.keys() - set(paths):
            del self._positions[gone]
        return found

    def _read_one(self, path: Path) -> list[str]:
        pos = self._positions.get(path)
        if pos is not None:  # one stat() for a file that did not grow, the common case
            try:
                stat = os.stat(path)
            except OSError:
                stat = None
            if stat is not None and stat.st_ino == pos.inode and stat.st_size == pos.offset:
                return []
        try:
            with path.open("rb") as handle:
                stat = os.fstat(handle.fileno())
                pos = self._positions.get(path)
                if pos is None or pos.inode != stat.st_ino or stat.st_size < pos.offset:
                    pos = self._positions[path] = _Position(stat.st_ino)
                if stat.st_size == pos.offset:
                    return []
                handle.seek(pos.offset)
                data = handle.read()
        except OSError:
            self._positions.pop(path, None)
            return []
        pos.offset += len(data)
        *complete, pos.partial = (pos.partial + data).split(b"\n")
        return [line.decode("utf-8", "replace") for line in complete if line.strip()]


def sidecar_logs(pods_dir: Path, container: str = SIDECAR_CONTAINER) -> list[Path]:
    """Every proxy's JSON access log under the runtime's pod directories (Istio's sidecars by
    default)."""
    return sorted(pods_dir.glob(f"*/{container}/{TELEMETRY_LOG}"))


class ProxyMetrics(Protocol):
    """A mesh's per-proxy metrics, counted from its proxies' JSON access logs."""

    container: str  # whose `<pod dir>/<container>/telemetry.log` holds the lines

    def ingest(self, pod_dir: str, lines: list[Obj]) -> None: ...

    async def render(self, pod_dir: str) -> str | None:
        """The proxy's metrics text, None for a pod it does not know."""


# -- spans -----------------------------------------------------------------------------------
class SpanError(ValueError):
    """A POSTed body that is not a Zipkin v2 span list."""


def _service_names(span: Obj) -> set[str]:
    names = set()
    for key in ("localEndpoint", "remoteEndpoint"):
        endpoint = span.get(key)
        if isinstance(endpoint, dict) and endpoint.get("serviceName"):
            names.add(str(endpoint["serviceName"]).lower())
    return names


class SpanStore:
    """The most recent spans (bounded), indexed by trace id."""

    def __init__(self, limit: int = SPAN_LIMIT) -> None:
        self._spans: deque[Obj] = deque()
        self._limit = limit
        self._traces: dict[str, list[Obj]] = {}

    def add(self, body: Any) -> int:
        if not isinstance(body, list):
            raise SpanError("expected a JSON list of Zipkin v2 spans, e.g. "
                            '[{"traceId": "...", "id": "...", "name": "..."}]')
        for index, span in enumerate(body):
            if not isinstance(span, dict) or not span.get("traceId") or not span.get("id"):
                raise SpanError(f"span {index} has no traceId or id: each span needs both "
                                "(lower-case hex)")
        for span in body:
            span["traceId"] = str(span["traceId"]).lower()
            self._spans.append(span)
            self._traces.setdefault(span["traceId"], []).append(span)
        while len(self._spans) > self._limit:
            old = self._spans.popleft()
            trace = self._traces[old["traceId"]]
            trace.remove(old)
            if not trace:
                del self._traces[old["traceId"]]
        return len(body)

    def trace(self, trace_id: str) -> list[Obj]:
        return list(self._traces.get(trace_id.lower(), []))

    def traces(self, service: str | None = None, span_name: str | None = None, limit: int = 10,
               min_duration: int | None = None, end_ts_ms: int | None = None,
               lookback_ms: int | None = None) -> list[list[Obj]]:
        """Traces with a span matching every filter, the most recent first."""
        end_us = (end_ts_ms if end_ts_ms is not None else int(time.time() * 1000)) * 1000
        start_us = end_us - (lookback_ms if lookback_ms is not None else 86_400_000) * 1000

        def matches(span: Obj) -> bool:
            stamp = int(span.get("timestamp") or 0)
            return ((service is None or service.lower() in _service_names(span))
                    and (span_name is None or str(span.get("name", "")).lower()
                         == span_name.lower())
                    and (min_duration is None or int(span.get("duration") or 0) >= min_duration)
                    and (stamp == 0 or start_us <= stamp <= end_us))

        found = [spans for spans in self._traces.values() if any(map(matches, spans))]
        found.sort(key=lambda spans: max(int(s.get("timestamp") or 0) for s in spans),
                   reverse=True)
        return [list(spans) for spans in found[:limit]]

    def services(self) -> list[str]:
        return sorted({name for span in self._spans for name in _service_names(span)})

    def span_names(self, service: str) -> list[str]:
        return sorted({str(span.get("name", "")).lower() for span in self._spans
                       if service.lower() in _service_names(span) and span.get("name")})


# -- the server --------------------------------------------------------------------------------
class TelemetryServer:
    """`/metrics` and the Zipkin API on 127.0.0.1:`port`; tails the sidecars' access logs."""

    def __init__(self, state_dir: Path, port: int, *, poll_interval: float = POLL_INTERVAL,
                 span_limit: int = SPAN_LIMIT) -> None:
        self.pods_dir = pods_dir(state_dir)
        self.port = port
        self.poll_interval = poll_interval
        self.metrics = IstioMetrics()
        self.spans = SpanStore(span_limit)
        self.classifier = RequestClassifier()
        self._tailer = LogTailer()
        self._reading = asyncio.Lock()
        self._pending: list[tuple[float, Obj]] = []  # inbound lines waiting for their caller
        self._runner: web.AppRunner | None = None
        self._poller: asyncio.Task[None] | None = None
        self._proxy_metrics: list[ProxyMetrics] = []
        self._taps: set[asyncio.Queue[Obj]] = set()

    def add_proxy_metrics(self, metrics: ProxyMetrics) -> None:
        self._proxy_metrics.append(metrics)

    def update_state(self, state: KubeState) -> None:
        """Take a new mesh snapshot (a control-plane observer)."""
        self.classifier.directory = MeshDirectory(state)

    # -- ingesting ----------------------------------------------------------------------------
    def ingest(self, lines: list[Obj]) -> None:
        """Count requests: callers' outbound lines first, so inbound lines find their caller."""
        now = time.monotonic()
        for line in lines:
            if line.get("direction") == "outbound":
                self.classifier.remember_caller(line)
        waiting, self._pending = self._pending, []
        for deadline, line in [*waiting, *((now + CORRELATION_WAIT, ln) for ln in lines)]:
            labels = self.classifier.labels(line, final=now >= deadline)
            if labels is None:
                self._pending.append((deadline, line))
                continue
            self.metrics.record(labels, _number_field(line, "duration"),
                                _number_field(line, "bytes_received"),
                                _number_field(line, "bytes_sent"))

    async def collect(self) -> int:
        """Read and count what the sidecars logged since the last call."""
        owners = {m.container: m for m in self._proxy_metrics}
        async with self._reading:  # one reader at a time: the tailer keeps file offsets
            found = await asyncio.to_thread(lambda: self._tailer.read(
                [p for c in (SIDECAR_CONTAINER, *owners) for p in sidecar_logs(self.pods_dir, c)]))
        lines: list[Obj] = []
        theirs: dict[tuple[str, str], list[Obj]] = {}  # (container, pod dir) -> lines
        for path, text in found:
            try:
                line = json.loads(text)
            except ValueError:
                log.debug("skipping a line of %s that is not JSON: %.80s", path, text)
                continue
            if not isinstance(line, dict):
                continue
            container = path.parent.name
            if container == SIDECAR_CONTAINER:
                lines.append(line)
            else:
                theirs.setdefault((container, path.parent.parent.name), []).append(line)
        if lines or self._pending:
            self.ingest(lines)
        for (container, pod_dir), batch in theirs.items():
            owners[container].ingest(pod_dir, batch)
            for queue in self._taps:
                for line in batch:
                    with contextlib.suppress(asyncio.QueueFull):
                        queue.put_nowait({**line, "pod_dir": pod_dir})
        return len(lines) + sum(map(len, theirs.values()))

    async def _poll(self) -> None:
        """Every `poll_interval` while requests flow, backing off to `IDLE_POLL_INTERVAL`
        (doubling) while none do."""
        delay = self.poll_interval
        while True:
            try:
                busy = await self.collect() > 0 or bool(self._pending)
            except Exception:
                log.exception("reading the sidecars' access logs failed")
                busy = False
            delay = self.poll_interval if busy else min(
                delay * 2, max(IDLE_POLL_INTERVAL, self.poll_interval))
            await asyncio.sleep(delay)

    # -- HTTP ---------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/proxies/{pod_dir}/metrics", self._proxy_metrics_text)
        app.router.add_get("/proxies/tap", self._tap)
        app.router.add_post("/api/v2/spans", self._post_spans)
        app.router.add_get("/api/v2/spans", self._span_names)
        app.router.add_get("/api/v2/traces", self._traces)
        app.router.add_get("/api/v2/trace/{trace_id}", self._trace)
        app.router.add_get("/api/v2/services", self._services)
        return app

    async def _metrics(self, request: web.Request) -> web.Response:
        """Reads the logs first: the answer counts every request the sidecars have written,
        however far the idle poll has backed off."""
        try:
            await self.collect()
        except Exception:
            log.exception("reading the sidecars' access logs failed")
        return web.Response(text=self.metrics.render(),
                            content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Version": "0.0.4"})

    async def _proxy_metrics_text(self, request: web.Request) -> web.Response:
        """One proxy's own metrics (what its admin `/metrics` serves), logs read first."""
        try:
            await self.collect()
        except Exception:
            log.exception("reading the proxies' access logs failed")
        pod_dir = request.match_info["pod_dir"]
        for metrics in self._proxy_metrics:
            text = await metrics.render(pod_dir)
            if text is not None:
                return web.Response(text=text, content_type="text/plain", charset="utf-8",
                                    headers={"X-Content-Type-Version": "0.0.4"})
        return web.Response(status=404, text=f"no proxy metrics for pod folder {pod_dir}\n")

    async def _tap(self, request: web.Request) -> web.StreamResponse:
        """Stream the lines the named pods' proxies write from now on, until the client goes."""
        wanted = {p for p in request.query.get("pods", "").split(",") if p}
        queue: asyncio.Queue[Obj] = asyncio.Queue(TAP_QUEUE)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        with contextlib.suppress(Exception):
            await self.collect()  # what was logged before the tap started is not shown
        self._taps.add(queue)
        try:
            while True:
                try:
                    await self.collect()
                except Exception:
                    log.exception("reading the proxies' access logs failed")
                out = []
                while not queue.empty():
                    line = queue.get_nowait()
                    if line["pod_dir"] in wanted:
                        out.append(json.dumps(line) + "\n")
                await response.write("".join(out).encode() or b"\n")  # a blank line: alive?
                await asyncio.sleep(TAP_INTERVAL)
        except ConnectionResetError:  # the client went
            return response
        finally:
            self._taps.discard(queue)

    async def _post_spans(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
            self.spans.add(body)
        except (ValueError, SpanError) as exc:
            return web.Response(status=400, text=f"spans not accepted: {exc}\n")
        return web.Response(status=202)

    async def _traces(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            limit = int(query.get("limit", "10"))
            min_duration = int(query["minDuration"]) if "minDuration" in query else None
            end_ts = int(query["endTs"]) if "endTs" in query else None
            lookback = int(query["lookback"]) if "lookback" in query else None
        except ValueError:
            return web.Response(status=400, text="limit, minDuration, endTs and lookback "
                                "must be integers\n")
        return web.json_response(self.spans.traces(
            query.get("serviceName") or None, query.get("spanName") or None, limit,
            min_duration, end_ts, lookback))

    async def _trace(self, request: web.Request) -> web.Response:
        spans = self.spans.trace(request.match_info["trace_id"])
        if not spans:
            return web.Response(status=404,
                                text=f"trace {request.match_info['trace_id']} not found\n")
        return web.json_response(spans)

    async def _services(self, request: web.Request) -> web.Response:
        return web.json_response(self.spans.services())

    async def _span_names(self, request: web.Request) -> web.Response:
        service = request.query.get("serviceName")
        if not service:
            return web.Response(status=400, text="serviceName is required\n")
        return web.json_response(self.spans.span_names(service))

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()
        self._poller = asyncio.create_task(self._poll(), name="telemetry-logs")

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
