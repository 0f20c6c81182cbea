"""Benchmark of the mesh control plane's scale: a pass and the per-proxy push at 10, 50 and 100
services.

Each size runs in a child process of its own (so its RSS and allocator state start clean), on an
in-process API (`ObjectApi` over an in-memory store with the course CRDs) and a
`MeshControlPlane` on a temporary state directory, like tests/test_controlplane.py: no runtime,
no Envoy, nothing listening. Each service `svc-<i>` has one meshed pod as the runtime leaves it
(sidecar container, port annotations), its Endpoints, a VirtualService (subset v1, a timeout and
retries) and a DestinationRule (subsets v1/v2, a traffic policy); the node forwarder is
programmed too, as in the daemon. Every sidecar sees every service (no `Sidecar` scoping, as in
Istio without one), so a proxy's files grow linearly with N and a whole pass grows as N²: the
figures to watch are those *per proxy*, and per proxy per service.

Printed per N, with the median and the spread (min-max) of REPEATS runs:
- first pass: a fresh control plane on a fresh state directory (issues N certificates, writes
  every file);
- full pass: `sync(None)` again with nothing changed (builds everything, writes nothing: what
  every debounced change costs the daemon before the writer skips unchanged files);
- incremental pass: one VirtualService changed, `sync({virtualservices})`; with how many of
  the sidecars' cds, rds and lds files it rewrote (every sidecar sees that host, so each gets
  a new rds, as from istiod without `Sidecar` scoping; their cds and lds should stay);
- bytes written per proxy (its cds + rds + lds);
- memory: tracemalloc's peak during a first pass and what the control plane still holds after it
  (the daemon's steady cost), and the child's RSS growth over the empty cluster;
- ratios against N=10 per proxy and per proxy per service, from each size's fastest run (other
  processes on a shared machine only ever add time): a pass linear per proxy keeps the
  per-proxy ratio at N/10 (x5, x10) and the per-proxy-per-service ratio near 1.

Run: `.venv/bin/python bench/scale.py` (`--profile 100` prints cProfile's top functions of full
passes at N=100 instead).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for `labs`

from labs.embedded import controllers
from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.resources import ResourceRegistry, ResourceType
from labs.embedded.apiserver.store import Store
from labs.embedded.daemon import install_course_crds
from labs.embedded.mesh.forwarder import NodeForwarder
from labs.embedded.mesh.istio.controlplane import MeshControlPlane, sidecar_xds_dir
from labs.embedded.paths import pods_dir
from labs.embedded.workload import APP_PORTS, HOST_PORTS, PROXY_PORTS

Obj = dict[str, Any]
SIZES = (10, 50, 100)
REPEATS = 5
NS = "default"
APP_PORT = 9080
# Port numbers only written into configuration: nothing binds them.
TELEMETRY_PORT, FORWARDER_PORT, FORWARDER_ADMIN = 15999, 15998, 15997
PORT_BASE = 20000
VS_KEY = "networking.istio.io/virtualservices"
XDS_FILES = ("cds.yaml", "rds.yaml", "lds.yaml")


class Cluster:
    """The in-process API with N services as the runtime and controllers would leave them."""

    def __init__(self, services: int) -> None:
        self.api = ObjectApi(Store(None), ResourceRegistry())
        install_course_crds(self.api)
        asyncio.run(controllers.bootstrap(self.api))
        self.pods = [self._service(i) for i in range(services)]

    def rt(self, group: str, plural: str) -> ResourceType:
        found = self.api.registry.lookup(group, "v1", plural)
        assert found is not None
        return found

    def _create(self, group: str, plural: str, obj: Obj) -> Obj:
        return self.api.create(self.rt(group, plural), NS, obj, validate=False).object

    def _service(self, i: int) -> Obj:
        name = f"svc-{i}"
        host, app, admin, outbound = (PORT_BASE + 4 * i + k for k in range(4))
        pod = self._create("", "pods", {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{name}-v1", "labels": {"app": name, "version": "v1"},
                         "annotations": {
                             HOST_PORTS: json.dumps({str(APP_PORT): host, "15021": host + 40000}),
                             APP_PORTS: json.dumps({str(APP_PORT): app}),
                             PROXY_PORTS: json.dumps({"admin": admin, "outbound": outbound})}},
            "spec": {"serviceAccountName": name, "containers": [
                {"name": name, "image": f"docker.io/example/{name}:1",
                 "ports": [{"containerPort": APP_PORT}]},
                {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.30.0"}]}})
        self._create("", "services", {"metadata": {"name": name}, "spec": {
            "selector": {"app": name},
            "ports": [{"name": "http", "port": APP_PORT, "targetPort": APP_PORT}]}})
        self._create("", "endpoints", {"metadata": {"name": name}, "subsets": [{
            "addresses": [{"ip": "127.0.0.1", "targetRef": {
                "kind": "Pod", "name": pod["metadata"]["name"], "namespace": NS,
                "uid": pod["metadata"]["uid"]}}],
            "ports": [{"name": "http", "port": host, "protocol": "TCP"}]}]})
        self._create("networking.istio.io", "virtualservices", {
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name}, "spec": virtual_service(name, "v1")})
        self._create("networking.istio.io", "destinationrules", {
            "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": name}, "spec": {
                "host": name,
                "trafficPolicy": {"connectionPool": {"http": {"http1MaxPendingRequests": 64}},
                                  "outlierDetection": {"consecutive5xxErrors": 5}},
                "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                            {"name": "v2", "labels": {"version": "v2"}}]}})
        return pod

    def change_virtual_service(self, name: str, subset: str) -> None:
        rt = self.rt("networking.istio.io", "virtualservices")
        vs = self.api.find(rt, NS, name)
        assert vs is not None
        self.api.update(rt, NS, name, {**vs, "spec": virtual_service(name, subset)},
                        validate=False)


def virtual_service(name: str, subset: str) -> Obj:
    return {"hosts": [name], "http": [{
        "route": [{"destination": {"host": name, "subset": subset}}],
        "timeout": "5s", "retries": {"attempts": 2, "perTryTimeout": "2s"}}]}


def control_plane(cluster: Cluster, state_dir: Path) -> MeshControlPlane:
    forwarder = NodeForwarder(state_dir, FORWARDER_PORT, FORWARDER_ADMIN)
    return MeshControlPlane(cluster.api, state_dir, TELEMETRY_PORT, forwarder)


def xds_inodes(state_dir: Path, cluster: Cluster) -> dict[Path, int]:
    """Each sidecar xDS file's inode: the writer renames a new file over a changed one."""
    out = {}
    for pod in cluster.pods:
        xds = sidecar_xds_dir(pods_dir(state_dir), pod)
        for name in XDS_FILES:
            path = xds / name
            out[path] = path.stat().st_ino
    return out


