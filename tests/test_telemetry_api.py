"""Does the embedded mesh follow Istio's Telemetry API (telemetry.istio.io/v1) and the mesh
config's telemetry settings: trace sampling (1 % by default, `randomSamplingPercentage`), the
learner's access log (`accessLogging`, `disabled`), root/namespace/workload precedence, and the
Reconciled condition for what is not emulated — while Istio's standard metrics keep counting?

The first half resolves settings from MeshState objects (no cluster); the second half runs real
sidecars in a namespace of its own.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from conftest import poll
from mesh_support import MeshNamespace, mesh_namespace_fixture, yaml_stream

from labs.cluster import ClusterRef
from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.resources import ResourceRegistry
from labs.embedded.apiserver.store import Store
from labs.embedded.mesh.istio.meshconfig import (
    DEFAULT_MESH,
    MESH_CONFIGMAP,
    access_log_enabled,
    default_mesh_config,
    parse_mesh_config,
    trace_sampling,
    upgrade_earlier_default,
)
from labs.embedded.mesh.istio.state import MeshState
from labs.embedded.mesh.istio.xds.listeners import build_sidecar_listeners
from labs.embedded.mesh.istio.xds.telemetry_api import (
    INBOUND,
    OUTBOUND,
    telemetry_settings,
    telemetry_unsupported_fields,
)
from labs.embedded.mesh.proxyfiles import ProxyFiles

Obj = dict[str, Any]
ENVOY = [{"name": "envoy"}]


def telemetry(name: str, namespace: str, spec: Obj, created: str = "2025-01-01T00:00:00Z",
              selector: dict[str, str] | None = None) -> Obj:
    return {"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
            "spec": {**spec, **({"selector": {"matchLabels": selector}} if selector else {})}}


def pod(name: str, namespace: str = "shop", labels: dict[str, str] | None = None) -> Obj:
    return {"metadata": {"name": name, "namespace": namespace, "uid": name,
                         "labels": labels or {"app": name},
                         "annotations": {"meshlab.dev/host-ports": json.dumps({"8080": 21001}),
                                         "meshlab.dev/app-ports": json.dumps({"8080": 21002}),
                                         "meshlab.dev/proxy-ports": json.dumps(
                                             {"admin": 21003, "outbound": 21004})}},
            "spec": {"serviceAccountName": name,
                     "containers": [{"name": name, "ports": [{"containerPort": 8080}]},
                                    {"name": "istio-proxy"}]}}


def sampling(state: MeshState, target: Obj, direction: str = OUTBOUND) -> float | None:
    return telemetry_settings(state, target).side(direction).sampling


def test_default_is_one_percent_with_access_logs() -> None:
    """Is a fresh mesh traced at Istio's PILOT_TRACE_SAMPLING default (1 %) on both sides, with
    the course's access log on?"""
    settings = telemetry_settings(MeshState(), pod("web"))
    for direction in (OUTBOUND, INBOUND):
        assert settings.side(direction).sampling == 1.0
        assert settings.side(direction).access_log


@pytest.mark.parametrize(("value", "expected"), [(100, 100.0), (25.5, 25.5), (0, 1.0),
                                                 (101, 1.0), (None, 1.0)])
def test_mesh_config_sampling(value: float | None, expected: float) -> None:
    """Is `defaultConfig.tracing.sampling` read as istiod reads it (0 or unset: the 1 %
    default; above 100: 1)?"""
    mesh = {"defaultConfig": {"tracing": {"sampling": value}}} if value is not None else {}
    assert trace_sampling(mesh) == expected


def test_mesh_config_turns_access_log_and_tracing_off() -> None:
    """Without `accessLogFile` there is no text access log (Istio's default profile); with
    `enableTracing: false` nothing is traced."""
    state = MeshState(mesh_config={"enableTracing": False})
    side = telemetry_settings(state, pod("web")).side(INBOUND)
    assert side.sampling is None and not side.access_log


