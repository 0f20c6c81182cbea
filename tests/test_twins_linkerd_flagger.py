"""The twins of Flagger's podinfo and load tester and of Linkerd's emojivoto, run from their
upstream manifests (labs/manifests/podinfo.yaml, flagger-loadtester.yaml, emojivoto.yaml) in a
real embedded cluster: podinfo's API through an Istio sidecar, the load tester's webhook tasks
and `hey` sending real requests podinfo counts, and emojivoto's web calling its gRPC services
through the pod's proxy — the node forwarder without a mesh, the Envoy sidecar with Istio —
where a :doughnut: vote fails with 500 as upstream's does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from conftest import poll, without_namespaces
from mesh_support import MeshNamespace, manifest, wait_available
from test_mesh_telemetry import requests_total

from labs.cluster import ClusterRef
from labs.embedded.apps import hey, podinfo
from labs.embedded.apps.catalog import app_for
from labs.embedded.apps.emojivoto import api, voting_svc
from labs.embedded.apps.fortio import UsageError
from labs.embedded.mesh.istio.state import MeshState
from labs.embedded.mesh.istio.xds.clusters import build_outbound
from labs.embedded.mesh.istio.xds.listeners import build_inbound_clusters, is_http2_port

pytestmark = pytest.mark.timeout(900)

# podinfo's Service as Flagger creates it (`podinfo`, selector `app: podinfo`), with the metrics
# port too, so the test reads podinfo's counters through the mesh like Prometheus would
PODINFO_SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: podinfo, namespace: test}
spec:
  selector: {app: podinfo}
  ports:
  - {name: http, port: 9898, targetPort: 9898}
  - {name: http-metrics, port: 9797, targetPort: 9797}
"""
HEY_TASK = {"name": "podinfo", "namespace": "test", "phase": "Progressing",
            "metadata": {"type": "cmd", "cmd": "hey -z 4s -q 10 -c 2 http://podinfo.test:9898/",
                         "logCmdOutput": "true"}}
WEB = "http://web-svc.emojivoto:80"


def wait_ready(cluster: ClusterRef, namespace: str) -> None:
    """Every Deployment Available and every pod Ready (podinfo's Deployment, one replica with
    maxUnavailable 1, is Available before its pod is)."""
    wait_available(cluster, namespace, timeout=180)
    done = cluster.kubectl("-n", namespace, "wait", "--for=condition=Ready", "pods", "--all",
                           "--timeout=180s", timeout=200)
    assert done.returncode == 0, done.stderr + cluster.kubectl(
        "-n", namespace, "get", "pods", "-o", "wide").stdout


def _create_namespace(cluster: ClusterRef, name: str, *labels: str) -> None:
    for args in (("create", "namespace", name),
                 *(("label", "namespace", name, label) for label in labels)):
        done = cluster.kubectl(*args)
        assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def flagger_test(cluster: ClusterRef) -> Iterator[MeshNamespace]:
    """Namespace `test` (the tutorials'), meshed, with podinfo, the load tester and curl."""
    for _ in without_namespaces(cluster, "test"):
        _create_namespace(cluster, "test", "istio-injection=enabled")
        mesh = MeshNamespace(cluster, "test")
        for text in (manifest("podinfo"), manifest("flagger-loadtester"), manifest("curl"),
                     PODINFO_SERVICE):
            mesh.apply(text)
        wait_ready(cluster, "test")
        yield mesh


@pytest.fixture(scope="module")
def emojivoto(cluster: ClusterRef) -> Iterator[MeshNamespace]:
    """Namespace `emojivoto` from Linkerd's manifest (which creates it), not meshed."""
    for _ in without_namespaces(cluster, "emojivoto"):
        mesh = MeshNamespace(cluster, "emojivoto")
        applied = cluster.kubectl("apply", "-f", "-", input=manifest("emojivoto"))
        assert applied.returncode == 0, applied.stderr
        wait_ready(cluster, "emojivoto")
        yield mesh


def containers(mesh: MeshNamespace, app: str) -> list[str]:
    pod = json.loads(mesh.kubectl("get", "pods", "-l", f"app={app}", "-o", "json"))["items"][0]
    return [c["name"] for c in pod["spec"]["containers"]]


def podinfo_requests(mesh: MeshNamespace) -> float:
    """podinfo's `http_requests_total`, all statuses, read from its metrics port."""
    code, text = mesh.curl("http://podinfo:9797/metrics")
    assert code == 200, text
    return sum(float(v) for v in re.findall(r'^http_requests_total\{status="\d+"\} (\S+)$',
                                            text, re.M))


