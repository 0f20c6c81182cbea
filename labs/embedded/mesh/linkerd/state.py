"""A snapshot of what Linkerd's control plane reads: the Kubernetes objects every mesh reads
(KubeState) plus Linkerd's identity objects. Builders (xds.py) are pure functions of it.

The policy kinds (Server, AuthorizationPolicy, HTTPRoute...) are read for policy.py; where no
Server selects a port, its proxy's default inbound policy (the
`config.linkerd.io/default-inbound-policy` fixed into its environment at injection) applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...workload import LINKERD_PROXY_CONTAINER, has_linkerd_proxy, running_containers
from ..kube_state import Endpoint, KubeState, Obj

DEFAULT_POLICY_ENV = "LINKERD2_PROXY_INBOUND_DEFAULT_POLICY"
TRUST_ANCHORS_ENV = "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS"
DEFAULT_POLICY = "all-unauthenticated"  # linkerd2 charts values.yaml proxy.defaultInboundPolicy


@dataclass
class LinkerdState(KubeState):
    """What linkerd-destination and linkerd-identity read: pods, services, endpoints, and the
    trust roots ConfigMap / issuer Secret (None when missing)."""

    trust_roots: Obj | None = None
    issuer: Obj | None = None
    # policy.linkerd.io's inbound policy kinds (policy.py reads them)
    servers: list[Obj] = field(default_factory=list)
    server_authorizations: list[Obj] = field(default_factory=list)
    authorization_policies: list[Obj] = field(default_factory=list)
    meshtls_authentications: list[Obj] = field(default_factory=list)
    network_authentications: list[Obj] = field(default_factory=list)
    # HTTPRoutes of both groups: a Server parent makes one an inbound policy route
    linkerd_http_routes: list[Obj] = field(default_factory=list)
    gateway_http_routes: list[Obj] = field(default_factory=list)
    # outbound routing (routing.py): ServiceProfiles, and SMI TrafficSplits for the adaptor
    service_profiles: list[Obj] = field(default_factory=list)
    traffic_splits: list[Obj] = field(default_factory=list)

    def proxy_pods(self) -> list[Obj]:
        """Pods with a `linkerd-proxy`, not being deleted."""
        return [p for p in self.pods if has_linkerd_proxy(p)
                and not p["metadata"].get("deletionTimestamp")]


def is_meshed(endpoint: Endpoint) -> bool:
    """The endpoint is served by a Linkerd proxy (the destination controller then gives
    clients its identity, so they speak mTLS to it)."""
    return endpoint.pod is not None and has_linkerd_proxy(endpoint.pod)


def proxy_env(pod: Obj, name: str) -> str | None:
    """A literal `value` of the `linkerd-proxy` container's environment, as injection wrote it
    (linkerd2 `charts/partials/templates/_proxy.tpl`); None when absent or empty."""
    for container in running_containers(pod):
        if container.get("name") == LINKERD_PROXY_CONTAINER:
            for env in container.get("env") or []:
                if env.get("name") == name and env.get("value"):
                    return str(env["value"])
    return None


def default_inbound_policy(pod: Obj) -> str:
    """The proxy's default inbound policy, fixed in its environment at injection."""
    return proxy_env(pod, DEFAULT_POLICY_ENV) or DEFAULT_POLICY
