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

from collections.abc import Mapping
from pathlib import Path

from ...workload import (
    ADMIN_PORT_ENV,
    AGENT_PORT,
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
from ..kube_state import TRUST_DOMAIN, Obj
from ..listener_parts import http_listener, static_cluster
from ..proxy_env import ProxyConfigError, exec_envoy, host_ports, port, required, start_files

CONTAINER = "istio-proxy"


def node_id(pod: str, namespace: str, proxy_type: str = SIDECAR_TYPE) -> str:
    """Istio's node id: `<type>~<ip>~<pod>.<namespace>~<namespace>.svc.<domain>`, the type being
    `sidecar` or `router` (a gateway)."""
    return f"{proxy_type}~127.0.0.1~{pod}.{namespace}~{namespace}.svc.{TRUST_DOMAIN}"


def status_resources(admin: int, host_ports: Mapping[str, int]) -> Obj:
    """The bootstrap's static listeners on the host ports of the pod's 15090 and 15020 (those
    the runtime allocated), as envoy_bootstrap.json writes them for 15090 and 15021."""
    stats = {"match": {"prefix": "/stats/prometheus"}, "route": {"cluster": "prometheus_stats"}}
    clusters, listeners = [static_cluster("prometheus_stats", admin)], []
    if prometheus := host_ports.get(str(PROMETHEUS_PORT)):
        listeners.append(http_listener("stats", prometheus, [stats]))
    if agent := host_ports.get(str(AGENT_PORT)):
        routes = [stats]
        if health := host_ports.get(str(STATUS_PORT)):
            clusters.append(static_cluster("status", health))
            routes.append({"match": {"prefix": "/healthz/ready"}, "route": {"cluster": "status"}})
        listeners.append(http_listener("agent", agent, routes))
    return {"listeners": listeners, "clusters": clusters}


def prepare(env: Mapping[str, str]) -> list[str]:
    """Write the bootstrap and empty xDS files; return the Envoy command line to run."""
    admin = port(env, ADMIN_PORT_ENV, CONTAINER)
    outbound = port(env, OUTBOUND_PORT_ENV, CONTAINER)
    pod = required(env, POD_NAME_ENV, CONTAINER)
    namespace = required(env, POD_NAMESPACE_ENV, CONTAINER)
    proxy_type = env.get(PROXY_TYPE_ENV) or SIDECAR_TYPE
    if proxy_type not in PROXY_TYPES:
        raise ProxyConfigError(f"{PROXY_TYPE_ENV}={proxy_type!r}: expected one of "
                                 f"{', '.join(PROXY_TYPES)}")
    home = Path(required(env, "HOME", CONTAINER))
    cluster = f"{env.get(SERVICE_CLUSTER_ENV) or pod}.{namespace}"
    argv, files = start_files(home, node_id(pod, namespace, proxy_type), cluster, admin,
                              status_resources(admin, host_ports(env)))
    print(f"{proxy_type} for {namespace}/{pod}: Envoy admin on 127.0.0.1:{admin}, outbound HTTP "
          f"proxy on 127.0.0.1:{outbound} once configured, configuration from {files.xds_dir}",
          flush=True)
    return argv


def main() -> None:
    exec_envoy(prepare, CONTAINER)


if __name__ == "__main__":
    main()
