"""Istio's Jaeger task on the embedded cluster (istio.io content/en/docs/tasks/observability/
distributed-tracing/jaeger): apply the addon (labs/manifests/jaeger.yaml), `istioctl dashboard
jaeger` prints the UI's URL, traffic to productpage makes a trace that the Jaeger query API and
the UI show with the spans of productpage, details, reviews and ratings. Jaeger's error answers
(unknown trace, bad parameters) are checked as upstream writes them (cmd/query/app/
http_handler.go, query_parser.go). The parsing and conversion are also checked without a cluster.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import poll
from mesh_support import (
    MeshNamespace,
    destination_rule,
    http_get,
    mesh_namespace_fixture,
    ready_pod,
    route,
    virtual_service,
    yaml_stream,
)

import labs
from labs.cluster import ClusterRef
from labs.duration import parse_go_duration
from labs.embedded.apps import jaeger_ui
from labs.embedded.apps.jaeger_query import (
    QueryError,
    parse_trace_query,
    to_jaeger,
    trace_id,
)
from labs.embedded.workload import host_ports
from labs.traffic import probe

ISTIOCTL = str(Path(sys.executable).parent / "istioctl")
SELECTOR = "app=jaeger"
FOOTER = "meshlab's Jaeger-compatible view, not Jaeger's React UI"

mesh = mesh_namespace_fixture("bookinfo", "curl", prefix="jgr")


def addon_pod(cluster: ClusterRef) -> dict[str, Any]:
    return ready_pod(cluster, "istio-system", SELECTOR, "the jaeger addon's pod")


@pytest.fixture(scope="module")
def addon(cluster: ClusterRef) -> Iterator[dict[str, Any]]:
    """The addon applied as the task does, removed again after the module."""
    path = labs.manifest("jaeger")
    applied = cluster.kubectl("apply", "-f", path, timeout=60)
    assert applied.returncode == 0, applied.stderr
    try:
        yield addon_pod(cluster)
    finally:
        cluster.kubectl("delete", "-f", path, "--ignore-not-found", "--timeout=60s", timeout=90)


@pytest.fixture(scope="module")
def ui(mesh: MeshNamespace, addon: dict[str, Any]) -> str:
    """The URL `istioctl dashboard jaeger --browser=false` prints."""
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith("MESHLAB_") and k != "KUBECONFIG"}
    environment["KUBECONFIG"] = str(mesh.cluster.kubeconfig)
    done = subprocess.run([ISTIOCTL, "dashboard", "jaeger", "--browser=false"],
                          capture_output=True, text=True, timeout=60, env=environment)
    assert done.returncode == 0, done.stderr
    url, _, rest = done.stdout.partition("\n")
    assert rest == "skipping opening a browser"
    port = host_ports(addon)["16686"]
    assert url == f"http://localhost:{port}"  # dashboard.go: "http://%s", no path
    return url


def api(ui: str, path: str, **params: str) -> tuple[int, Any]:
    status, body = http_get(f"{ui}{path}" + (f"?{urllib.parse.urlencode(params)}"
                                              if params else ""))
    return status, json.loads(body)


def send_traced(mesh: MeshNamespace) -> str:
    """Step 3 of the task: a request to productpage, here always sampled."""
    tid = secrets.token_hex(16)
    sent = probe("http://productpage:9080/productpage", namespace=mesh.name, n=1,
                 cluster=mesh.cluster, headers={"x-b3-traceid": tid, "x-b3-spanid": tid[:16],
                                                "x-b3-sampled": "1"})
    assert sent.fraction(200) == 1, sent
    return tid


def test_dashboard_url_serves_the_ui(ui: str) -> None:
    status, page = http_get(ui)
    assert status == 200
    assert page.startswith("<!doctype html>") and FOOTER in page
    assert "<select id=\"service\"" in page and "Find Traces" in page
    status, under_base = http_get(f"{ui}/jaeger/search")  # upstream's base_path
    assert status == 200 and FOOTER in under_base


def test_the_tasks_trace_has_every_bookinfo_service(ui: str, mesh: MeshNamespace) -> None:
    ns = mesh.name
    mesh.apply(yaml_stream(destination_rule("reviews", "v1", "v2", "v3"),
                           virtual_service("reviews", route("reviews", "v3"))))
    expected = {f"{app}.{ns}" for app in ("productpage", "details", "reviews", "ratings")}
    tid = send_traced(mesh)

    def found() -> dict[str, Any] | None:
        status, body = api(ui, "/api/traces", service=f"productpage.{ns}", limit="20",
                           lookback="1h")
        assert status == 200, body
        for trace in body["data"]:
            services = {p["serviceName"] for p in trace["processes"].values()}
            if trace["traceID"] == tid and expected <= services:
                return dict(trace)
        return None
    trace = poll(found, f"trace {tid} with spans of {sorted(expected)}", timeout=30,
                 interval=0.5)
    spans = {s["spanID"]: s for s in trace["spans"]}
    assert all(s["traceID"] == tid and s["processID"] in trace["processes"]
               for s in spans.values())
    # the first span's parent is the caller's x-b3-spanid, a span no proxy reported
    (first,) = [s for s in spans.values()
                if any(r["spanID"] not in spans for r in s["references"])]
    assert first["references"] == [{"refType": "CHILD_OF", "traceID": tid, "spanID": tid[:16]}]

    def service(span: dict[str, Any]) -> str:
        return str(trace["processes"][span["processID"]]["serviceName"])
    ratings = next(s for s in spans.values() if service(s) == f"ratings.{ns}"
                   and {"key": "span.kind", "type": "string", "value": "server"} in s["tags"])
    chain = []
    while ratings is not first:
        (ref,) = ratings["references"]
        assert ref["refType"] == "CHILD_OF" and ref["traceID"] == tid
        ratings = spans[ref["spanID"]]
        chain.append(service(ratings))
    assert chain.index(f"reviews.{ns}") < chain.index(f"productpage.{ns}")

    status, one = api(ui, f"/api/traces/{tid}")
    assert status == 200 and one["errors"] is None
    assert [t["traceID"] for t in one["data"]] == [tid]
    status, listed = api(ui, "/api/services")
    assert status == 200 and expected <= set(listed["data"])
    assert listed["total"] == len(listed["data"])

    status, page = http_get(f"{ui}/trace/{tid}")
    assert status == 200 and all(name in page for name in expected)
    status, results = http_get(f"{ui}/search?" + urllib.parse.urlencode(
        {"service": f"productpage.{ns}", "lookback": "1h"}))
    assert status == 200 and f"/trace/{tid}" in results
    assert "<circle" in results and "Longest First" in results  # Jaeger's scatter plot, sort


def test_services_reach_it_from_a_meshed_pod(ui: str, mesh: MeshNamespace) -> None:
    """The addon's Services as other programs use them: the query API on `tracing` (port 80,
    upstream's base path), spans to `zipkin:9411`."""
    status, body = mesh.curl("http://tracing.istio-system/jaeger/api/services")
    assert status == 200 and json.loads(body)["errors"] is None, body
    tid = secrets.token_hex(8)
    span = {"traceId": tid, "id": tid, "name": "from a pod", "timestamp": 1, "duration": 1,
            "localEndpoint": {"serviceName": f"curl.{mesh.name}"}}
    status, _ = mesh.curl("http://zipkin.istio-system:9411/api/v2/spans", "-X", "POST",
                          "-H", "Content-Type: application/json", "-d", json.dumps([span]))
    assert status == 202
    status, found = api(ui, f"/api/traces/{tid}")
    assert status == 200 and found["data"][0]["spans"][0]["operationName"] == "from a pod"