def timed(fn: Callable[[], object]) -> float:
    """Wall time of one call in ms."""
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def measure(services: int) -> Obj:
    """Every figure for one size (run in a child process)."""
    rss_start = rss_kb()
    cluster = Cluster(services)
    rss_cluster = rss_kb()
    with tempfile.TemporaryDirectory() as root:
        first, full, incremental, rewritten = [], [], [], []
        plane = None
        for repeat in range(REPEATS):
            state_dir = Path(root) / f"first-{repeat}"
            plane = control_plane(cluster, state_dir)
            first.append(timed(lambda p=plane: p.sync(None)))
        assert plane is not None
        inodes = xds_inodes(state_dir, cluster)
        xds_bytes = sum(path.stat().st_size for path in inodes)
        for _ in range(REPEATS):
            full.append(timed(lambda: plane.sync(None)))
        assert xds_inodes(state_dir, cluster) == inodes, "a full pass rewrote unchanged files"
        for repeat in range(REPEATS):
            cluster.change_virtual_service("svc-0", "v2" if repeat % 2 == 0 else "v1")
            incremental.append(timed(lambda: plane.sync({VS_KEY})))
            now = xds_inodes(state_dir, cluster)
            rewritten.append([sum(1 for p in now if now[p] != inodes[p] and p.name == name)
                              for name in XDS_FILES])
            inodes = now
        rss_passes = rss_kb()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        held = control_plane(cluster, Path(root) / "traced")
        held.sync(None)
        after = tracemalloc.take_snapshot()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        retained = sum(s.size_diff for s in after.compare_to(before, "filename"))
    return {"n": services, "first": first, "full": full, "incremental": incremental,
            "rewritten": rewritten, "bytes": xds_bytes, "peak": peak, "retained": retained,
            "rss_cluster": rss_cluster - rss_start, "rss_passes": rss_passes - rss_cluster}


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} ms ({min(values):.1f}-{max(values):.1f})"


def report(results: list[Obj]) -> None:
    base = results[0]
    n0 = base["n"]

    def per_proxy(r: Obj, key: str) -> float:
        value = r[key]
        return (min(value) if isinstance(value, list) else value) / r["n"]

    def ratios(r: Obj, key: str) -> str:
        ratio = per_proxy(r, key) / per_proxy(base, key)
        return f"x{ratio:5.2f} per proxy, x{ratio * n0 / r['n']:4.2f} per proxy per service"

    print(f"mesh control plane, N services (1 meshed pod, 1 VirtualService, 1 DestinationRule "
          f"each); median (min-max) of {REPEATS}; per proxy and ratios from the fastest run "
          f"(the least disturbed on a shared machine), against N={n0} measured in this run")
    for r in results:
        n = r["n"]
        print(f"N={n}:")
        for key, what in (("first", "first pass (certs, every file)"),
                          ("full", "full pass, nothing changed"),
                          ("incremental", "one VirtualService changed")):
            print(f"  {what:32s} {spread(r[key])}  {per_proxy(r, key):6.2f} ms/proxy  "
                  f"{ratios(r, key)}")
        counts = ", ".join(f"{name} {max(c[i] for c in r['rewritten'])}"
                           for i, name in enumerate(XDS_FILES))
        print(f"  {'sidecar files it rewrote (max)':32s} {counts} of {n} sidecars each")
        print(f"  {'xDS bytes per proxy':32s} {per_proxy(r, 'bytes') / 1024:8.1f} KiB  "
              f"{ratios(r, 'bytes')}")
        print(f"  {'tracemalloc peak of a first pass':32s} {r['peak'] / 2**20:8.1f} MiB  "
              f"{ratios(r, 'peak')}")
        print(f"  {'held by the control plane after':32s} {r['retained'] / 2**20:8.1f} MiB  "
              f"{ratios(r, 'retained')}")
        print(f"  {'RSS growth: objects / passes':32s} {r['rss_cluster'] / 1024:8.1f} MiB / "
              f"{r['rss_passes'] / 1024:.1f} MiB")


def profile(services: int) -> None:
    cluster = Cluster(services)
    with tempfile.TemporaryDirectory() as root:
        plane = control_plane(cluster, Path(root))
        plane.sync(None)
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(3):
            plane.sync(None)
        profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child: one size, JSON
    parser.add_argument("--profile", type=int, metavar="N",
                        help="print cProfile's top functions of full passes at N services")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    if args.profile:
        profile(args.profile)
        return
    results = []
    for n in SIZES:
        child = subprocess.run([sys.executable, __file__, "--one", str(n)], check=True,
                               capture_output=True, text=True)
        results.append(json.loads(child.stdout.splitlines()[-1]))
    report(results)


if __name__ == "__main__":
    main()
