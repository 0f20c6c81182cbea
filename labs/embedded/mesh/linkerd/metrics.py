"""linkerd2-proxy's HTTP metrics, per proxy, as its admin `/metrics` serves them.

Envoy has no Linkerd metrics, so each `linkerd-proxy` writes one JSON line per request
(xds.py) and the daemon's telemetry server hands them here (a `ProxyMetrics`, see
mesh/telemetry.py); the proxy's `/metrics` route reads the result back. Families, help texts,
label names and order, and the latency buckets follow linkerd2-proxy
(`linkerd/http/metrics/src/requests/report.rs`, `linkerd/metrics/src/latency.rs`,
`linkerd/app/core/src/metrics.rs`, `linkerd/app/core/src/transport/labels.rs`):
`request_total`, `response_latency_ms` and `response_total`, with `direction`, `authority`
(outbound only, as by default), `target_addr`/`target_ip`/`target_port`, `tls` with
`server_id`/`client_id` or `no_tls_reason`, the destination controller's `dst_*` labels on
outbound, the policy decision's `srv_*`/`route_*`/`authz_*` labels on inbound (policy.py;
an unauthorized request has empty `authz_*`), and
`status_code`, `classification`, `grpc_status`, `error` on responses (5xx is a failure; a gRPC
response is one unless its grpc-status is OK).
`tcp_open_connections` (`linkerd/transport-metrics`) is given for the outbound side
(`peer="dst"`, per endpoint, the labels of `OutboundEndpointLabels`), read at each scrape from
the Envoy's own per-host `cx_active` (its admin `/clusters?format=json`), for every endpoint it
has connected to. Not emulated: inbound `tcp_open_connections` (Envoy counts connections per
listener, not per client identity), the other TCP families (`tcp_open_total`,
`tcp_read_bytes_total`, ...), the route-level families and `inbound_tcp_authz_*`, the `error`
label of proxy errors (always ""), and the `dst_zone` of a node (always "", locality
"unknown").
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ...workload import (
    LINKERD_PROXY_CONTAINER,
    has_linkerd_proxy,
    host_ports,
    pod_dir_name,
    proxy_ports,
    workload_name,
)
from ..envoy import ADDRESS
from ..kube_state import service_account
from .identity import pod_identity_name
from .policy import DENIED_DETAILS, parse_authz, parse_route
from .state import LinkerdState

log = logging.getLogger(__name__)
ADMIN_TIMEOUT = 1.0  # seconds for the Envoy admin's /clusters at a scrape

Obj = dict[str, Any]
Labels = tuple[tuple[str, str], ...]
BOUNDS = (1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000, 3000, 4000,
          5000, 10000, 20000, 30000, 40000, 50000)  # ms, linkerd/metrics/src/latency.rs
HELP = {
    "request_total": "Total count of HTTP requests.",
    "response_latency_ms": "Elapsed times between a request's headers being received and its "
                           "response stream completing",
    "response_total": "Total count of HTTP responses.",
    "tcp_open_connections": "Number of currently-open connections",
    # linkerd2-proxy `linkerd/app/inbound/src/metrics/authz.rs`
    "inbound_http_authz_allow_total": "The total number of inbound HTTP requests that were "
                                      "authorized",
    "inbound_http_authz_deny_total": "The total number of inbound HTTP requests that could not "
                                     "be authorized",
}
CONTROL_PLANE_NS_LABEL = "linkerd.io/control-plane-ns"


def _absent(value: Any) -> bool:
    return value is None or value in ("", "-")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _text(labels: Labels) -> str:
    return ",".join(f'{name}="{_escape(value)}"' for name, value in labels)


def _target(address: str) -> Labels:
    ip, _, port = address.rpartition(":")
    return (("target_addr", address), ("target_ip", ip), ("target_port", port))


def _owner_label(pod: Obj) -> tuple[str, str] | None:
    """`deployment` for a ReplicaSet's pod, else the owner's kind lower-cased (the destination
    controller's `dst_<kind>`)."""
    for ref in pod["metadata"].get("ownerReferences") or []:
        if ref.get("kind") == "ReplicaSet":
            return ("deployment", workload_name(pod))
        if ref.get("kind"):
            return (str(ref["kind"]).lower(), str(ref.get("name", "")))
    return None


def _help(family: str, kind: str) -> list[str]:
    return [f"# HELP {family} {HELP[family]}", f"# TYPE {family} {kind}"]


def outbound_labels(authority: str, target_addr: str, pod: Obj | None, tls: bool) -> Labels:
    """`OutboundEndpointLabels`: authority, target, the client side of TLS (the server's
    identity, or why there is none), then the destination's labels."""
    if tls and pod is not None:
        tls_labels: Labels = (("tls", "true"), ("server_id", pod_identity_name(pod)))
    else:
        tls_labels = (("tls", "no_identity"),
                      ("no_tls_reason", "not_provided_by_service_discovery"))
    return (("authority", authority), *_target(target_addr), *tls_labels,
            *dst_labels(pod, authority))


def dst_labels(pod: Obj | None, authority: str) -> Labels:
    """What linkerd2 `controller/api/destination/endpoint_translator.go` tells the client
    proxy about an endpoint, as `dst_*` labels."""
    service = authority.split(".", 1)[0] if authority else ""
    if pod is None:
        return (("dst_service", service),) if service else ()
    meta = pod["metadata"]
    labels = meta.get("labels") or {}
    found: dict[str, str] = {}
    if labels.get(CONTROL_PLANE_NS_LABEL):
        found["control_plane_ns"] = labels[CONTROL_PLANE_NS_LABEL]
    if owner := _owner_label(pod):
        found[owner[0]] = owner[1]
    found["namespace"] = meta.get("namespace", "")
    found["pod"] = meta["name"]
    if labels.get("pod-template-hash"):
        found["pod_template_hash"] = labels["pod-template-hash"]
    if service:
        found["service"] = service
    found["serviceaccount"] = service_account(pod)
    found.update(zone="", zone_locality="unknown")
    return tuple((f"dst_{k}", v) for k, v in sorted(found.items()))


@dataclass
class _Latency:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BOUNDS) + 1))
    total: float = 0.0


