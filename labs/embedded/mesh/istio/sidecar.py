"""What the `istio-proxy` container runs: write this sidecar's Envoy bootstrap, then become Envoy.

The runtime passes the proxy's ports in the environment (names: labs/embedded/workload.py);
HOME is the container's directory and the control plane writes the proxy's listeners, clusters
and routes into `$HOME/xds`. Like
Istio's bootstrap (istio/istio tools/packaging/common/envoy_bootstrap.json) the Envoy serves,
from its start, `/stats/prometheus` on the pod's port 15090 (its admin stats, through the static
cluster `prometheus_stats`) and pilot-agent's status port 15020: `/stats/prometheus` (Envoy's
stats only: there is no agent process whose metrics or app metrics it could merge) and
`/healthz/ready`, forwarded to the 15021 health listener the control plane writes once the proxy
is configured (in Istio it is 15021 that forwards to the agent; the answer is the same).

The process replaces itself with Envoy (`execv`), so the container's pid is Envoy's, stopping the
container stops Envoy, and Envoy's stdout (the access log) is the container's log.

    python -m labs.embedded.mesh.istio.sidecar
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from ...workload import (
    ADMIN_PORT_ENV,
    AGENT_PORT,
    HOST_PORTS_ENV,
    OUTBOUND_PORT_ENV,
    POD_NAME_ENV,
    POD_NAMESPACE_ENV,
    PROMETHEUS_PORT,
    PROXY_TYPE_ENV,
    PROXY_TYPES,
    SERVICE_CLUSTER_ENV,
    SIDECAR_TYPE,
    STATUS_PORT,
)
from ..envoy import EnvoyNotFound, bootstrap, envoy_command, write_bootstrap, write_empty_xds
from ..kube_state import TRUST_DOMAIN, Obj
from ..proxyfiles import ProxyFiles
from .xds.listeners import http_connection_manager, router, socket_address

BOOTSTRAP_FILE = "bootstrap.yaml"


class SidecarConfigError(Exception):
    """The environment does not say enough to start this sidecar."""


def node_id(pod: str, namespace: str, proxy_type: str = SIDECAR_TYPE) -> str:
    """Istio's node id: `<type>~<ip>~<pod>.<namespace>~<namespace>.svc.<domain>`, the type being
    `sidecar` or `router` (a gateway)."""
    return f"{proxy_type}~127.0.0.1~{pod}.{namespace}~{namespace}.svc.{TRUST_DOMAIN}"


def xds_files(home: Path) -> ProxyFiles:
    """Where a sidecar whose container directory is `home` reads its configuration."""
    return ProxyFiles(home / "xds")


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "")
    if not value:
        raise SidecarConfigError(
            f"{name} is not set: the istio-proxy container is started by the embedded "
            "cluster's runtime, which sets it (run the pod in the cluster, not by hand)")
    return value


def _port(env: Mapping[str, str], name: str) -> int:
    raw = _required(env, name)
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise SidecarConfigError(f"{name}={raw!r} is not a TCP port number")
    return int(raw)


def _static_cluster(name: str, port: int) -> Obj:
    return {"name": name, "type": "STATIC", "connect_timeout": "0.250s",
            "load_assignment": {"cluster_name": name, "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": socket_address(port)}}]}]}}


def _static_listener(name: str, port: int, routes: list[Obj]) -> Obj:
    route_config = {"virtual_hosts": [{"name": "backend", "domains": ["*"], "routes": routes}]}
    hcm = http_connection_manager(name, {"route_config": route_config}, [router()])
    return {"name": name, "address": socket_address(port), "filter_chains": [{"filters": [hcm]}]}


def status_resources(admin: int, host_ports: Mapping[str, int]) -> Obj:
    """The bootstrap's static listeners on the host ports of the pod's 15090 and 15020 (those
    the runtime allocated), as envoy_bootstrap.json writes them for 15090 and 15021."""
    stats = {"match": {"prefix": "/stats/prometheus"}, "route": {"cluster": "prometheus_stats"}}
    clusters, listeners = [_static_cluster("prometheus_stats", admin)], []
    if prometheus := host_ports.get(str(PROMETHEUS_PORT)):
        listeners.append(_static_listener("stats", prometheus, [stats]))
    if agent := host_ports.get(str(AGENT_PORT)):
        routes = [stats]
        if health := host_ports.get(str(STATUS_PORT)):
            clusters.append(_static_cluster("status", health))
            routes.append({"match": {"prefix": "/healthz/ready"}, "route": {"cluster": "status"}})
        listeners.append(_static_listener("agent", agent, routes))
    return {"listeners": listeners, "clusters": clusters}


def _host_ports(env: Mapping[str, str]) -> dict[str, int]:
    raw = env.get(HOST_PORTS_ENV) or "{}"
    try:
        ports = json.loads(raw)
        return {str(k): int(v) for k, v in ports.items()}
    except (ValueError, TypeError, AttributeError):
        raise SidecarConfigError(f"{HOST_PORTS_ENV}={raw!r} is not a JSON object of "
                                 "container port -> host port") from None


def prepare(env: Mapping[str, str]) -> list[str]:
    """Write the bootstrap and empty xDS files; return the Envoy command line to run."""
    admin = _port(env, ADMIN_PORT_ENV)
    outbound = _port(env, OUTBOUND_PORT_ENV)
    pod, namespace = _required(env, POD_NAME_ENV), _required(env, POD_NAMESPACE_ENV)
    proxy_type = env.get(PROXY_TYPE_ENV) or SIDECAR_TYPE
    if proxy_type not in PROXY_TYPES:
        raise SidecarConfigError(f"{PROXY_TYPE_ENV}={proxy_type!r}: expected one of "
                                 f"{', '.join(PROXY_TYPES)}")
    home = Path(_required(env, "HOME"))
    files = xds_files(home)
    write_empty_xds(files)
    path = home / BOOTSTRAP_FILE
    cluster = f"{env.get(SERVICE_CLUSTER_ENV) or pod}.{namespace}"
    write_bootstrap(path, bootstrap(node_id(pod, namespace, proxy_type), cluster, admin, files,
                                    status_resources(admin, _host_ports(env))))
    print(f"{proxy_type} for {namespace}/{pod}: Envoy admin on 127.0.0.1:{admin}, outbound HTTP "
          f"proxy on 127.0.0.1:{outbound} once configured, configuration from {files.xds_dir}",
          flush=True)
    return envoy_command(path)


INOTIFY_PER_ENVOY = 5  # Envoy watches its LDS/CDS/RDS and two SDS files
INOTIFY_LIMIT = Path("/proc/sys/fs/inotify/max_user_instances")
COMFORTABLE_LIMIT = 1024


def _inotify_instances_in_use() -> int:
    count = 0
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            count += sum(1 for fd in fd_dir.iterdir()
                         if os.readlink(fd) == "anon_inode:inotify")
        except OSError:
            continue  # a process that ended, or one we may not inspect
    return count


def check_inotify() -> None:
    """Envoy aborts with a bare assertion when it cannot get an inotify instance; say why and
    how to fix it instead. Only counted when the limit is low (counting scans /proc)."""
    try:
        limit = int(INOTIFY_LIMIT.read_text())
    except (OSError, ValueError):
        return
    if limit >= COMFORTABLE_LIMIT:
        return
    if _inotify_instances_in_use() + INOTIFY_PER_ENVOY > limit:
        raise SidecarConfigError(
            f"this machine's inotify instances are used up (fs.inotify.max_user_instances="
            f"{limit}; each sidecar Envoy needs {INOTIFY_PER_ENVOY}). Raise the limit with "
            f"`sudo sysctl -w fs.inotify.max_user_instances={COMFORTABLE_LIMIT}` "
            "(`./run lab` does it when run as root), or stop other clusters (`meshlab down`)")


def main() -> None:
    try:
        check_inotify()
        argv = prepare(os.environ)
    except (SidecarConfigError, EnvoyNotFound) as exc:
        print(f"istio-proxy: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