def test_unknown_trace_is_jaegers_404(ui: str) -> None:
    status, body = api(ui, f"/api/traces/{secrets.token_hex(16)}")
    assert (status, body) == (404, {"data": None, "total": 0, "limit": 0, "offset": 0,
                                    "errors": [{"code": 404, "msg": "trace not found"}]})


@pytest.mark.parametrize(("params", "message"), [
    ({}, "parameter 'service' is required"),
    ({"service": "productpage", "limit": "ten"},
     'strconv.ParseInt: parsing "ten": invalid syntax'),
    ({"service": "productpage", "minDuration": "5"},
     "unable to parse param 'minDuration': time: missing unit in duration \"5\""),
    ({"service": "productpage", "start": "yesterday"},
     "unable to parse param 'start': strconv.ParseInt: parsing \"yesterday\": invalid syntax"),
    ({"service": "productpage", "tag": "error"},
     "malformed 'tag' parameter, expecting key:value, received: error"),
])
def test_bad_search_parameters_are_jaegers_400(ui: str, params: dict[str, str],
                                               message: str) -> None:
    status, body = api(ui, "/api/traces", **params)
    assert (status, body) == (400, {"data": None, "total": 0, "limit": 0, "offset": 0,
                                    "errors": [{"code": 400, "msg": message}]})


def test_a_malformed_trace_id_is_a_400(ui: str) -> None:
    status, body = api(ui, "/api/traces/not-hex")
    assert status == 400
    assert body["errors"] == [{"code": 400,
                               "msg": 'strconv.ParseUint: parsing "not-hex": invalid syntax'}]