@dataclass
class ProxyCounters:
    """One proxy's counters, by label set."""

    requests: dict[Labels, int] = field(default_factory=dict)
    responses: dict[Labels, int] = field(default_factory=dict)  # prefix + status + class
    latency: dict[Labels, _Latency] = field(default_factory=dict)  # prefix + status
    authz_allow: dict[Labels, int] = field(default_factory=dict)
    authz_deny: dict[Labels, int] = field(default_factory=dict)

    def record(self, prefix: Labels, status: str, duration_ms: float,
               grpc_status: str = "") -> None:
        """One response. A gRPC response (a `grpc-status`) is classified by it, as
        linkerd2-proxy's default gRPC classifier does: a failure unless OK (0), whatever the
        HTTP status; an HTTP response by its status (5xx: failure)."""
        self.requests[prefix] = self.requests.get(prefix, 0) + 1
        with_status = (*prefix, ("status_code", status))
        grpc = grpc_status if grpc_status.isdigit() else ""
        failure = int(grpc) != 0 if grpc else status.isdigit() and int(status) >= 500
        response = (*with_status, ("classification", "failure" if failure else "success"),
                    ("grpc_status", grpc), ("error", ""))
        self.responses[response] = self.responses.get(response, 0) + 1
        latency = self.latency.setdefault(with_status, _Latency())
        latency.counts[bisect_left(BOUNDS, duration_ms)] += 1
        latency.total += duration_ms

    def render(self) -> list[str]:
        out = _help("request_total", "counter")
        out += [f"request_total{{{_text(k)}}} {v}" for k, v in self.requests.items()]
        out += _help("response_latency_ms", "histogram")
        for labels, latency in self.latency.items():
            text, cumulative = _text(labels), 0
            for bound, count in zip((*BOUNDS, "+Inf"), latency.counts, strict=True):
                cumulative += count
                out.append(f'response_latency_ms_bucket{{{text},le="{bound}"}} {cumulative}')
            out.append(f"response_latency_ms_sum{{{text}}} {latency.total:g}")
            out.append(f"response_latency_ms_count{{{text}}} {cumulative}")
        out += _help("response_total", "counter")
        out += [f"response_total{{{_text(k)}}} {v}" for k, v in self.responses.items()]
        for family, counts in (("inbound_http_authz_allow_total", self.authz_allow),
                               ("inbound_http_authz_deny_total", self.authz_deny)):
            out += _help(family, "counter")
            out += [f"{family}{{{_text(k)}}} {v}" for k, v in counts.items()]
        return out


def _inbound_tls(line: Obj) -> Labels:
    if _absent(line.get("tls")):
        return (("tls", "no_identity"), ("no_tls_reason", "no_tls_from_remote"))
    return (("tls", "true"), ("client_id", str(line.get("client_id") or "")))


def _meta_labels(prefix: str, meta: tuple[str, str, str] | None) -> Labels:
    group, kind, name = meta or ("", "", "")
    return ((f"{prefix}_group", group), (f"{prefix}_kind", kind), (f"{prefix}_name", name))


def _decision(line: Obj) -> tuple[Labels, Labels, Labels, Labels]:
    """An inbound line's target, `srv_*` (with `srv_port`), `route_*` and `authz_*` labels
    (the inbound HCM's fields, xds.py)."""
    port = str(line.get("port", ""))
    server, route = parse_route(line.get("route")) or (None, None)
    return (_target(f"{ADDRESS}:{port}"), (*_meta_labels("srv", server), ("srv_port", port)),
            _meta_labels("route", route), _meta_labels("authz", parse_authz(line.get("authz"))))


