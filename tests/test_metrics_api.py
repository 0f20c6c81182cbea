"""`metrics.k8s.io/v1beta1` and `kubectl top` against the embedded cluster: real CPU and memory
of each container's processes (the sidecar's is its Envoy), with the pinned kubectl."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
from conftest import poll
from mesh_support import MeshNamespace, mesh_namespace_fixture, wait_available

from labs.cluster import ClusterRef, kubectl_binary
from labs.embedded.apiserver.metrics_api import cpu_quantity, go_duration, memory_quantity

CPU = re.compile(r"^\d+[num]?$")
MEMORY = re.compile(r"^\d+(Ki|Mi|Gi)?$")
WINDOW = re.compile(r"^(\d+m)?\d+(\.\d+)?s$")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

mesh = mesh_namespace_fixture("httpbin", prefix="top")


def table(output: str) -> list[dict[str, str]]:
    """kubectl's columns by header (cut at the header's column starts: a cell may be empty),
    one dict per row."""
    lines = output.rstrip().splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", lines[0])]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    return [{lines[0][a:b].strip(): line[a:b].strip() for a, b in bounds} for line in lines[1:]]


def mebibytes(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", value).groups()  # type: ignore[union-attr]
    return int(number) * {None: 1 / 2**20, "Ki": 1 / 1024, "Mi": 1, "Gi": 1024}[unit]


def millicores(value: str) -> int:
    return int(value.removesuffix("m")) if value.endswith("m") else int(value) * 1000


def test_quantities_print_as_metrics_server_prints_them() -> None:
    assert [cpu_quantity(n) for n in (0, 2 * 10**9, 15 * 10**6, 123456, 7000)] == [
        "0", "2", "15m", "123456n", "7u"]
    assert [memory_quantity(b) for b in (0, 21340 * 1024, 64 * 2**20, 1000)] == [
        "0", "21340Ki", "64Mi", "1000"]
    assert [go_duration(s) for s in (1.0, 10.2884, 75.5)] == ["1s", "10.288s", "1m15.5s"]


def test_discovery_lists_pod_and_node_metrics(mesh: MeshNamespace) -> None:
    out = mesh.kubectl("api-resources", "--api-group=metrics.k8s.io", "-o", "wide")
    rows = {row["NAME"]: row for row in table(out)}
    assert rows["pods"]["KIND"] == "PodMetrics" and rows["pods"]["NAMESPACED"] == "true"
    assert rows["nodes"]["KIND"] == "NodeMetrics" and rows["nodes"]["NAMESPACED"] == "false"
    assert rows["pods"]["VERBS"] == "get,list"


def test_top_pods_containers_shows_the_sidecars_real_memory(mesh: MeshNamespace) -> None:
    rows = table(mesh.kubectl("top", "pods", "--containers"))
    by_container = {row["NAME"]: row for row in rows}
    assert set(by_container) == {"httpbin", "istio-proxy"}, rows
    assert all(row["POD"].startswith("httpbin-") for row in rows)
    # Envoy's resident set: tens of MiB (FACTS.md: ~66 MiB RSS with the binary's pages)
    assert mebibytes(by_container["istio-proxy"]["MEMORY(bytes)"]) > 5, rows
    assert mebibytes(by_container["httpbin"]["MEMORY(bytes)"]) > 1, rows
    assert all(row["CPU(cores)"].endswith("m") for row in rows), rows


def test_pod_metrics_objects(mesh: MeshNamespace) -> None:
    pod = mesh.pod("httpbin")
    raw = mesh.kubectl("get", "--raw",
                       f"/apis/metrics.k8s.io/v1beta1/namespaces/{mesh.name}/pods/{pod}")
    metrics = json.loads(raw)
    assert metrics["kind"] == "PodMetrics"
    assert metrics["metadata"]["name"] == pod and metrics["metadata"]["namespace"] == mesh.name
    assert TIMESTAMP.match(metrics["timestamp"]) and WINDOW.match(metrics["window"]), metrics
    for container in metrics["containers"]:
        assert CPU.match(container["usage"]["cpu"]), container
        assert MEMORY.match(container["usage"]["memory"]), container
    listed = json.loads(mesh.kubectl("get", "--raw", f"/apis/metrics.k8s.io/v1beta1/namespaces/"
                                     f"{mesh.name}/pods?labelSelector=app%3Dhttpbin"))
    assert [item["metadata"]["name"] for item in listed["items"]] == [pod]
    assert json.loads(mesh.kubectl("get", "--raw", f"/apis/metrics.k8s.io/v1beta1/namespaces/"
                                   f"{mesh.name}/pods?labelSelector=app%3Dnone"))["items"] == []


def test_cpu_is_measured_from_the_containers_processes(cluster: ClusterRef,
                                                       mesh: MeshNamespace) -> None:
    """A busy loop exec'd in the app container shows up as that container's CPU (exec'd
    processes are the container's, as in its cgroup on a real node)."""
    pod = mesh.pod("httpbin")
    busy = subprocess.Popen(
        [kubectl_binary(), f"--kubeconfig={cluster.kubeconfig}", f"--context={cluster.context}",
         f"--namespace={mesh.name}", "exec", pod, "-c", "httpbin", "--",
         "timeout", "60", "sh", "-c", "while :; do :; done"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def busy_cpu() -> int:
            time.sleep(1)
            rows = table(mesh.kubectl("top", "pod", pod, "--containers"))
            cpu = {row["NAME"]: millicores(row["CPU(cores)"]) for row in rows}
            return cpu["httpbin"] if cpu["httpbin"] >= 100 else 0

        assert poll(busy_cpu, "the busy loop's CPU in `kubectl top`", timeout=45) >= 100
    finally:
        busy.terminate()
        busy.wait(timeout=15)


def test_top_pods_in_istio_system(cluster: ClusterRef, mesh: MeshNamespace) -> None:
    wait_available(cluster, "istio-system")
    rows = table(mesh.kubectl.run("top", "pods", "-n", "istio-system", namespaced=False).stdout)
    gateway = [row for row in rows if row["NAME"].startswith("istio-ingressgateway-")]
    assert gateway and mebibytes(gateway[0]["MEMORY(bytes)"]) > 5, rows


def test_top_nodes(mesh: MeshNamespace) -> None:
    # (a Node object another test left has no metrics: kubectl shows it as <unknown>)
    [row] = [r for r in table(mesh.kubectl("top", "nodes")) if r["CPU(cores)"] != "<unknown>"]
    assert row["NAME"].endswith("-control-plane")
    assert row["CPU(%)"].endswith("%") and row["MEMORY(%)"].endswith("%")
    assert mebibytes(row["MEMORY(bytes)"]) > 100, row


def test_a_missing_pod_and_a_pod_without_metrics_are_not_found(mesh: MeshNamespace) -> None:
    stderr = mesh.kubectl.fails("get", "--raw", f"/apis/metrics.k8s.io/v1beta1/namespaces/"
                                f"{mesh.name}/pods/no-such-pod")
    assert 'pods "no-such-pod" not found' in stderr
    mesh.apply(json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pending"},
                           "spec": {"nodeName": "elsewhere", "containers": [
                               {"name": "app", "image": "docker.io/library/nginx:1.27"}]}}))
    try:
        stderr = mesh.kubectl.fails("top", "pod", "pending")
        assert f'podmetrics.metrics.k8s.io "{mesh.name}/pending" not found' in stderr
    finally:
        mesh.kubectl("delete", "pod", "pending", "--wait=false")


@pytest.mark.parametrize("path", ["/apis/metrics.k8s.io/v1beta1/namespaces/x/nodes",
                                  "/apis/metrics.k8s.io/v1beta1/services",
                                  "/apis/metrics.k8s.io/v1alpha1/pods"])
def test_unknown_metrics_paths_are_not_found(mesh: MeshNamespace, path: str) -> None:
    assert "NotFound" in mesh.kubectl.fails("get", "--raw", path)
