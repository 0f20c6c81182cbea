"""The pod contract between the runtime (runtime/, the "kubelet") and the mesh (mesh/): what the
runtime writes on a pod and into its sidecar's environment, and what the control plane and the
sidecar read back. Both packages import it; neither imports the other.

Pod annotations, written by the runtime before any container starts (runtime/network.py):
- `meshlab.dev/host-ports` {containerPort: hostPort}: the pod's public ports, listed in
  Endpoints (controllers/endpoints.py);
- `meshlab.dev/app-ports` {containerPort: port}: where the app really listens when a sidecar
  captures its traffic; the sidecar's inbound listener on the host port forwards there;
- `meshlab.dev/proxy-ports` {"admin": port, "outbound": port}: the sidecar's Envoy admin and
  outbound HTTP-proxy ports.
Each has one reader here, returning the JSON object's own string keys (`"9080"`, `"admin"`).

The sidecar is the container Istio names `istio-proxy` (labs/istio_names.py); an image of
`SIDECAR_REPOSITORIES` runs `SIDECAR_MODULE` (mesh/istio/sidecar.py), which reads the `*_ENV`
variables the runtime sets. Linkerd's proxy is the container `linkerd-proxy`, injected as a
native sidecar (an init container with `restartPolicy: Always`); an image of
`LINKERD_PROXY_REPOSITORIES` runs `LINKERD_PROXY_MODULE` (mesh/linkerd/proxy.py). Either is the
pod's *mesh proxy*: the runtime gives its pod the same capture mode and proxy environment.
Istio's well-known sidecar ports get host ports like declared container ports. Each pod has a
folder `pod_dir_name(pod)` in the cluster's pods directory (`ClusterPaths.pods_dir`), with a
directory per container (its HOME) where the control plane writes the sidecar's xDS files.
"""

from __future__ import annotations

import json
from typing import Any

from labs.istio_names import SIDECAR_CONTAINER
from labs.versions import version

Obj = dict[str, Any]

HOST_PORTS = "meshlab.dev/host-ports"
APP_PORTS = "meshlab.dev/app-ports"
PROXY_PORTS = "meshlab.dev/proxy-ports"

# Istio's proxy image, with or without a registry (docker.io, gcr.io/istio-release …); the
# first is the one injection and gateway deployments write
SIDECAR_REPOSITORIES = ("istio/proxyv2", "istio-release/proxyv2")
SIDECAR_MODULE = "labs.embedded.mesh.istio.sidecar"  # what such an image runs, `python -m`
# Linkerd's proxy (linkerd/linkerd2 charts/partials/templates/_proxy.tpl): its container, image
# (`cr.l5d.io/linkerd/proxy`, any registry) and the well-known ports of its listeners
LINKERD_PROXY_CONTAINER = "linkerd-proxy"
LINKERD_PROXY_REPOSITORIES = ("linkerd/proxy",)
LINKERD_PROXY_MODULE = "labs.embedded.mesh.linkerd.proxy"
LINKERD_INBOUND_PORT, LINKERD_OUTBOUND_PORT, LINKERD_ADMIN_PORT = 4143, 4140, 4191
# Istio's node types: a gateway's `istio-proxy` runs `proxy router`, any other one a sidecar
SIDECAR_TYPE, ROUTER_TYPE = "sidecar", "router"
PROXY_TYPES = (SIDECAR_TYPE, ROUTER_TYPE)

# The sidecar's well-known ports (Istio's "Ports used by Istio"): the Envoy admin, on the pod's
# localhost only, and the ports it serves on the pod's address, which the runtime gives host
# ports like any container port.
ADMIN_PORT = 15000
AGENT_PORT = 15020  # pilot-agent: merged Prometheus stats, /healthz/ready
STATUS_PORT = 15021  # /healthz/ready, the sidecar's readiness probe
PROMETHEUS_PORT = 15090  # Envoy's /stats/prometheus
POD_PORTS = (AGENT_PORT, STATUS_PORT, PROMETHEUS_PORT)

# Every container's environment names its pod (the twins' access logs, the sidecar's node id).
# The sidecar's JSON line per request (xds/observability.py writes it in the sidecar's container
# directory); the telemetry server counts Istio's metrics from it, `labs.cluster` reads it back.
TELEMETRY_LOG = "telemetry.log"
POD_NAME_ENV = "MESHLAB_POD_NAME"
POD_NAMESPACE_ENV = "MESHLAB_POD_NAMESPACE"
# The sidecar's own environment.
ADMIN_PORT_ENV = "MESHLAB_PROXY_ADMIN_PORT"
OUTBOUND_PORT_ENV = "MESHLAB_PROXY_OUTBOUND_PORT"
HOST_PORTS_ENV = "MESHLAB_HOST_PORTS"  # the host-ports annotation's JSON
PROXY_TYPE_ENV = "MESHLAB_PROXY_TYPE"  # one of PROXY_TYPES
# Istio's service cluster (APP_LABEL_AND_NAMESPACE): the `app` label, else the workload name;
# Zipkin service names are `<this>.<namespace>`, e.g. `productpage.default`.
SERVICE_CLUSTER_ENV = "MESHLAB_SERVICE_CLUSTER"