def _count_authz(counters: ProxyCounters, line: Obj) -> None:
    """`inbound_http_authz_allow_total` for an authorized request, `..._deny_total` for one
    Envoy's RBAC refused (a request no route matched is neither)."""
    target, server, route, authz = _decision(line)
    tls = _inbound_tls(line)
    if parse_authz(line.get("authz")) is not None:
        key = (*target, *server, *route, *authz, *tls)
        counters.authz_allow[key] = counters.authz_allow.get(key, 0) + 1
    elif str(line.get("details") or "").startswith(DENIED_DETAILS):
        key = (*target, *server, *route, *tls)
        counters.authz_deny[key] = counters.authz_deny.get(key, 0) + 1


class LinkerdMetrics:
    """Every Linkerd proxy's counters, by pod folder (a `ProxyMetrics` of the telemetry
    server); `update_state` (a Linkerd control-plane observer) gives it the pods to name
    destinations by."""

    container = LINKERD_PROXY_CONTAINER

    def __init__(self) -> None:
        self._proxies: dict[str, ProxyCounters] = {}
        self._known: dict[str, Obj] = {}  # pod folder -> pod, of the running Linkerd proxies
        self._by_host_port: dict[int, Obj] = {}

    def update_state(self, state: LinkerdState) -> None:
        """Take a new snapshot; the counters of proxies that are gone go with them."""
        self._by_host_port = {port: pod for pod in state.pods
                              for port in host_ports(pod).values()}
        self._known = {pod_dir_name(pod): pod for pod in state.proxy_pods()}
        for gone in self._proxies.keys() - self._known:
            del self._proxies[gone]

    def ingest(self, pod_dir: str, lines: list[Obj]) -> None:
        counters = self._proxies.setdefault(pod_dir, ProxyCounters())
        for line in lines:
            prefix = self._prefix(line)
            if prefix is None:
                continue
            try:
                duration = float(line.get("duration") or 0)
            except (TypeError, ValueError):
                duration = 0.0
            counters.record(prefix, str(line.get("response_code") or "0"), duration,
                            str(line.get("grpc_status") or ""))
            if line.get("direction") == "inbound":
                _count_authz(counters, line)

    async def render(self, pod_dir: str) -> str | None:
        """The proxy's families (headers only for what it has not served yet); None for a pod
        that is no running Linkerd proxy."""
        pod = self._known.get(pod_dir)
        if pod is None:
            return None
        out = self._proxies.get(pod_dir, ProxyCounters()).render()
        out += _help("tcp_open_connections", "gauge")
        out += [f"tcp_open_connections{{{_text(k)}}} {v}"
                for k, v in (await self._open_connections(pod)).items()]
        return "\n".join(out) + "\n"

    async def _open_connections(self, pod: Obj) -> dict[Labels, int]:
        """Open connections per endpoint the proxy has dialed, from its Envoy's admin."""
        admin = proxy_ports(pod).get("admin")
        if not admin:
            return {}
        url = f"http://{ADDRESS}:{admin}/clusters?format=json"
        timeout = aiohttp.ClientTimeout(total=ADMIN_TIMEOUT)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(
                    url) as response:
                clusters = (await response.json()).get("cluster_statuses") or []
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.debug("no connection counts from %s: %r", pod["metadata"]["name"], exc)
            return {}
        found: dict[Labels, int] = {}
        for cluster in clusters:
            authority = str(cluster.get("name", ""))
            if ".svc." not in authority:  # inbound|<port>, telemetry: not an endpoint dialed
                continue
            for host in cluster.get("host_statuses") or []:
                stats = {s.get("name"): int(s.get("value", 0))
                         for s in host.get("stats") or []}
                if not stats.get("cx_total"):
                    continue
                address = host.get("address", {}).get("socket_address", {})
                target = f"{address.get('address')}:{address.get('port_value')}"
                endpoint = self._pod_at(target)
                meshed = endpoint is not None and has_linkerd_proxy(endpoint)
                labels = (("direction", "outbound"), ("peer", "dst"),
                          *outbound_labels(authority, target, endpoint, meshed))
                found[labels] = stats.get("cx_active", 0)
        return found

    def _prefix(self, line: Obj) -> Labels | None:
        """The labels before `status_code`; None for a line that is no proxied request (an
        outbound request for no known Service)."""
        if line.get("direction") == "inbound":
            target, server, route, authz = _decision(line)
            return (("direction", "inbound"), *target, *_inbound_tls(line), *server, *route,
                    *authz)
        authority, host = line.get("authority"), line.get("upstream_host")
        if _absent(authority) or _absent(host):
            return None
        return (("direction", "outbound"), *outbound_labels(
            str(authority), str(host), self._pod_at(str(host)), not _absent(line.get("tls"))))

    def _pod_at(self, address: str) -> Obj | None:
        try:
            return self._by_host_port.get(int(address.rsplit(":", 1)[1]))
        except (IndexError, ValueError):
            return None

