"""The telemetry server: Istio metrics from the sidecars' JSON access logs, and Zipkin spans."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp

from labs.embedded.loopback import free_port
from labs.embedded.mesh.istio.state import MeshState
from labs.embedded.mesh.telemetry import LogTailer, SpanStore, TelemetryServer
from labs.embedded.paths import pods_dir
from labs.embedded.workload import HOST_PORTS, pod_dir_name

NS = "default"
PRODUCTPAGE = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
REVIEWS = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
RATINGS = "spiffe://cluster.local/ns/default/sa/bookinfo-ratings"


def pod(app: str, version: str, sa: str, host_port: int, uid: str) -> dict:
    """A meshed pod of a Deployment `<app>-<version>`, as the runtime annotates it."""
    workload = f"{app}-{version}"
    return {
        "metadata": {
            "name": f"{workload}-7d9f-abcde", "namespace": NS, "uid": uid,
            "labels": {"app": app, "version": version, "pod-template-hash": "7d9f"},
            "annotations": {HOST_PORTS: json.dumps({"9080": host_port})},
            "ownerReferences": [{"kind": "ReplicaSet", "name": f"{workload}-7d9f",
                                 "uid": f"rs-{uid}", "controller": True}]},
        "spec": {"serviceAccountName": sa.rsplit("/", 1)[1],
                 "containers": [{"name": app}, {"name": "istio-proxy"}]},
    }


PODS = [pod("productpage", "v1", PRODUCTPAGE, 31001, "u1"),
        pod("reviews", "v1", REVIEWS, 31002, "u2"),
        pod("reviews", "v2", REVIEWS, 31003, "u3"),
        pod("ratings", "v1", RATINGS, 31004, "u4")]
SERVICES = [{"metadata": {"name": name, "namespace": NS},
             "spec": {"ports": [{"port": 9080}]}} for name in ("productpage", "reviews", "ratings")]


def line(source: dict, direction: str, **fields: object) -> dict:
    """A JSON access log line as the sidecar of `source` writes it (xds/observability.py)."""
    meta = source["metadata"]
    return {"start_time": "2025-01-01T00:00:00.000Z", "method": "GET", "path": "/",
            "protocol": "HTTP/1.1", "response_code": 200, "response_flags": "-",
            "duration": 12, "bytes_received": 0, "bytes_sent": 1500, "upstream_host": None,
            "upstream_cluster": None, "upstream_peer_uri_san": None,
            "upstream_tls_version": None, "downstream_peer_uri_san": None,
            "connection_security": None, "request_id": "r1", "direction": direction,
            "pod": meta["name"], "namespace": NS, "workload": meta["name"].rsplit("-", 2)[0],
            "principal": f"spiffe://cluster.local/ns/default/sa/{source['spec']['serviceAccountName']}",
            **fields}


def append(state_dir: Path, source: dict, *lines: dict) -> None:
    log = pods_dir(state_dir) / pod_dir_name(source) / "istio-proxy" / "telemetry.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.writelines(json.dumps(item) + "\n" for item in lines)


def series(text: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """The samples of `name` whose labels include `labels`."""
    found = []
    for match in re.finditer(rf"^{name}\{{(.*)\}} (\S+)$", text, re.M):
        parsed = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match[1]))
        if all(parsed.get(k) == v for k, v in labels.items()):
            found.append((parsed, float(match[2])))
    return found


def async_test(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run `fn(server, tmp_path)` in a fresh event loop with a started telemetry server."""
    def run(tmp_path: Path) -> None:
        async def with_server() -> None:
            async with running_server(tmp_path) as server:
                await fn(server, tmp_path)
        asyncio.run(asyncio.wait_for(with_server(), 30))

    run.__name__, run.__doc__ = fn.__name__, fn.__doc__
    return run


@contextlib.asynccontextmanager
async def running_server(state_dir: Path) -> AsyncIterator[TelemetryServer]:
    telemetry = TelemetryServer(state_dir, free_port())
    telemetry.update_state(MeshState(pods=PODS, services=SERVICES))
    await telemetry.start()
    try:
        yield telemetry
    finally:
        await telemetry.stop()