def test_spans_posted_to_the_zipkin_port_reach_the_same_storage(
        ui: str, addon: dict[str, Any]) -> None:
    service = f"posted-{secrets.token_hex(3)}"
    tid = secrets.token_hex(8)
    span = {"traceId": tid, "id": tid, "name": "get /", "kind": "SERVER",
            "timestamp": 1, "duration": 10, "localEndpoint": {"serviceName": service}}
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(
        f"http://127.0.0.1:{host_ports(addon)['9411']}/api/v2/spans",
        data=json.dumps([span]).encode(), headers={"Content-Type": "application/json"},
        method="POST")
    with opener.open(request, timeout=10) as response:
        assert response.status == 202
    status, body = api(ui, f"/api/traces/{tid}")
    assert status == 200
    (trace,) = body["data"]
    assert trace["traceID"] == tid
    assert trace["processes"] == {"p1": {"serviceName": service, "tags": []}}
    assert service in api(ui, "/api/services")[1]["data"]


# --- without a cluster: Jaeger's parsing and model ------------------------------------------

def test_go_durations_and_trace_ids_parse_as_upstream() -> None:
    assert parse_go_duration("1.5ms", "us") == 1500
    assert parse_go_duration("1h2m", "us") == 3_720_000_000
    assert parse_go_duration("0", "us") == 0 and parse_go_duration("250us", "us") == 250
    with pytest.raises(ValueError, match=r'unknown unit "d" in duration "2d"'):
        parse_go_duration("2d")
    assert trace_id("0" * 16 + "ab" * 8) == "ab" * 8  # high half zero: 16 digits
    assert trace_id("1" * 32) == "1" * 32
    with pytest.raises(ValueError, match="cannot be longer than 32 hex characters"):
        trace_id("1" * 33)


def test_query_defaults_and_duration_order() -> None:
    query = parse_trace_query({"service": ["a"]}, now_us=10**15)
    assert (query.limit, query.end_us) == (100, 10**15)
    assert query.start_us == 10**15 - 2 * 24 * 3600 * 10**6
    with pytest.raises(QueryError, match="'maxDuration' should be greater than 'minDuration'"):
        parse_trace_query({"service": ["a"], "minDuration": ["2s"], "maxDuration": ["1s"]})
    tagged = parse_trace_query({"service": ["a"], "tag": ["http.url:http://x:1/"],
                                "tags": ['{"error":"true"}']})
    assert dict(tagged.tags) == {"http.url": "http://x:1/", "error": "true"}


def test_zipkin_spans_become_jaegers_model() -> None:
    tid = "ab" * 16
    trace = to_jaeger([
        {"traceId": tid, "id": "2" * 16, "parentId": "1" * 16, "name": "child",
         "kind": "CLIENT", "timestamp": 20, "duration": 5,
         "localEndpoint": {"serviceName": "b.ns"}, "tags": {"http.method": "GET"}},
        {"traceId": tid, "id": "1" * 16, "name": "root", "kind": "SERVER", "timestamp": 10,
         "duration": 30, "localEndpoint": {"serviceName": "a.ns"}},
    ])
    assert trace["traceID"] == tid and trace["warnings"] is None
    assert trace["processes"] == {"p1": {"serviceName": "a.ns", "tags": []},
                                  "p2": {"serviceName": "b.ns", "tags": []}}
    root, child = trace["spans"]
    assert root == {"traceID": tid, "spanID": "1" * 16, "operationName": "root",
                    "references": [], "startTime": 10, "duration": 30,
                    "tags": [{"key": "span.kind", "type": "string", "value": "server"}],
                    "logs": [], "processID": "p1", "warnings": None}
    assert child["references"] == [{"refType": "CHILD_OF", "traceID": tid, "spanID": "1" * 16}]
    assert [t["key"] for t in child["tags"]] == ["http.method", "span.kind"]


def test_malformed_spans_still_render() -> None:
    """The collector keeps spans as POSTed: odd fields become defaults, a parent cycle still
    lists every span, and the page says whose view it is."""
    trace = to_jaeger([
        {"traceId": "not-hex", "id": "1", "parentId": "2", "timestamp": "soon", "tags": [1],
         "localEndpoint": "x"},
        {"traceId": "not-hex", "id": "2", "parentId": "1", "duration": 5},
    ])
    assert trace["traceID"] == "not-hex"
    assert [s["startTime"] for s in trace["spans"]] == [0, 0]
    page = jaeger_ui.trace_page(trace, "/jaeger")
    assert page.count("<details>") == 2 and FOOTER in page and 'href="/jaeger/search' in page


def test_the_forms_tags_are_logfmt() -> None:
    params = jaeger_ui.search_params({"service": ["a"], "tags": ['error=true http.url="a b"'],
                                      "lookback": ["5m"]}, now=1000.0)
    assert json.loads(params["tags"][0]) == {"error": "true", "http.url": "a b"}
    assert params["start"] == [str(700 * 1_000_000)] and params["limit"] == ["20"]
    with pytest.raises(QueryError, match="'error' is not key=value"):
        jaeger_ui.search_params({"service": ["a"], "tags": ["error"]})
