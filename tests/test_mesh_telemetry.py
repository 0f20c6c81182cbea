"""Does the embedded mesh report traffic like Istio: `istio_requests_total` and the request
duration histogram with Istio's labels at the telemetry server, the same series through the real
Prometheus' HTTP API, Istio's access log lines in `kubectl logs -c istio-proxy`, and a Zipkin trace
spanning productpage → reviews → ratings?

Real daemon, real Envoys: bookinfo, httpbin and the `curl` client run meshed in one namespace,
deployed once for the module. Metrics and spans arrive asynchronously (the collector tails the
sidecars' logs; Envoy flushes spans in batches), so every check polls until they appear.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import poll
from mesh_support import MeshNamespace, mesh_namespace_fixture

from labs.cluster import ClusterRef

Obj = dict[str, Any]
REQUESTS = 5
SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)\{(?P<labels>.*)\} (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
REVIEWS_V2 = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v2}
"""

mesh = mesh_namespace_fixture("bookinfo", "httpbin", "curl", prefix="tel")


@pytest.fixture(autouse=True)
def reset_routing(mesh: MeshNamespace) -> Iterator[None]:
    mesh.reset_routing()
    yield
    mesh.reset_routing()


def endpoint(cluster: ClusterRef, service: str) -> int:
    assert cluster.embedded is not None
    ports = cluster.embedded.paths.read_endpoint() or {}
    assert service in ports, f"endpoint.json has no {service!r} port: {ports}"
    return ports[service]