def _ports(pod: Obj, annotation: str) -> dict[str, int]:
    """A ports annotation as written ({} when absent or unreadable: a pod the runtime has not
    admitted yet, or one someone annotated by hand)."""
    raw = (pod.get("metadata", {}).get("annotations") or {}).get(annotation)
    if not raw:
        return {}
    try:
        return {str(k): int(v) for k, v in json.loads(raw).items()}
    except (ValueError, TypeError, AttributeError):
        return {}


def host_ports(pod: Obj) -> dict[str, int]:
    """containerPort (as a string) -> host port."""
    return _ports(pod, HOST_PORTS)


def app_ports(pod: Obj) -> dict[str, int]:
    """containerPort (as a string) -> where the app listens behind its sidecar."""
    return _ports(pod, APP_PORTS)


def proxy_ports(pod: Obj) -> dict[str, int]:
    """"admin" and "outbound" -> the sidecar's ports."""
    return _ports(pod, PROXY_PORTS)


def proxy_started(pod: Obj) -> bool:
    """The runtime has allocated the mesh proxy's ports (it writes both annotations then)."""
    annotations = pod["metadata"].get("annotations") or {}
    return PROXY_PORTS in annotations and HOST_PORTS in annotations


def sidecar_image() -> str:
    """The proxy image at the pinned Istio version."""
    return f"docker.io/{SIDECAR_REPOSITORIES[0]}:{version('ISTIO_VERSION')}"


def proxy_type(container: Obj) -> str:
    """ROUTER_TYPE for a gateway's `istio-proxy` (it runs `proxy router`), else SIDECAR_TYPE."""
    return ROUTER_TYPE if ROUTER_TYPE in (container.get("args") or []) else SIDECAR_TYPE


def has_sidecar(pod: Obj) -> bool:
    """The pod has Istio's `istio-proxy`."""
    return any(c.get("name") == SIDECAR_CONTAINER
               for c in pod.get("spec", {}).get("containers") or [])


def running_containers(pod: Obj) -> list[Obj]:
    """The containers that run for the pod's life: native sidecars (restartable init
    containers) first, then `containers`."""
    spec = pod.get("spec", {})
    return [c for c in spec.get("initContainers") or []
            if c.get("restartPolicy") == "Always"] + list(spec.get("containers") or [])


def is_mesh_proxy(container: Obj) -> bool:
    """Istio's `istio-proxy` or Linkerd's `linkerd-proxy` (of the running containers)."""
    return container.get("name") in (SIDECAR_CONTAINER, LINKERD_PROXY_CONTAINER)


def has_linkerd_proxy(pod: Obj) -> bool:
    """The pod has Linkerd's `linkerd-proxy`: a native sidecar, or a regular container as
    Linkerd injects it with `config.linkerd.io/proxy-enable-native-sidecar: "false"`."""
    return any(c.get("name") == LINKERD_PROXY_CONTAINER for c in running_containers(pod))


def has_mesh_proxy(pod: Obj) -> bool:
    """The pod's traffic is captured by a mesh proxy (Istio's or Linkerd's)."""
    return has_sidecar(pod) or has_linkerd_proxy(pod)


def is_gateway(pod: Obj) -> bool:
    """An Istio gateway (ingress/egress): its `istio-proxy` runs `proxy router`, is the pod's
    only workload and captures no app traffic (Istio's node type `router`, not `sidecar`)."""
    return any(c.get("name") == SIDECAR_CONTAINER and proxy_type(c) == ROUTER_TYPE
               for c in pod.get("spec", {}).get("containers") or [])


def workload_name(pod: Obj) -> str:
    """Istio's workload name: the Deployment for ReplicaSet-owned pods, else the pod name."""
    meta = pod["metadata"]
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "ReplicaSet":
            template_hash = (meta.get("labels") or {}).get("pod-template-hash")
            name = ref.get("name", "")
            if template_hash and name.endswith(f"-{template_hash}"):
                return name[: -len(template_hash) - 1]
            return name
    return meta["name"]


def pod_dir_name(pod: Obj) -> str:
    """A pod's folder in the pods directory: `<namespace>_<name>_<uid>` (the uid last, so a
    re-created pod of the same name gets a fresh folder and leftovers are told apart)."""
    meta = pod["metadata"]
    return f"{meta.get('namespace', '')}_{meta['name']}_{meta['uid']}"
