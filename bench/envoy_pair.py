"""A bare pair of Envoys (a client-side and a server-side proxy) in front of one HTTP server: the
baseline the embedded mesh's per-hop latency is compared with, measured in the same run.

Both Envoys run with the mesh's own flags (`labs.embedded.mesh.envoy.ENVOY_FLAGS`) and the
features a sidecar hop may carry are switched on one at a time (`Features`), built by the same
functions that build the sidecars' listeners, so the benchmark can say what each costs: the
fault filter of the outbound listener, the two access logs (the learner's text line and the
telemetry JSON line), and tracing at a given sampling percentage to a Zipkin collector.

`hbone_pair` is the same measurement for ambient mode's L4 hop: two Envoys in ztunnel's role
speaking HBONE, built by the product's own builders.

`timing` adds a log of Envoy's own per-request timestamps (`%COMMON_DURATION%`, Envoy's access
log command operators, in µs) to each Envoy, which `EnvoyPair.timings` reads back: how long each
Envoy spent on the request and on the response, and how long it waited for its upstream.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labs.embedded.loopback import free_port
from labs.embedded.mesh.ca import MeshCA
from labs.embedded.mesh.envoy import (
    TRACING_RUNTIME,
    bootstrap,
    envoy_command,
    write_bootstrap,
    write_empty_xds,
)
from labs.embedded.mesh.istio.ambient.access_log import Workload, inbound_logs, outbound_logs
from labs.embedded.mesh.istio.ambient.hbone import (
    capture_listener,
    connect_route,
    hbone_cluster,
    proxy_connect_route,
    terminate_listener,
)
from labs.embedded.mesh.istio.ambient.l4_policy import route_rbac
from labs.embedded.mesh.istio.xds.listeners import fault, router
from labs.embedded.mesh.istio.xds.observability import (
    FILE_LOG,
    FILE_LOG_TYPE,
    TELEMETRY_FIELDS,
    ZIPKIN_CLUSTER,
    stdout_access_log,
    tracing,
)
from labs.embedded.mesh.kube_state import spiffe_id
from labs.embedded.mesh.listener_parts import static_cluster
from labs.embedded.mesh.proxyfiles import EnvoyResources, ProxyFiles
from labs.embedded.mesh.writer import XdsWriter

Obj = dict[str, Any]
HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
            ".HttpConnectionManager")
# Envoy's stream timestamps (access log `%COMMON_DURATION(START:END:us)%`, Envoy 1.31+): the
# request from its first byte received to its last byte sent upstream, the wait for the upstream
# (its first response byte), and the response until its last byte is handed to the downstream
# connection.
TIMING_SPANS = {"request": "DS_RX_BEG:US_TX_END", "upstream": "US_TX_END:US_RX_BEG",
                "response": "US_RX_BEG:DS_TX_END"}
TIMING_LOG = "timing.log"


@dataclass(frozen=True)
class Features:
    """What each hop of the pair does besides proxying."""

    fault: bool = False  # the fault filter (a sidecar's outbound listener has one)
    text_log: bool = False  # Istio's text line (to /dev/null: stdout is not read here)
    json_log: bool = False  # the telemetry JSON line, to a file
    sampling: float | None = None  # tracing with this random sampling %, None: no tracer
    zipkin_port: int = 0  # where spans go (needed when sampling is set)
    timing: bool = False  # a log of Envoy's own stream timestamps (`EnvoyPair.timings`)


def _cluster(name: str, port: int) -> Obj:
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": port}}}}]}]}}


def _file_log(path: Path, log_format: Obj) -> Obj:
    return {"name": FILE_LOG, "typed_config": {
        "@type": FILE_LOG_TYPE, "path": str(path), "log_format": log_format}}


def _hcm(name: str, cluster: str, features: Features, log_dir: Path) -> Obj:
    hcm: Obj = {
        "@type": HCM_TYPE, "stat_prefix": name, "codec_type": "AUTO",
        "http_protocol_options": {"allow_absolute_url": True},
        "generate_request_id": True, "normalize_path": True,
        "route_config": {"name": name, "virtual_hosts": [{
            "name": name, "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]},
        "http_filters": [*([fault()] if features.fault else []), router()],
    }
    logs = []
    if features.timing:
        line = " ".join(f"%COMMON_DURATION({span}:us)%" for span in TIMING_SPANS.values())
        logs.append(_file_log(log_dir / f"{name}.{TIMING_LOG}",
                              {"text_format_source": {"inline_string": line + "\n"}}))
    if features.text_log:
        text = stdout_access_log()
        text["typed_config"]["path"] = "/dev/null"
        logs.append(text)
    if features.json_log:
        logs.append(_file_log(log_dir / f"{name}.log", {"json_format": dict(TELEMETRY_FIELDS)}))
    if logs:
        hcm["access_log"] = logs
    if features.sampling is not None:
        hcm["tracing"] = tracing(features.sampling)
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}


def _bootstrap(name: str, listen: int, admin: int, upstream: int, features: Features,
               log_dir: Path) -> Obj:
    clusters = [_cluster("upstream", upstream)]
    if features.sampling is not None:
        clusters.append(_cluster(ZIPKIN_CLUSTER, features.zipkin_port))
    return {
        "node": {"id": name, "cluster": name},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "layered_runtime": {"layers": [{"name": "static",
                                        "static_layer": dict(TRACING_RUNTIME)}]},
        "static_resources": {
            "listeners": [{"name": name, "address": {"socket_address": {
                "address": "127.0.0.1", "port_value": listen}},
                "filter_chains": [{"filters": [_hcm(name, "upstream", features, log_dir)]}]}],
            "clusters": clusters},
    }


@dataclass
class EnvoyPair:
    """The running pair: send requests to `client_port` (absolute-form URLs or not)."""

    client_port: int
    admin_ports: tuple[int, int]
    pids: tuple[int, int]  # client, server
    log_dir: Path

    def timings(self) -> dict[str, dict[str, float]]:
        """"client"/"server" -> median µs of each of `TIMING_SPANS` over the requests logged so
        far (with `Features.timing`; the logs reach disk within Envoy's flush interval)."""
        out: dict[str, dict[str, float]] = {}
        for name in ("client", "server"):
            rows = [line.split() for line in
                    (self.log_dir / f"{name}.{TIMING_LOG}").read_text().splitlines()]
            rows = [row for row in rows if len(row) == len(TIMING_SPANS) and "-" not in row]
            out[name] = {span: statistics.median(int(row[i]) for row in rows)
                         for i, span in enumerate(TIMING_SPANS)} if rows else {}
        return out


@contextlib.contextmanager
def envoy_pair(backend_port: int, features: Features = Features()) -> Iterator[EnvoyPair]:
    """Start a client Envoy -> server Envoy -> `backend_port` chain; stop both on exit."""
    with tempfile.TemporaryDirectory(prefix="envoy-pair-") as tmp:
        root = Path(tmp)
        taken: list[int] = []
        for _ in range(4):  # server listener, server admin, client listener, client admin
            taken.append(free_port(taken))
        server_port, server_admin, client_port, client_admin = taken
        with _running(root, {
                "server": (_bootstrap("server", server_port, server_admin, backend_port,
                                      features, root), server_admin),
                "client": (_bootstrap("client", client_port, client_admin, server_port,
                                      features, root), client_admin)}) as (server, client):
            yield EnvoyPair(client_port, (client_admin, server_admin), (client.pid, server.pid),
                            root)


def _wait_ready(admin_port: int, timeout: float = 10.0) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with opener.open(f"http://127.0.0.1:{admin_port}/ready", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the bare Envoy with admin port {admin_port} never became ready")
        time.sleep(0.02)


HBONE_HOST = "web.bench:9080"  # what the client's CONNECT names


@contextlib.contextmanager
def hbone_pair(backend_port: int) -> Iterator[EnvoyPair]:
    """Ambient mode's L4 hop with the product's builders (labs/embedded/mesh/istio/ambient):
    a client's `CONNECT HBONE_HOST` to the source ztunnel's capture port, HBONE (HTTP/2 CONNECT
    over mutual TLS with the workloads' SPIFFE certificates) to the destination ztunnel, which
    checks its (empty) L4 policy and opens the connection to `backend_port`; both log ztunnel's
    access lines. Envoy plays ztunnel on both sides, as everywhere in the embedded mesh."""
    with tempfile.TemporaryDirectory(prefix="hbone-pair-") as tmp:
        root = Path(tmp)
        ca = MeshCA.load_or_create(root / "ca")
        src, dst = ProxyFiles(root / "src" / "xds"), ProxyFiles(root / "dst" / "xds")
        client = Workload("client-1", "bench", spiffe_id("bench", "client"))
        server = Workload("web-1", "bench", spiffe_id("bench", "web"), "web.bench.svc")
        for files, who in ((src, "client"), (dst, "web")):
            ca.write_sds(files, ca.issue("bench", who))
            write_empty_xds(files)
        taken: list[int] = []
        for _ in range(4):
            taken.append(free_port(taken))
        capture, hbone, src_admin, dst_admin = taken
        target = f"127.0.0.1:{backend_port}"
        writer = XdsWriter()
        writer.write(dst, EnvoyResources(
            listeners=[terminate_listener("hbone", hbone, dst, [
                connect_route(target, "app", route_rbac([], backend_port))],
                access_log=inbound_logs(root / "dst.log", server, []))],
            clusters=[static_cluster("app", backend_port)]))
        writer.write(src, EnvoyResources(
            listeners=[capture_listener("capture", capture, [{
                "name": "web", "domains": [HBONE_HOST],
                "routes": [proxy_connect_route("web", target, ("bench", client.name))]}],
                outbound_logs(root / "src.log", client, server, target))],
            clusters=[hbone_cluster("web", hbone, src, server.identity)]))
        with _running(root, {
                "dst": (bootstrap("dst", "dst", dst_admin, dst), dst_admin),
                "src": (bootstrap("src", "src", src_admin, src), src_admin)}) as (server, client):
            yield EnvoyPair(capture, (src_admin, dst_admin), (client.pid, server.pid), root)


@contextlib.contextmanager
def _running(root: Path, envoys: dict[str, tuple[Obj, int]]
             ) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Run one Envoy per name (its bootstrap, its admin port) with the mesh's flags, each ready
    (admin `/ready`) before this yields; stop them all on exit."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name, (config, _) in envoys.items():
            path = root / f"{name}.yaml"
            write_bootstrap(path, config)
            procs.append(subprocess.Popen(envoy_command(path), stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        for _, admin in envoys.values():
            _wait_ready(admin)
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