def post(mesh: MeshNamespace, url: str, payload: object) -> tuple[int, str]:
    return mesh.curl(url, "-X", "POST", "-H", "Content-Type: application/json",
                     "-d", json.dumps(payload))


# --- pure parts: catalog, wire format, flags, protocol selection ---------------------------------

def test_tagged_images_get_their_tag_on_the_command_line() -> None:
    podinfo_app = app_for("ghcr.io/stefanprodan/podinfo:6.0.1")
    assert podinfo_app is not None
    assert podinfo_app.argv([5])[-4:] == ["--port", "5", "--image",
                                          "ghcr.io/stefanprodan/podinfo:6.0.1"]
    assert podinfo.version_of("ghcr.io/stefanprodan/podinfo:6.0.1") == "6.0.1"
    assert podinfo.version_of("ghcr.io/stefanprodan/podinfo") == podinfo.DEFAULT_VERSION
    assert voting_svc.failure_rate("docker.l5d.io/buoyantio/emojivoto-voting-svc:v11") == 1.0
    assert voting_svc.failure_rate("docker.l5d.io/buoyantio/emojivoto-voting-svc:v12") == 0.0
    web = app_for("docker.l5d.io/buoyantio/emojivoto-web:v11")
    assert web is not None and "emojivoto-vote-bot" in web.commands


def test_podinfo_route_labels_follow_its_middleware() -> None:
    assert [podinfo.route_label(p) for p in ("/", "/api/info", "/delay/3", "/status/500")] == [
        "root", "api_info", "delay", "status"]


def test_emojivoto_messages_round_trip_in_protobuf_wire_format() -> None:
    assert api.emoji_of(api.emoji_message(":joy:")) == {"unicode": "\U0001f602",
                                                         "shortcode": ":joy:"}
    result = api.field_string(1, ":joy:") + api.field_int(2, 300)  # a two-byte varint
    assert bytes(api.field_int(2, 300)) == b"\x10\xac\x02"
    assert list(api.fields(result)) == [(1, b":joy:"), (2, 300)]
    with pytest.raises(ValueError):
        list(api.fields(b"\x0a\x05:jo"))  # truncated


def test_hey_flags_and_errors_follow_hey() -> None:
    opts = hey.parse(["-z", "1m", "-q", "10", "-c", "2", "-H", "x-test: 1", "-m", "post",
                      "http://podinfo-canary.test:9898/"])
    assert (opts.duration, opts.qps, opts.workers, opts.method) == (60.0, 10.0, 2, "POST")
    assert opts.headers["X-Test"] == "1" and opts.headers["User-Agent"] == "hey/0.0.1"
    for args, message in ((["-n", "1", "-c", "2", "u"], "-n cannot be less than -c."),
                          (["-h", "a: b", "u"], "Flag '-h' is deprecated"),
                          (["-o", "csv", "u"], "-o csv"), (["-bogus", "u"], "not defined")):
        with pytest.raises(UsageError, match=re.escape(message)):
            hey.parse(args)


def test_grpc_ports_get_http2_clusters_outbound_and_inbound() -> None:
    """Istio's protocol selection: a `grpc` service port is dialled (and served to the app)
    over HTTP/2, an `http` one over HTTP/1.1."""
    assert is_http2_port({"name": "grpc"}) and is_http2_port({"name": "http2-x"})
    assert is_http2_port({"name": "x", "appProtocol": "kubernetes.io/h2c"})
    assert is_http2_port({"number": 80, "name": "web", "protocol": "GRPC"})  # ServiceEntry
    assert not is_http2_port({"name": "grpc-web"})
    assert not is_http2_port({"name": "grpc", "appProtocol": "http"})
    labels = {"app": "emoji-svc"}
    server = {"metadata": {"name": "emoji-1", "namespace": "e", "labels": labels,
                           "annotations": {"meshlab.dev/host-ports": '{"8080": 40001}',
                                           "meshlab.dev/app-ports": '{"8080": 40002}'}},
              "spec": {"containers": [{"name": "emoji-svc", "ports": [
                  {"name": "grpc", "containerPort": 8080}]}, {"name": "istio-proxy"}]}}
    svc = {"metadata": {"name": "emoji-svc", "namespace": "e"}, "spec": {
        "selector": labels, "ports": [{"name": "grpc", "port": 8080, "targetPort": 8080},
                                      {"name": "prom", "port": 8801}]}}
    state = MeshState(namespaces=[{"metadata": {"name": "e"}}], services=[svc], pods=[server])
    clusters = {c["name"]: c for c in build_outbound(state, None, None)[0]}
    options = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

    def protocol(cluster: dict[str, object]) -> object:
        typed = cluster.get("typed_extension_protocol_options") or {}
        assert isinstance(typed, dict)
        return (typed.get(options) or {}).get("explicit_http_config")
    grpc_cluster = "outbound|8080||emoji-svc.e.svc.cluster.local"
    assert protocol(clusters[grpc_cluster]) == {"http2_protocol_options": {}}
    assert protocol(clusters["outbound|8801||emoji-svc.e.svc.cluster.local"]) is None
    [inbound] = build_inbound_clusters(state, server)
    assert inbound["name"] == "inbound|8080||" and protocol(inbound) == {
        "http2_protocol_options": {}}


