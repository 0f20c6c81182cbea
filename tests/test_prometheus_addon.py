"""Is the embedded cluster's Prometheus Istio's `prometheus` addon in istio-system, so a learner
following Istio's docs reaches it: `kubectl get pods,svc -n istio-system`, `kubectl port-forward
svc/prometheus 9090:9090` then PromQL over HTTP, `istioctl dashboard prometheus`, `kubectl top`?

The real kubectl and the project's istioctl run as subprocesses against the session cluster;
bookinfo runs meshed in a namespace of this module. Without a `prometheus` binary the addon's
container must fail and say how to install one: that is checked on an in-process node whose
PATH has no binary.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
import yaml
from conftest import poll, wait_until
from mesh_support import MANIFESTS, MeshNamespace, mesh_namespace_fixture, ready_pod
from runtime_support import Cluster, run
from test_metrics_api import mebibytes, table
from test_port_forward import get, port_forward

from labs.cluster import ClusterRef
from labs.embedded.workload import host_ports

ISTIOCTL = str(Path(sys.executable).parent / "istioctl")
SELECTOR = "app.kubernetes.io/name=prometheus"
REQUESTS = 10

needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="no `prometheus` binary on PATH (Debian: apt-get install prometheus)")
mesh = mesh_namespace_fixture("bookinfo", "curl", prefix="prom")


def addon_pod(cluster: ClusterRef) -> dict[str, object]:
    """The addon's pod once its container is ready."""
    return ready_pod(cluster, "istio-system", SELECTOR, "the prometheus addon's pod")


def promql(base: str, query: str) -> list[dict[str, object]]:
    status, body = get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query}))
    assert status == 200, body
    answer = json.loads(body)
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def send_bookinfo_traffic(mesh: MeshNamespace) -> None:
    for _ in range(REQUESTS):
        code, body = mesh.curl("http://productpage:9080/productpage")
        assert code == 200, body


def productpage_requests(base: str, mesh: MeshNamespace) -> float | None:
    """`istio_requests_total` for productpage in the module's namespace, once it counts
    every request sent."""
    result = promql(base, f'istio_requests_total{{destination_workload="productpage-v1",'
                          f'destination_workload_namespace="{mesh.name}",'
                          'reporter="destination"}')
    total = sum(float(r["value"][1]) for r in result)  # type: ignore[index]
    return total if total >= REQUESTS else None