def http_get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return str(response.read().decode())


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of metric `name` in Prometheus text format: (labels, value)."""
    found = []
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match and match["name"] == name:
            found.append((dict(LABEL.findall(match["labels"])), float(match["value"])))
    return found


def requests_total(cluster: ClusterRef, **labels: str) -> dict[str, float]:
    """Sum of `istio_requests_total` matching `labels`, per reporter."""
    text = http_get(endpoint(cluster, "telemetry"), "/metrics")
    totals: dict[str, float] = {}
    for series, value in samples(text, "istio_requests_total"):
        if all(series.get(k) == v for k, v in labels.items()):
            totals[series["reporter"]] = totals.get(series["reporter"], 0) + value
    return totals


def curl_httpbin(mesh: MeshNamespace, path: str, count: int = 1) -> list[str]:
    """`count` requests from the meshed curl to httpbin in one curl (one URL per request);
    returns the status of each."""
    url = f"http://httpbin:8000{path}"
    per_request = ["-o", "/dev/null", url]  # curl's -o applies to one URL
    result = mesh.exec("curl", "curl", "-s", "-w", "%{http_code}\n", *per_request * count)
    return result.stdout.split()


def test_requests_total_has_istio_labels(cluster: ClusterRef, mesh: MeshNamespace) -> None:
    """After curl → httpbin over mTLS, are there source- and destination-reported series with
    Istio's workload, service, response code and security labels, counting every request —
    `connection_security_policy` `mutual_tls` from the destination, `unknown` from the source
    (Istio's standard metrics: only the destination knows)?"""
    labels = {"source_workload": "curl", "source_workload_namespace": mesh.name,
              "destination_workload": "httpbin", "destination_workload_namespace": mesh.name,
              "destination_service": f"httpbin.{mesh.name}.svc.cluster.local",
              "destination_service_name": "httpbin", "response_code": "200",
              "source_principal": f"spiffe://cluster.local/ns/{mesh.name}/sa/curl",
              "destination_principal": f"spiffe://cluster.local/ns/{mesh.name}/sa/httpbin"}
    policies = {"source": "unknown", "destination": "mutual_tls"}

    def totals() -> dict[str, float]:
        return {reporter: requests_total(cluster, **labels, connection_security_policy=policy)
                .get(reporter, 0) for reporter, policy in policies.items()}
    before = totals()
    assert curl_httpbin(mesh, "/get", REQUESTS) == ["200"] * REQUESTS

    def counted() -> dict[str, float] | None:
        now = totals()
        grown = {r: now[r] - before[r] for r in policies}
        return grown if all(v >= REQUESTS for v in grown.values()) else None
    poll(counted, f"{REQUESTS} requests counted by both reporters with {labels}", timeout=20)


def test_request_duration_histogram(cluster: ClusterRef, mesh: MeshNamespace) -> None:
    """Is `istio_request_duration_milliseconds` a histogram with buckets for httpbin's traffic?"""
    assert curl_httpbin(mesh, "/get") == ["200"]

    def buckets() -> list[tuple[dict[str, str], float]]:
        text = http_get(endpoint(cluster, "telemetry"), "/metrics")
        return [(s, v) for s, v in samples(text, "istio_request_duration_milliseconds_bucket")
                if s.get("destination_workload") == "httpbin"
                and s.get("destination_workload_namespace") == mesh.name]
    found = poll(buckets, "istio_request_duration_milliseconds_bucket for httpbin", timeout=20)
    assert {"+Inf", "0.5", "1", "100"} <= {s["le"] for s, _ in found}
    assert all(v >= 1 for s, v in found if s["le"] == "+Inf")


def prometheus_port(cluster: ClusterRef) -> int:
    """endpoint.json's `prometheus` (the addon pod's host port), once Prometheus is ready."""
    def ready() -> int | None:
        assert cluster.embedded is not None
        port = (cluster.embedded.paths.read_endpoint() or {}).get("prometheus")
        try:
            return port if port and http_get(port, "/-/ready") else None
        except OSError:  # the addon's pod is still starting
            return None
    return poll(ready, "the Prometheus addon (endpoint.json `prometheus`) to be ready",
                timeout=30, interval=0.2)


def test_prometheus_answers_promql(cluster: ClusterRef, mesh: MeshNamespace) -> None:
    """Does the cluster's real Prometheus (Istio's addon in istio-system) scrape the mesh
    metrics, so the course's PromQL works?"""
    if shutil.which("prometheus") is None:
        pytest.skip("no `prometheus` binary on PATH (Debian: apt-get install prometheus), so "
                    "the Prometheus addon's container cannot run")
    port = prometheus_port(cluster)
    assert curl_httpbin(mesh, "/get", REQUESTS) == ["200"] * REQUESTS
    promql = (f'sum(istio_requests_total{{destination_workload="httpbin",'
              f'destination_workload_namespace="{mesh.name}",reporter="destination"}})')

    def total() -> float | None:
        body = json.loads(http_get(port, "/api/v1/query?" + urllib.parse.urlencode(
            {"query": promql})))
        assert body["status"] == "success", body
        result = body["data"]["result"]
        value = float(result[0]["value"][1]) if result else 0.0
        return value if value >= REQUESTS else None
    poll(total, f"Prometheus to answer {promql} with >= {REQUESTS}", timeout=30, interval=0.5)


def test_access_log_in_proxy_container_log(mesh: MeshNamespace) -> None:
    """Does `kubectl logs deploy/httpbin -c istio-proxy` show Istio's text access log line for a
    request: method, path, protocol, 200, the inbound cluster?"""
    token = secrets.token_hex(6)
    assert curl_httpbin(mesh, f"/get?probe={token}") == ["200"]
    line = re.compile(r'^\[\S+\] "GET /get\?probe=' + token + r' HTTP/1\.1" 200 - via_upstream '
                      r'.*"httpbin:8000" "127\.0\.0\.1:\d+" inbound\|8080\|\| ', re.M)

    def logged() -> bool:
        return bool(line.search(mesh.kubectl("logs", "deploy/httpbin", "-c", "istio-proxy")))
    poll(logged, f"httpbin's istio-proxy log to show GET /get?probe={token} 200", timeout=20)


def spans_by_service(trace: list[Obj]) -> dict[str, list[Obj]]:
    found: dict[str, list[Obj]] = {}
    for span in trace:
        name = (span.get("localEndpoint") or {}).get("serviceName", "")
        found.setdefault(name, []).append(span)
    return found


def ancestors(span: Obj, by_id: dict[str, Obj]) -> list[Obj]:
    chain = []
    while span.get("parentId") in by_id and len(chain) < len(by_id):
        span = by_id[span["parentId"]]
        chain.append(span)
    return chain


def test_trace_spans_productpage_reviews_ratings(cluster: ClusterRef,
                                                 mesh: MeshNamespace) -> None:
    """With reviews v2 (which calls ratings), does one request to /productpage give a trace,
    found under Istio's service name `productpage.<ns>`, whose ratings span descends from a
    reviews span that descends from a productpage span?"""
    mesh.apply(REVIEWS_V2)
    trace_id = secrets.token_hex(16)
    code, body = mesh.curl("http://productpage:9080/productpage",
                           "-H", f"x-b3-traceid: {trace_id}",
                           "-H", f"x-b3-spanid: {trace_id[:16]}", "-H", "x-b3-sampled: 1")
    assert code == 200, body
    port = endpoint(cluster, "telemetry")
    services = {name: f"{name}.{mesh.name}" for name in ("productpage", "reviews", "ratings")}

    def linked(trace: list[Obj]) -> bool:
        """A ratings span descends from a reviews span that descends from a productpage one."""
        by_id = {span["id"]: span for span in trace}
        for ratings_span in spans_by_service(trace).get(services["ratings"], []):
            above = [(s.get("localEndpoint") or {}).get("serviceName") for s in
                     ancestors(ratings_span, by_id)]
            if services["reviews"] in above and services["productpage"] in above:
                return above.index(services["reviews"]) < above.index(services["productpage"])
        return False

    last: list[Obj] = []

    def our_trace() -> list[Obj] | None:
        """The whole trace: each sidecar sends its spans in its own batches, so a trace may
        name all three services before the spans that link them have arrived."""
        traces = json.loads(http_get(port, "/api/v2/traces?" + urllib.parse.urlencode(
            {"serviceName": services["productpage"], "limit": 50})))
        trace = next((t for t in traces if t and t[0]["traceId"] == trace_id), None)
        last[:] = trace or []
        return list(trace) if trace and linked(trace) else None
    try:
        poll(our_trace, f"trace {trace_id} linking ratings to reviews to productpage",
             timeout=20)
    except pytest.fail.Exception as timeout:
        pytest.fail(f"{timeout}; the collector knows the services "
                    f"{http_get(port, '/api/v2/services')}; the trace so far: {last}")