# --- podinfo and the load tester (meshed, namespace `test`) --------------------------------------

def test_podinfo_answers_through_sidecars(flagger_test: MeshNamespace) -> None:
    assert containers(flagger_test, "podinfo") == ["podinfod", "istio-proxy"]
    code, body = flagger_test.curl("http://podinfo.test:9898/", "-i")
    head, _, text = body.partition("\n\n")  # kubectl output reads with universal newlines
    assert code == 200, body
    assert "x-envoy-upstream-service-time" in head.lower()  # answered through the sidecars
    info = json.loads(text)
    assert info["version"] == "6.0.0"  # the manifest's image tag
    assert info["hostname"].startswith("podinfo-")
    assert info["color"] == "#34577c" and info["message"] == "greetings from podinfo v6.0.0"
    assert flagger_test.curl("http://podinfo:9898/status/500") == (500, '{\n  "status": 500\n}')
    assert flagger_test.curl("http://podinfo:9898/delay/1") == (200, '{\n  "delay": 1\n}')
    assert flagger_test.curl("http://podinfo:9898/version")[1].count('"version": "6.0.0"') == 1


def test_podinfo_metrics_count_requests_by_status(flagger_test: MeshNamespace) -> None:
    flagger_test.curl("http://podinfo:9898/status/503")
    code, text = flagger_test.curl("http://podinfo:9797/metrics")
    assert code == 200
    assert re.search(r'^http_requests_total\{status="503"\} [1-9]', text, re.M), text
    assert re.search(r'^http_request_duration_seconds_bucket\{method="GET",path="status",'
                     r'status="503",le="\+Inf"\} [1-9]', text, re.M), text


def test_loadtester_runs_hey_against_podinfo(flagger_test: MeshNamespace) -> None:
    before = podinfo_requests(flagger_test)
    assert post(flagger_test, "http://flagger-loadtester.test/", HEY_TASK) == (202, "")
    # the same task again while it runs is skipped, as upstream's task runner does
    assert post(flagger_test, "http://flagger-loadtester.test/", HEY_TASK) == (202, "")
    poll(lambda: podinfo_requests(flagger_test) >= before + 40,
         "podinfo to count hey's requests (4 s at 10 qps x 2 workers)", timeout=60,
         interval=1)

    def finished() -> str:
        logs = flagger_test.kubectl("logs", "deploy/flagger-loadtester", "-c", "loadtester")
        return logs if "command finished hey -z 4s" in logs else ""
    logs = poll(finished, "the load tester to log the end of the hey task", timeout=60,
                interval=1)
    assert logs.count("task starting hey -z 4s") == 1, logs
    assert "[200]\\t" in logs  # hey's summary, logged as logCmdOutput asks


def test_loadtester_bash_tasks_and_gates(flagger_test: MeshNamespace) -> None:
    url = "http://flagger-loadtester.test"
    code, body = post(flagger_test, f"{url}/", {
        "name": "podinfo", "namespace": "test",
        "metadata": {"type": "bash", "cmd": "echo checked && exit 3"}})
    assert code == 500 and "exit status 3" in body and "checked" in body, body
    assert post(flagger_test, f"{url}/", {
        "name": "podinfo", "namespace": "test",
        "metadata": {"type": "bash", "cmd": "echo ok", "returnCmdOutput": "true"}}) == (200, "ok\n")
    assert post(flagger_test, f"{url}/", {"name": "podinfo", "namespace": "test"}) == (
        400, "metadata not found in payload")
    canary = {"name": "podinfo", "namespace": "test"}
    assert post(flagger_test, f"{url}/gate/check", canary) == (403, "Forbidden")
    assert post(flagger_test, f"{url}/gate/open", canary)[0] == 202
    assert post(flagger_test, f"{url}/gate/check", canary) == (200, "Approved")
    assert post(flagger_test, f"{url}/gate/halt", canary) == (403, "Forbidden")
    assert flagger_test.curl(f"{url}/healthz") == (200, "OK")