def test_manifest_is_upstreams_addon_trimmed() -> None:
    """Does the manifest keep upstream's names, labels, Service and container port?"""
    docs = [d for d in yaml.safe_load_all((MANIFESTS / "prometheus.yaml").read_text()) if d]
    assert [d["kind"] for d in docs] == ["ServiceAccount", "Service", "Deployment"]
    assert {d["metadata"]["name"] for d in docs} == {"prometheus"}
    service, deployment = docs[1], docs[2]
    assert service["spec"]["ports"] == [{"name": "http", "port": 9090, "protocol": "TCP",
                                         "targetPort": 9090}]
    template = deployment["spec"]["template"]
    assert template["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
    (container,) = template["spec"]["containers"]
    assert container["name"] == "prometheus-server"
    assert container["image"].startswith("prom/prometheus:v")
    assert container["ports"] == [{"containerPort": 9090}]


@needs_prometheus
def test_get_pods_and_svc_show_prometheus(cluster: ClusterRef, mesh: MeshNamespace) -> None:
    """Does `kubectl get pods,svc -n istio-system` list the addon's Running pod and its
    ClusterIP Service on 9090, as on a cluster with samples/addons applied?"""
    addon_pod(cluster)
    out = cluster.kubectl("get", "pods,svc", "-n", "istio-system").stdout
    pods = [line.split() for line in out.splitlines() if line.startswith("pod/prometheus-")]
    assert pods and pods[0][1:3] == ["1/1", "Running"], out
    services = [line.split() for line in out.splitlines() if line.startswith("service/prometheus ")]
    assert services and services[0][1] == "ClusterIP" and services[0][4] == "9090/TCP", out


@needs_prometheus
def test_port_forward_then_promql(cluster: ClusterRef, mesh: MeshNamespace) -> None:
    """After some Bookinfo traffic, does `kubectl -n istio-system port-forward svc/prometheus
    PORT:9090` reach a Prometheus whose `istio_requests_total` counts it?"""
    addon_pod(cluster)
    send_bookinfo_traffic(mesh)
    with socket.socket() as sock:  # a free local port: 9090 may be taken on a shared machine
        sock.bind(("127.0.0.1", 0))
        local = sock.getsockname()[1]
    with port_forward(cluster, "istio-system", "svc/prometheus", f"{local}:9090") as forward:
        base = forward.url(9090, "")
        poll(lambda: productpage_requests(base, mesh),
             f"istio_requests_total >= {REQUESTS} for productpage through port-forward",
             timeout=30, interval=0.5)

        def scraped() -> set[tuple[str, str]] | None:
            """(job, app) of the targets up; None until productpage's Envoy is one of them."""
            targets = json.loads(get(f"{base}/api/v1/targets")[1])["data"]["activeTargets"]
            up = {(t["labels"]["job"], t["labels"].get("app", "")) for t in targets
                  if t["health"] == "up" and t["labels"].get("namespace") in (None, mesh.name)}
            return up if ("envoy-stats", "productpage") in up else None
        up = poll(scraped, "productpage's Envoy stats to be scraped", timeout=30, interval=0.5)
    assert ("istio-mesh", "") in up, up


@needs_prometheus
def test_istioctl_dashboard_prometheus(cluster: ClusterRef, mesh: MeshNamespace) -> None:
    """Does `istioctl dashboard prometheus --browser=false` print a URL that answers PromQL?"""
    addon_pod(cluster)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHLAB_")}
    env["KUBECONFIG"] = str(cluster.kubeconfig)
    result = subprocess.run([ISTIOCTL, "dashboard", "prometheus", "--browser=false"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    url, _, rest = result.stdout.partition("\n")
    assert url.startswith("http://localhost:") and rest == "skipping opening a browser"
    status, body = get(url.replace("localhost", "127.0.0.1") + "/-/ready")
    assert status == 200, body
    assert promql(url, "up")


@needs_prometheus
def test_endpoint_entry_follows_the_addon_pod(cluster: ClusterRef, mesh: MeshNamespace) -> None:
    """Is endpoint.json's `prometheus` the addon pod's host port for 9090, also after the pod
    is re-created by its Deployment (a new pod, a new port)?"""
    assert cluster.embedded is not None
    first = addon_pod(cluster)
    name = first["metadata"]["name"]  # type: ignore[index]

    def published(pod: dict[str, object]) -> bool:
        entry = (cluster.embedded.paths.read_endpoint() or {}).get("prometheus")  # type: ignore[union-attr]
        return entry == host_ports(pod)["9090"]
    poll(lambda: published(first), "endpoint.json to name the addon pod's port", timeout=15)
    deleted = cluster.kubectl("-n", "istio-system", "delete", "pod", name, "--timeout=60s",
                              timeout=90)
    assert deleted.returncode == 0, deleted.stderr

    def replacement() -> dict[str, object] | None:
        pod = addon_pod(cluster)
        return pod if pod["metadata"]["name"] != name else None  # type: ignore[index]
    second = poll(replacement, "a new prometheus pod", timeout=60, interval=0.5)
    poll(lambda: published(second), "endpoint.json to name the new pod's port", timeout=15)
    port = (cluster.embedded.paths.read_endpoint() or {})["prometheus"]
    poll(lambda: get(f"http://127.0.0.1:{port}/-/ready")[0] == 200,
         "the new Prometheus to be ready", timeout=30, interval=0.5)


@needs_prometheus
def test_top_pods_lists_prometheus(cluster: ClusterRef, mesh: MeshNamespace) -> None:
    """Does `kubectl top pods -n istio-system` list the addon with Prometheus' own memory?"""
    addon_pod(cluster)

    def row() -> dict[str, str] | None:
        got = cluster.kubectl("top", "pods", "-n", "istio-system", "--containers")
        rows = table(got.stdout) if got.returncode == 0 and got.stdout.strip() else []
        return next((r for r in rows if r["POD"].startswith("prometheus-")
                     and r["NAME"] == "prometheus-server"), None)
    found = poll(row, "prometheus-server in `kubectl top pods -n istio-system`", timeout=30,
                 interval=0.5)
    assert mebibytes(found["MEMORY(bytes)"]) > 10, found  # a Go server, not a Python twin


def test_without_a_binary_the_container_fails_and_says_how_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no `prometheus` on PATH, does the addon's container fail with the install hint in
    its log and a Warning event, while another pod of the node still runs?"""
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    docs = [d for d in yaml.safe_load_all((MANIFESTS / "prometheus.yaml").read_text()) if d]
    template = docs[-1]["spec"]["template"]
    addon = {"metadata": {"name": "prometheus", **template["metadata"]},
             "spec": template["spec"]}
    echo = {"metadata": {"name": "web"}, "spec": {"containers": [
        {"name": "web", "image": "example.com/unknown:1", "ports": [{"containerPort": 8080}]}]}}

    async def scenario() -> None:
        async with Cluster(tmp_path / "node") as c:
            c.create("pods", addon)
            c.create("pods", echo)
            await c.ready_pod("web")

            def failed() -> dict[str, object] | None:
                statuses = ((c.pod("prometheus") or {}).get("status") or {}).get(
                    "containerStatuses") or []
                ended = [s.get(k, {}).get("terminated") for s in statuses
                         for k in ("state", "lastState")]
                return statuses[0] if any(e and e["exitCode"] == 1 for e in ended) else None
            status = await wait_until(failed, "prometheus-server to exit 1", timeout=30)
            assert status["ready"] is False
            warnings = [e["message"] for e in c.events("prometheus")
                        if e["type"] == "Warning" and e["reason"] == "Simulated"]
            assert warnings and "apt-get install prometheus" in warnings[0], warnings
            log = next((tmp_path / "node" / "pods").glob("default_prometheus_*/"
                                                         "prometheus-server*.log"))
            assert "cannot start: no `prometheus` binary" in log.read_text()
    run(scenario())
