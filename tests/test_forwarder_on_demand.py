"""Does a cluster start without the node forwarder's Envoy while every pod it runs is meshed or
dials no service (the ingress gateway, Prometheus), and does a pod without a sidecar started
afterwards still reach a service by name at once (the forwarder starts before its containers)?

One cluster of its own (the session's shared one may have started its forwarder already),
stopped at the end.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from labs.cluster import EmbeddedCluster, kubectl_binary

TIMEOUT = 120
NAMESPACE = "plain"
WEB = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: example/web:1, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 8080}]
"""
CLIENT = """
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  containers: [{name: curl, image: curlimages/curl, command: [sleep, infinity]}]
"""


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    cluster = EmbeddedCluster("ondemand", tmp_path_factory.mktemp("meshlab-ondemand"))
    cluster.up()
    try:
        yield cluster
    finally:
        cluster.down()


def kubectl(cluster: EmbeddedCluster, *args: str, input: str | None = None) -> str:
    result = subprocess.run([kubectl_binary(), f"--kubeconfig={cluster.kubeconfig}", *args],
                            input=input, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    return result.stdout


def forwarder_envoys(cluster: EmbeddedCluster) -> list[int]:
    """Pids of Envoys running the cluster's forwarder bootstrap."""
    bootstrap = str(cluster.paths.dir / "forwarder" / "bootstrap.yaml").encode()
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if bootstrap in argv:
            pids.append(int(cmdline.parent.name))
    return pids


def test_forwarder_waits_for_a_pod_without_sidecar(own_cluster: EmbeddedCluster) -> None:
    kubectl(own_cluster, "-n", "istio-system", "wait", "--for=condition=Ready", "pod", "--all",
            f"--timeout={TIMEOUT}s")
    assert forwarder_envoys(own_cluster) == []

    kubectl(own_cluster, "create", "namespace", NAMESPACE)
    kubectl(own_cluster, "-n", NAMESPACE, "apply", "-f", "-", input=WEB + "---" + CLIENT)
    kubectl(own_cluster, "-n", NAMESPACE, "wait", "--for=condition=Ready", "pod", "--all",
            f"--timeout={TIMEOUT}s")
    running = forwarder_envoys(own_cluster)
    assert len(running) == 1 and os.path.exists(f"/proc/{running[0]}")
    # the client's first request by name: through the forwarder, with no retry
    out = kubectl(own_cluster, "-n", NAMESPACE, "exec", "client", "--", "curl", "-s",
                  "-o", "/dev/null", "-w", "%{http_code}", f"http://web.{NAMESPACE}:8080/")
    assert out == "200"