async def get(server: TelemetryServer, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{server.port}{path}") as response:
        return response.status, await response.text()


@async_test
async def test_requests_are_counted_with_istio_labels(server: TelemetryServer,
                                                      tmp_path: Path) -> None:
    """Does one mTLS call productpage -> reviews-v2 give a source and a destination series?"""
    productpage, reviews_v2 = PODS[0], PODS[2]
    append(tmp_path, productpage, line(
        productpage, "outbound", upstream_host="127.0.0.1:31003",
        upstream_cluster="outbound|9080|v2|reviews.default.svc.cluster.local",
        upstream_peer_uri_san=REVIEWS, upstream_tls_version="TLSv1.3", authority="reviews:9080"))
    append(tmp_path, reviews_v2, *[line(
        reviews_v2, "inbound", downstream_peer_uri_san=PRODUCTPAGE, connection_security="TLSv1.3",
        authority="reviews:9080", upstream_cluster="inbound|9080||",
        upstream_host="127.0.0.1:40000", request_id=f"r{i}", duration=7) for i in range(3)])
    await server.collect()
    status, text = await get(server, "/metrics")
    assert status == 200
    [(source, count)] = series(text, "istio_requests_total", reporter="source")
    assert count == 1
    assert source["source_workload"] == "productpage-v1"
    assert source["source_app"] == "productpage" and source["source_version"] == "v1"
    assert source["destination_workload"] == "reviews-v2"
    assert source["destination_version"] == "v2"
    assert source["destination_service"] == "reviews.default.svc.cluster.local"
    assert source["destination_service_name"] == "reviews"
    assert source["destination_service_namespace"] == "default"
    assert source["destination_principal"] == REVIEWS
    assert source["source_principal"] == PRODUCTPAGE
    assert source["connection_security_policy"] == "unknown"  # only the destination knows
    assert source["response_code"] == "200" and source["response_flags"] == "-"
    assert source["request_protocol"] == "http"
    [(dest, count)] = series(text, "istio_requests_total", reporter="destination")
    assert count == 3
    assert dest["source_workload"] == "productpage-v1"
    assert dest["source_workload_namespace"] == "default"
    assert dest["destination_workload"] == "reviews-v2"
    assert dest["destination_service"] == "reviews.default.svc.cluster.local"
    assert dest["connection_security_policy"] == "mutual_tls"
    assert dest["source_principal"] == PRODUCTPAGE
    assert dest["destination_principal"] == REVIEWS


@async_test
async def test_histograms_use_istio_buckets(server: TelemetryServer, tmp_path: Path) -> None:
    """Are durations and sizes counted in cumulative buckets, with _sum and _count?"""
    ratings = PODS[3]
    append(tmp_path, ratings, *[line(ratings, "inbound", duration=d, bytes_sent=b,
                                     authority="ratings:9080")
                                for d, b in ((3, 40), (30, 400), (3000, 4000))])
    await server.collect()
    _, text = await get(server, "/metrics")
    assert "# TYPE istio_request_duration_milliseconds histogram" in text
    buckets = {labels["le"]: value for labels, value in series(
        text, "istio_request_duration_milliseconds_bucket", reporter="destination")}
    assert list(buckets)[:4] == ["0.5", "1", "5", "10"]
    assert (buckets["1"], buckets["5"], buckets["25"], buckets["50"]) == (0, 1, 1, 2)
    assert (buckets["2500"], buckets["5000"], buckets["+Inf"]) == (2, 3, 3)
    [(_, total)] = series(text, "istio_request_duration_milliseconds_sum")
    [(_, count)] = series(text, "istio_request_duration_milliseconds_count")
    assert (total, count) == (3033, 3)
    sizes = {labels["le"]: value for labels, value in series(
        text, "istio_response_bytes_bucket", reporter="destination")}
    assert (sizes["10"], sizes["100"], sizes["1000"], sizes["10000"]) == (0, 1, 2, 3)
    [(plain, _)] = series(text, "istio_requests_total")
    assert plain["connection_security_policy"] == "none"
    assert plain["source_workload"] == "unknown" and plain["source_principal"] == "unknown"
    assert plain["destination_workload"] == "ratings-v1"
    assert plain["destination_service_name"] == "ratings"


@async_test
async def test_shared_identity_caller_found_by_request_id(server: TelemetryServer,
                                                          tmp_path: Path) -> None:
    """reviews-v1 and -v2 share a service account: is the caller of ratings still the right
    workload when its own outbound line arrives after the inbound one?"""
    reviews_v2, ratings = PODS[2], PODS[3]
    append(tmp_path, ratings, line(ratings, "inbound", downstream_peer_uri_san=REVIEWS,
                                   connection_security="TLSv1.3", request_id="abc",
                                   authority="ratings:9080"))
    await server.collect()
    _, text = await get(server, "/metrics")
    assert series(text, "istio_requests_total") == []  # waiting for the caller's line
    append(tmp_path, reviews_v2, line(
        reviews_v2, "outbound", upstream_host="127.0.0.1:31004", request_id="abc",
        upstream_cluster="outbound|9080||ratings.default.svc.cluster.local",
        upstream_peer_uri_san=RATINGS))
    await server.collect()
    _, text = await get(server, "/metrics")
    [(dest, _)] = series(text, "istio_requests_total", reporter="destination")
    assert dest["source_workload"] == "reviews-v2"
    assert dest["source_version"] == "v2"


@async_test
async def test_labels_follow_a_new_mesh_snapshot(server: TelemetryServer,
                                                 tmp_path: Path) -> None:
    """The same kind of request is labelled from memory: once the pods change (reviews-v2
    relabelled version v3), does the next identical request carry the new label, and do two
    callers sharing an identity still get a series each?"""
    productpage, reviews_v1, reviews_v2, ratings = PODS
    outbound = line(productpage, "outbound", upstream_host="127.0.0.1:31003",
                    upstream_cluster="outbound|9080||reviews.default.svc.cluster.local",
                    upstream_peer_uri_san=REVIEWS, authority="reviews:9080")
    append(tmp_path, productpage, outbound)
    for caller, request_id in ((reviews_v1, "from-v1"), (reviews_v2, "from-v2")):
        append(tmp_path, caller, line(
            caller, "outbound", upstream_host="127.0.0.1:31004", request_id=request_id,
            upstream_cluster="outbound|9080||ratings.default.svc.cluster.local",
            upstream_peer_uri_san=RATINGS))
        append(tmp_path, ratings, line(
            ratings, "inbound", downstream_peer_uri_san=REVIEWS, connection_security="TLSv1.3",
            request_id=request_id, authority="ratings:9080"))
    await server.collect()
    relabelled = json.loads(json.dumps(reviews_v2))
    relabelled["metadata"]["labels"]["version"] = "v3"
    server.update_state(MeshState(pods=[productpage, reviews_v1, relabelled, ratings],
                                  services=SERVICES))
    append(tmp_path, productpage, outbound)
    await server.collect()
    _, text = await get(server, "/metrics")
    versions = {labels["destination_version"]: value for labels, value in series(
        text, "istio_requests_total", reporter="source", source_workload="productpage-v1")}
    assert versions == {"v2": 1, "v3": 1}
    callers = {labels["source_version"]: value for labels, value in series(
        text, "istio_requests_total", reporter="destination", destination_workload="ratings-v1")}
    assert callers == {"v1": 1, "v2": 1}


def test_a_scrape_counts_what_was_logged_however_idle_the_poll(tmp_path: Path) -> None:
    """With the background poll asleep (backed off, here for a minute), does a GET /metrics
    still count a request logged just before, and render again after the next one?"""
    async def scenario(state_dir: Path) -> None:
        telemetry = TelemetryServer(state_dir, free_port(), poll_interval=60)
        telemetry.update_state(MeshState(pods=PODS, services=SERVICES))
        await telemetry.start()
        try:
            await asyncio.sleep(0.1)  # the poll's first pass, on empty logs
            ratings = PODS[3]
            append(state_dir, ratings, line(ratings, "inbound", authority="ratings:9080"))
            [(_, count)] = series((await get(telemetry, "/metrics"))[1], "istio_requests_total")
            assert count == 1
            append(state_dir, ratings, line(ratings, "inbound", authority="ratings:9080"))
            [(_, count)] = series((await get(telemetry, "/metrics"))[1], "istio_requests_total")
            assert count == 2
        finally:
            await telemetry.stop()

    asyncio.run(asyncio.wait_for(scenario(tmp_path), 30))


def test_tailer_reads_appended_lines_and_survives_truncation_and_rotation(
        tmp_path: Path) -> None:
    """Does the tailer return only new complete lines, and start over on a new file?"""
    path = tmp_path / "telemetry.log"
    tailer = LogTailer()
    path.write_text('{"a": 1}\n{"b"')
    assert [text for _, text in tailer.read([path])] == ['{"a": 1}']
    with path.open("a") as out:
        out.write(': 2}\n')
    assert [text for _, text in tailer.read([path])] == ['{"b": 2}']
    assert tailer.read([path]) == []
    path.write_text('{"c": 3}\n')  # truncated and rewritten
    assert [text for _, text in tailer.read([path])] == ['{"c": 3}']
    rotated = tmp_path / "new.log"
    rotated.write_text('{"d": 4}\n{"e": 5}\n')
    rotated.replace(path)  # a new inode, longer than the old offset
    assert [text for _, text in tailer.read([path])] == ['{"d": 4}', '{"e": 5}']


def span(trace: str, span_id: str, service: str, name: str, stamp: int, parent: str = "") -> dict:
    item = {"traceId": trace, "id": span_id, "name": name, "kind": "SERVER",
            "timestamp": stamp, "duration": 1500, "localEndpoint": {"serviceName": service}}
    if parent:
        item["parentId"] = parent
    return item


@async_test
async def test_zipkin_round_trip(server: TelemetryServer, tmp_path: Path) -> None:
    """Are POSTed spans served back by trace id, service and service list, as Zipkin does?"""
    now_us = int(time.time() * 1_000_000)
    spans = [span("aaaa000000000001", "01", "productpage.default", "productpage:9080/*", now_us),
             span("aaaa000000000001", "02", "reviews.default", "reviews:9080/*", now_us + 5,
                  "01"),
             span("bbbb000000000002", "03", "ratings.default", "ratings:9080/*", now_us + 9)]
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://127.0.0.1:{server.port}/api/v2/spans",
                                json=spans) as response:
            assert response.status == 202
        async with session.post(f"http://127.0.0.1:{server.port}/api/v2/spans",
                                data=b'{"not": "a list"}') as response:
            assert response.status == 400
            assert "list of Zipkin v2 spans" in await response.text()
    status, body = await get(server, "/api/v2/trace/aaaa000000000001")
    assert status == 200
    assert {s["id"] for s in json.loads(body)} == {"01", "02"}
    status, _ = await get(server, "/api/v2/trace/ffff000000000000")
    assert status == 404
    _, body = await get(server, "/api/v2/services")
    assert json.loads(body) == ["productpage.default", "ratings.default", "reviews.default"]
    _, body = await get(server, "/api/v2/traces?serviceName=reviews.default&limit=10")
    [trace] = json.loads(body)
    assert {s["id"] for s in trace} == {"01", "02"}
    _, body = await get(server, "/api/v2/traces?limit=1")
    assert [[s["id"] for s in t] for t in json.loads(body)] == [["03"]]  # most recent first
    _, body = await get(server, "/api/v2/spans?serviceName=ratings.default")
    assert json.loads(body) == ["ratings:9080/*"]


def test_span_store_is_bounded() -> None:
    """Are the oldest spans dropped, with their traces, past the limit?"""
    store = SpanStore(limit=3)
    store.add([span(f"{i:016x}", f"{i:02x}", "svc", "op", i) for i in range(5)])
    assert store.trace(f"{0:016x}") == [] and store.trace(f"{1:016x}") == []
    assert [s["id"] for s in store.trace(f"{4:016x}")] == ["04"]
    assert len(store.traces(limit=10, end_ts_ms=1, lookback_ms=1)) == 3