def test_kubectl_exec_hey_prints_its_summary(flagger_test: MeshNamespace) -> None:
    result = flagger_test.exec("flagger-loadtester", "hey", "-n", "20", "-c", "2",
                               "http://podinfo.test:9898/")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for line in ("Summary:", "Response time histogram:", "Latency distribution:",
                 "Details (average, fastest, slowest):", "  [200]\t20 responses"):
        assert line in out, out
    posted = flagger_test.exec("flagger-loadtester", "hey", "-n", "2", "-c", "1", "-m", "POST",
                               "-d", "hello", "http://podinfo.test:9898/echo")
    assert "  [202]\t2 responses" in posted.stdout and "Total data:\t10 bytes" in posted.stdout
    usage = flagger_test.exec("flagger-loadtester", "hey", "-n", "1", "-c", "2", "http://x/")
    assert usage.returncode == 1 and "-n cannot be less than -c." in usage.stderr


# --- emojivoto (without a mesh, then with Istio sidecars) -----------------------------------------

def check_emojivoto(mesh: MeshNamespace) -> None:
    """List, vote, fail :doughnut:, and see vote-bot's votes arrive on the leaderboard."""
    code, body = mesh.curl(f"{WEB}/api/list", workload="web")
    assert code == 200, body
    emoji = json.loads(body)
    assert len(emoji) == 99 and emoji[0] == {"shortcode": ":joy:", "unicode": "\U0001f602"}
    assert mesh.curl(f"{WEB}/api/vote?choice=:joy:", workload="web") == (200, "")
    assert mesh.curl(f"{WEB}/api/vote?choice=:doughnut:", workload="web") == (
        500, '{"error":"rpc error: code = Unknown desc = ERROR"}\n')
    assert mesh.curl(f"{WEB}/api/vote?choice=:nope:", workload="web")[0] == 400
    code, page = mesh.curl(f"{WEB}/", workload="web")
    assert code == 200 and "<title>Emoji Vote</title>" in page and 'src="/js"' in page

    def total_votes() -> int:
        code, body = mesh.curl(f"{WEB}/api/leaderboard", workload="web")
        assert code == 200, body
        return sum(int(entry["votes"]) for entry in json.loads(body))
    first = total_votes()
    assert first >= 1
    poll(lambda: total_votes() >= first + 2, "vote-bot's votes on the leaderboard", timeout=60,
         interval=1)


def test_emojivoto_without_a_mesh(emojivoto: MeshNamespace) -> None:
    assert containers(emojivoto, "web-svc") == ["web-svc"]
    check_emojivoto(emojivoto)
    bot = emojivoto.kubectl("logs", "deploy/vote-bot")
    assert "✔ Voting for :" in bot, bot


def test_emojivoto_with_istio_sidecars(cluster: ClusterRef, emojivoto: MeshNamespace) -> None:
    emojivoto.kubectl("label", "namespace", "emojivoto", "istio-injection=enabled")
    emojivoto.kubectl("rollout", "restart", "deployment")
    poll(lambda: all("istio-proxy" in containers(emojivoto, app)
                     for app in ("web-svc", "emoji-svc", "voting-svc", "vote-bot")),
         "emojivoto's pods to come back with sidecars", timeout=120, interval=1)
    result = cluster.kubectl("-n", "emojivoto", "rollout", "status", "deployment", "--timeout=180s",
                             timeout=200)
    assert result.returncode == 0, result.stderr
    check_emojivoto(emojivoto)
    poll(lambda: requests_total(cluster, request_protocol="grpc",
                                destination_service_name="voting-svc").get("source"),
         "web's sidecar to report its gRPC calls to voting-svc", timeout=60, interval=1)
    assert requests_total(cluster, request_protocol="grpc",
                          destination_service_name="emoji-svc").get("destination")