def test_an_untouched_earlier_default_mesh_config_is_upgraded_at_start() -> None:
    """A cluster made before the access log was a mesh-config setting keeps its access log
    (the mesh config an earlier meshlab wrote becomes today's default); an edited one stays."""
    api = ObjectApi(Store(None), ResourceRegistry())
    configmaps = api.registry.lookup("", "v1", "configmaps")
    namespaces = api.registry.lookup("", "v1", "namespaces")
    assert configmaps is not None and namespaces is not None
    api.create(namespaces, "", {"metadata": {"name": "istio-system"}})
    namespace, name = MESH_CONFIGMAP
    earlier = DEFAULT_MESH.replace("accessLogFile: /dev/stdout\n", "")
    api.create(configmaps, namespace, {"metadata": {"name": name}, "data": {"mesh": earlier}})
    assert upgrade_earlier_default(api)
    upgraded = api.find(configmaps, namespace, name)
    assert upgraded is not None and upgraded["data"]["mesh"] == DEFAULT_MESH
    assert access_log_enabled(parse_mesh_config(upgraded)[0])
    edited = earlier + "enableTracing: false\n"
    api.update(configmaps, namespace, name, {**upgraded, "data": {"mesh": edited}})
    assert not upgrade_earlier_default(api)
    kept = api.find(configmaps, namespace, name)
    assert kept is not None and kept["data"]["mesh"] == edited


def test_root_namespace_and_workload_precedence() -> None:
    """Root namespace sets 100 %, the namespace 0 %, a workload Telemetry 50 % for app=web:
    does each pod get the most specific one, and another namespace the mesh-wide one?"""
    state = MeshState(telemetries=[
        telemetry("mesh-default", "istio-system", {"tracing": [{"randomSamplingPercentage": 100}]}),
        telemetry("ns", "shop", {"tracing": [{"randomSamplingPercentage": 0}]}),
        telemetry("web", "shop", {"tracing": [{"randomSamplingPercentage": 50}]},
                  selector={"app": "web"}),
    ])
    assert sampling(state, pod("web")) == 50.0
    assert sampling(state, pod("cart")) == 0.0
    assert sampling(state, pod("web", namespace="other")) == 100.0


def test_oldest_namespace_wide_telemetry_wins() -> None:
    """Two Telemetry resources without selector in one namespace: does the oldest apply?"""
    state = MeshState(telemetries=[
        telemetry("newer", "shop", {"tracing": [{"randomSamplingPercentage": 30}]},
                  created="2025-02-01T00:00:00Z"),
        telemetry("older", "shop", {"tracing": [{"randomSamplingPercentage": 70}]},
                  created="2025-01-01T00:00:00Z"),
    ])
    assert sampling(state, pod("web")) == 70.0


def test_match_mode_and_disable_span_reporting() -> None:
    """`match.mode: SERVER` changes only the inbound side; `disableSpanReporting` turns spans
    off there, and a Telemetry tracing entry wins over `enableTracing: false`."""
    state = MeshState(telemetries=[telemetry("t", "shop", {"tracing": [
        {"match": {"mode": "SERVER"}, "randomSamplingPercentage": 100},
        {"match": {"mode": "CLIENT"}, "disableSpanReporting": True}]})])
    assert sampling(state, pod("web"), INBOUND) == 100.0
    assert sampling(state, pod("web"), OUTBOUND) is None
    off = MeshState(mesh_config={"enableTracing": False}, telemetries=[
        telemetry("t", "shop", {"tracing": [{"randomSamplingPercentage": 10}]})])
    assert sampling(off, pod("web")) == 10.0


def test_access_logging_disabled_and_filter() -> None:
    """`accessLogging: [{providers: [envoy], disabled: true}]` for app=web turns its text log
    off (only there); an entry naming no provider changes nothing (the mesh config has no
    default access-log provider, as in istiod's mergeLogs); a filter expression is kept."""
    state = MeshState(telemetries=[
        telemetry("quiet", "shop", {"accessLogging": [{"providers": ENVOY, "disabled": True}]},
                  selector={"app": "web"}),
        telemetry("noop", "istio-system", {"accessLogging": [{"disabled": True}]}),
        telemetry("errors", "other", {"accessLogging": [
            {"providers": ENVOY, "filter": {"expression": "response.code >= 400"}}]}),
    ])
    assert not telemetry_settings(state, pod("web")).side(INBOUND).access_log
    assert telemetry_settings(state, pod("cart")).side(INBOUND).access_log
    side = telemetry_settings(state, pod("web", namespace="other")).side(OUTBOUND)
    assert side.access_log and side.log_filter == "response.code >= 400"


