"""What the `linkerd-proxy` container runs: a real Envoy in linkerd2-proxy's place.

The runtime passes the proxy's ports in the environment (names: labs/embedded/workload.py), as
for Istio's sidecar; HOME is the container's directory, and the embedded Linkerd control plane
(controlplane.py) writes the proxy's listeners, clusters, routes and identity certificate into
`$HOME/xds`. Envoy starts with none of them: its admin API listens on an internal port only,
and everything linkerd2-proxy serves — the admin server on 4191 (`/live`, `/ready`), the
outbound proxy (4140's role) and the inbound listeners (4143's role: without iptables, one per
app port, on that port's host port) — is written by the control plane once the proxy has its
certificate, so `/ready` answers only then (linkerd2-proxy too is ready once it has its
identity). The pod's own declared port 4143 is allocated a host port and left idle.

The process replaces itself with Envoy (`execv`): the container's pid is Envoy's and Envoy's
stdout (its access log) is the container's log.

    python -m labs.embedded.mesh.linkerd.proxy
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ...workload import (
    ADMIN_PORT_ENV,
    LINKERD_PROXY_CONTAINER,
    OUTBOUND_PORT_ENV,
    POD_NAME_ENV,
    POD_NAMESPACE_ENV,
    SERVICE_CLUSTER_ENV,
)
from ..proxy_env import exec_envoy, port, required, start_files

LOCAL_NAME_ENV = "LINKERD2_PROXY_IDENTITY_LOCAL_NAME"  # set by injection (_proxy.tpl)


def node_id(pod: str, namespace: str) -> str:
    """The Envoy node id: the pod, as linkerd2-proxy's LINKERD2_PROXY_DESTINATION_CONTEXT names
    it to the destination controller."""
    return f"linkerd-proxy~{pod}.{namespace}"


def prepare(env: Mapping[str, str]) -> list[str]:
    """Write the bootstrap and empty xDS files; return the Envoy command line to run."""
    admin = port(env, ADMIN_PORT_ENV, LINKERD_PROXY_CONTAINER)
    outbound = port(env, OUTBOUND_PORT_ENV, LINKERD_PROXY_CONTAINER)
    pod = required(env, POD_NAME_ENV, LINKERD_PROXY_CONTAINER)
    namespace = required(env, POD_NAMESPACE_ENV, LINKERD_PROXY_CONTAINER)
    home = Path(required(env, "HOME", LINKERD_PROXY_CONTAINER))
    cluster = f"{env.get(SERVICE_CLUSTER_ENV) or pod}.{namespace}"
    argv, files = start_files(home, node_id(pod, namespace), cluster, admin)
    identity = env.get(LOCAL_NAME_ENV) or "(no LINKERD2_PROXY_IDENTITY_LOCAL_NAME)"
    print(f"linkerd-proxy for {namespace}/{pod} (identity {identity}): an Envoy in "
          f"linkerd2-proxy's place; Envoy admin on 127.0.0.1:{admin}, outbound proxy on "
          f"127.0.0.1:{outbound} once configured, configuration from {files.xds_dir}",
          flush=True)
    return argv


def main() -> None:
    exec_envoy(prepare, LINKERD_PROXY_CONTAINER)


if __name__ == "__main__":
    main()
