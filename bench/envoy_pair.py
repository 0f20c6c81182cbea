"""A bare pair of Envoys (a client-side and a server-side proxy) in front of one HTTP server: the
baseline the embedded mesh's per-hop latency is compared with, measured in the same run.

Both Envoys run with the mesh's own flags (`labs.embedded.mesh.envoy.ENVOY_FLAGS`) and the
features a sidecar hop may carry are switched on one at a time (`Features`), so the benchmark can
say what each costs: the two access logs (the learner's text line to stdout and the telemetry
JSON line), and tracing at a given sampling percentage to a Zipkin collector.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from labs.embedded.loopback import free_port
from labs.embedded.mesh.envoy import ENVOY_FLAGS, TRACING_RUNTIME, envoy_binary
from labs.embedded.mesh.xds.observability import (
    ISTIO_TEXT_FORMAT,
    TELEMETRY_FIELDS,
    ZIPKIN_CLUSTER,
)

Obj = dict[str, Any]
HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
            ".HttpConnectionManager")
FILE_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"


@dataclass(frozen=True)
class Features:
    """What each hop of the pair does besides proxying."""

    text_log: bool = False  # Istio's text line (to /dev/null: stdout is not read here)
    json_log: bool = False  # the telemetry JSON line, to a file
    sampling: float | None = None  # tracing with this random sampling %, None: no tracer
    zipkin_port: int = 0  # where spans go (needed when sampling is set)


def _cluster(name: str, port: int) -> Obj:
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": port}}}}]}]}}


def _hcm(name: str, cluster: str, features: Features, log_dir: Path) -> Obj:
    hcm: Obj = {
        "@type": HCM_TYPE, "stat_prefix": name, "codec_type": "AUTO",
        "http_protocol_options": {"allow_absolute_url": True},
        "generate_request_id": True, "normalize_path": True,
        "route_config": {"name": name, "virtual_hosts": [{
            "name": name, "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    logs = []
    if features.text_log:
        logs.append({"name": "envoy.access_loggers.file", "typed_config": {
            "@type": FILE_LOG_TYPE, "path": "/dev/null",
            "log_format": {"text_format_source": {"inline_string": ISTIO_TEXT_FORMAT}}}})
    if features.json_log:
        logs.append({"name": "envoy.access_loggers.file", "typed_config": {
            "@type": FILE_LOG_TYPE, "path": str(log_dir / f"{name}.log"),
            "log_format": {"json_format": dict(TELEMETRY_FIELDS)}}})
    if logs:
        hcm["access_log"] = logs
    if features.sampling is not None:
        hcm["tracing"] = {
            "provider": {"name": "envoy.tracers.zipkin", "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
                "collector_cluster": ZIPKIN_CLUSTER, "collector_endpoint": "/api/v2/spans",
                "collector_endpoint_version": "HTTP_JSON", "shared_span_context": False}},
            "random_sampling": {"value": features.sampling}}
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


@contextlib.contextmanager
def envoy_pair(backend_port: int, features: Features = Features()) -> Iterator[EnvoyPair]:
    """Start a client Envoy -> server Envoy -> `backend_port` chain; stop both on exit."""
    with tempfile.TemporaryDirectory(prefix="envoy-pair-") as tmp:
        root = Path(tmp)
        taken: list[int] = []
        for _ in range(4):  # server listener, server admin, client listener, client admin
            taken.append(free_port(taken))
        server_port, server_admin, client_port, client_admin = taken
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for name, listen, admin, upstream in (
                    ("server", server_port, server_admin, backend_port),
                    ("client", client_port, client_admin, server_port)):
                config = root / f"{name}.yaml"
                config.write_text(yaml.safe_dump(
                    _bootstrap(name, listen, admin, upstream, features, root)))
                procs.append(subprocess.Popen(
                    [str(envoy_binary()), "-c", str(config), *ENVOY_FLAGS],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            for admin in (server_admin, client_admin):
                _wait_ready(admin)
            yield EnvoyPair(client_port, (client_admin, server_admin))
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


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