def test_listeners_follow_the_settings(tmp_path: Any) -> None:
    """Do the sidecar's listeners carry the sampling percentage and drop the text log (keeping
    the telemetry JSON log, which the metrics are made of) when access logging is off?"""
    state = MeshState(pods=[pod("web")], telemetries=[telemetry("t", "shop", {
        "tracing": [{"randomSamplingPercentage": 0}],
        "accessLogging": [{"providers": ENVOY, "disabled": True}]})])
    files = ProxyFiles(tmp_path / "xds")
    listeners = build_sidecar_listeners(state, pod("web"), files, telemetry_port=9411)
    hcms = [f["typed_config"] for listener in listeners if listener["name"] != "health"
            for chain in listener["filter_chains"] for f in chain["filters"]]
    assert hcms
    for hcm in hcms:
        assert hcm["tracing"]["random_sampling"] == {"value": 0.0}
        paths = [log["typed_config"]["path"] for log in hcm["access_log"]]
        assert paths == [str(tmp_path / "telemetry.log")]
    default = build_sidecar_listeners(MeshState(pods=[pod("web")]), pod("web"), files, 9411)
    outbound = next(listener for listener in default if listener["name"] == "outbound")
    hcm = outbound["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["tracing"]["random_sampling"] == {"value": 1.0}
    assert hcm["access_log"][0]["typed_config"]["path"] == "/dev/stdout"


def test_not_emulated_fields_are_named() -> None:
    """Are metrics overrides, other log providers and unknown tracing fields reported?"""
    obj = telemetry("t", "shop", {
        "metrics": [{"overrides": [{"disabled": True}]}],
        "accessLogging": [{"providers": [{"name": "otel"}]}],
        "tracing": [{"customTags": {"a": {"literal": {"value": "b"}}},
                     "randomSamplingPercentage": 5}]})
    missing = telemetry_unsupported_fields(obj)
    assert any(m.startswith("spec.metrics") for m in missing)
    assert any(m.startswith("spec.accessLogging[0].providers[0] 'otel'") for m in missing)
    assert "spec.tracing[0].customTags" in missing
    assert not telemetry_unsupported_fields(telemetry("ok", "shop", {
        "tracing": [{"randomSamplingPercentage": 100}],
        "accessLogging": [{"providers": ENVOY, "disabled": True}]}))
    assert default_mesh_config()["accessLogFile"] == "/dev/stdout"


# --- real sidecars ----------------------------------------------------------------------------

mesh = mesh_namespace_fixture("httpbin", "curl", prefix="telapi")


def zipkin_port(cluster: ClusterRef) -> int:
    assert cluster.embedded is not None
    return int((cluster.embedded.paths.read_endpoint() or {})["telemetry"])


def get(port: int, path: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return str(response.read().decode())


def _without_trace_nibble(request_id: str) -> str:
    """A UUID request id without its version digit, where Envoy writes its trace decision."""
    return request_id[:14] + request_id[15:]


def spans_of(cluster: ClusterRef, request_id: str) -> list[Obj]:
    """Spans (any service) tagged with `request_id` (Envoy's `guid:x-request-id` tag)."""
    spans = json.loads(get(zipkin_port(cluster), "/api/v2/traces?limit=1000"))
    wanted = _without_trace_nibble(request_id)
    return [s for trace in spans for s in trace if _without_trace_nibble(
        str((s.get("tags") or {}).get("guid:x-request-id", ""))) == wanted]


def wait_for(check: Callable[[], bool], seconds: float) -> bool:
    """Whether `check` holds within `seconds` (for retries inside a `poll`)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def set_telemetry(mesh: MeshNamespace, spec: Obj) -> None:
    mesh.apply(yaml_stream({"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
                            "metadata": {"name": "lab"}, "spec": spec}))


def curl_with_id(mesh: MeshNamespace, request_id: str, *headers: str, path: str = "/get"
                 ) -> None:
    extra = [arg for header in headers for arg in ("-H", header)]
    code, body = mesh.curl(f"http://httpbin:8000{path}", "-H", f"x-request-id: {request_id}",
                           *extra)
    expected = int(path.rsplit("/", 1)[1]) if path.startswith("/status/") else 200
    assert code == expected, body


def test_sampling_follows_the_telemetry_resource(cluster: ClusterRef,
                                                 mesh: MeshNamespace) -> None:
    """At 100 % a request without trace headers gives spans; at 0 % it gives none (a forced
    request sent after it shows the collector is up to date)."""
    try:
        set_telemetry(mesh, {"tracing": [{"randomSamplingPercentage": 100}]})

        def traced() -> bool:
            request_id = str(uuid.uuid4())  # Envoy traces only requests with a UUID id
            curl_with_id(mesh, request_id)
            return wait_for(lambda: bool(spans_of(cluster, request_id)), 5)
        poll(traced, "a span for a request without trace headers at 100 %", timeout=30)

        set_telemetry(mesh, {"tracing": [{"randomSamplingPercentage": 0}]})

        def untraced() -> bool:
            quiet, forced = str(uuid.uuid4()), str(uuid.uuid4())
            curl_with_id(mesh, quiet)
            curl_with_id(mesh, forced, f"x-b3-traceid: {secrets.token_hex(16)}",
                         f"x-b3-spanid: {secrets.token_hex(8)}", "x-b3-sampled: 1")
            if not wait_for(lambda: bool(spans_of(cluster, forced)), 5):
                return False
            time.sleep(0.5)  # the sidecars send each span at once; let a straggler land
            return not spans_of(cluster, quiet)
        poll(untraced, "no span for an unforced request at 0 %", timeout=30)
    finally:
        mesh.kubectl("delete", "telemetry", "lab", "--ignore-not-found")


def requests_418(cluster: ClusterRef, namespace: str) -> float:
    """istio_requests_total reported by httpbin's sidecar for 418 answers."""
    total = 0.0
    for line in get(zipkin_port(cluster), "/metrics").splitlines():
        if (line.startswith("istio_requests_total{") and 'reporter="destination"' in line
                and 'response_code="418"' in line and 'destination_workload="httpbin"' in line
                and f'destination_workload_namespace="{namespace}"' in line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_access_logging_disabled_keeps_metrics(cluster: ClusterRef,
                                               mesh: MeshNamespace) -> None:
    """With httpbin's access logging disabled by a workload Telemetry, is a request counted in
    istio_requests_total but absent from `kubectl logs deploy/httpbin -c istio-proxy`, while
    curl's own sidecar still logs it; and logged again once the Telemetry is deleted?"""
    try:
        set_telemetry(mesh, {"selector": {"matchLabels": {"app": "httpbin"}},
                             "accessLogging": [{"providers": ENVOY, "disabled": True}]})

        def unlogged() -> bool:
            token = secrets.token_hex(6)
            before = requests_418(cluster, mesh.name)
            curl_with_id(mesh, token, path="/status/418")
            if not (wait_for(lambda: requests_418(cluster, mesh.name) > before, 10)
                    and wait_for(lambda: token in mesh.kubectl(
                        "logs", "deploy/curl", "-c", "istio-proxy"), 10)):
                return False
            time.sleep(0.5)  # both sidecars flush their logs every 0.2 s
            return token not in mesh.kubectl("logs", "deploy/httpbin", "-c", "istio-proxy")
        poll(unlogged, "httpbin's sidecar to stop logging", timeout=40)
    finally:
        mesh.kubectl("delete", "telemetry", "lab", "--ignore-not-found")

    def logged_again() -> bool:
        token = secrets.token_hex(6)
        curl_with_id(mesh, token)
        return wait_for(lambda: token in mesh.kubectl("logs", "deploy/httpbin", "-c",
                                                      "istio-proxy"), 10)
    poll(logged_again, "httpbin's sidecar to log again", timeout=30)


def test_reconciled_condition_names_what_is_not_emulated(mesh: MeshNamespace) -> None:
    """Does a Telemetry with metric overrides get Reconciled=False naming `spec.metrics`?"""
    mesh.apply(yaml_stream({"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
                            "metadata": {"name": "metrics"},
                            "spec": {"metrics": [{"providers": [{"name": "prometheus"}],
                                                  "overrides": [{"disabled": True}]}]}}))
    try:
        def condition() -> Obj | None:
            obj = json.loads(mesh.kubectl("get", "telemetry", "metrics", "-o", "json"))
            return next((c for c in (obj.get("status") or {}).get("conditions") or []
                         if c["type"] == "Reconciled"), None)
        found = poll(condition, "the Reconciled condition", timeout=20)
        assert found["status"] == "False" and found["reason"] == "NotEmulated"
        assert "spec.metrics" in found["message"]
    finally:
        mesh.kubectl("delete", "telemetry", "metrics", "--ignore-not-found")
