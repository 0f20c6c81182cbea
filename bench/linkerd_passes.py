"""Benchmark of the Linkerd control plane's passes beside Istio's, on the in-process API.

The cluster is bench/scale.py's (N Istio services, each with one meshed pod as the runtime
leaves it, a VirtualService and a DestinationRule) plus N Linkerd services: one pod each in the
shape `linkerd inject` writes (a `linkerd-proxy` native sidecar), with the runtime's port
annotations, a Service and its Endpoints; Linkerd's trust anchor and issuer are created as at
cluster start. No runtime, no Envoy, nothing listening.

Printed per N, median and spread of REPEATS runs, each against the Istio full pass measured in
the same run (the baseline, ratio 1):
- Istio full pass, Istio services only (the baseline);
- Istio full pass with the Linkerd services too (Istio's sidecars then route to N more
  services: the growth expected, nothing else);
- Linkerd pass with no Linkerd pod (what an Istio-only cluster pays per change);
- Linkerd first pass (issues N certificates, writes every file) and full pass (nothing
  changed: builds everything, writes nothing).

Run: `.venv/bin/python bench/linkerd_passes.py`.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for `labs`

from scale import NS, Cluster, control_plane, timed  # bench/scale.py: this folder is on sys.path

from labs.embedded.mesh.linkerd.controlplane import LinkerdControlPlane
from labs.embedded.mesh.linkerd.install import install_linkerd
from labs.embedded.workload import APP_PORTS, HOST_PORTS, PROXY_PORTS

Obj = dict[str, Any]
SIZES = (10, 50)
REPEATS = 5
APP_PORT = 8080
PORT_BASE = 40000


def add_linkerd_services(cluster: Cluster, count: int) -> None:
    for i in range(count):
        name = f"l5d-{i}"
        host, app, admin, outbound, proxy_admin = (PORT_BASE + 5 * i + k for k in range(5))
        pod = cluster._create("", "pods", {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{name}-1", "labels": {
                "app": name, "linkerd.io/control-plane-ns": "linkerd"}, "annotations": {
                HOST_PORTS: json.dumps({str(APP_PORT): host, "4191": proxy_admin}),
                APP_PORTS: json.dumps({str(APP_PORT): app}),
                PROXY_PORTS: json.dumps({"admin": admin, "outbound": outbound})}},
            "spec": {"serviceAccountName": name,
                     "initContainers": [{"name": "linkerd-proxy", "restartPolicy": "Always",
                                         "image": "cr.l5d.io/linkerd/proxy:edge-26.7.2",
                                         "ports": [{"containerPort": 4143},
                                                   {"containerPort": 4191}]}],
                     "containers": [{"name": name, "image": f"docker.io/example/{name}:1",
                                     "ports": [{"containerPort": APP_PORT}]}]}})
        cluster._create("", "services", {"metadata": {"name": name}, "spec": {
            "selector": {"app": name},
            "ports": [{"name": "http", "port": APP_PORT, "targetPort": APP_PORT}]}})
        cluster._create("", "endpoints", {"metadata": {"name": name}, "subsets": [{
            "addresses": [{"ip": "127.0.0.1", "targetRef": {
                "kind": "Pod", "name": pod["metadata"]["name"], "namespace": NS,
                "uid": pod["metadata"]["uid"]}}],
            "ports": [{"name": "http", "port": host, "protocol": "TCP"}]}]})


def measure(services: int) -> dict[str, list[float]]:
    cluster = Cluster(services)
    install_linkerd(cluster.api)
    out: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as root:
        istio = control_plane(cluster, Path(root) / "istio")
        istio.sync(None)
        out["istio"] = [timed(lambda: istio.sync(None)) for _ in range(REPEATS)]
        empty = LinkerdControlPlane(cluster.api, Path(root) / "none", 15999)
        out["linkerd, no proxy"] = [timed(empty.sync) for _ in range(REPEATS)]
        add_linkerd_services(cluster, services)
        istio.sync(None)
        out["istio + linkerd services"] = [timed(lambda: istio.sync(None))
                                           for _ in range(REPEATS)]
        first = []
        plane = None
        for repeat in range(REPEATS):
            plane = LinkerdControlPlane(cluster.api, Path(root) / f"l5d-{repeat}", 15999)
            first.append(timed(plane.sync))
        assert plane is not None
        out["linkerd first pass"] = first
        out["linkerd full pass"] = [timed(plane.sync) for _ in range(REPEATS)]
    return out


def main() -> None:
    for services in SIZES:
        results = measure(services)
        baseline = min(results["istio"])
        print(f"N={services} services of each mesh (Istio full pass = 1, fastest runs)")
        for what, values in results.items():
            print(f"  {what:28s} {statistics.median(values):8.1f} ms "
                  f"({min(values):.1f}-{max(values):.1f})  x{min(values) / baseline:.2f}")


if __name__ == "__main__":
    main()
