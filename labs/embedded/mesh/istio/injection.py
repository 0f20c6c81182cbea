"""Sidecar injection: the mutating admission step istiod's webhook performs on Pod creation.

The result follows Istio's injection template (manifests/charts/istio-control/istio-discovery/
files/injection-template.yaml) as a default install renders it, so `kubectl get pod -o yaml`
and `kubectl describe pod` show what learners see on a real cluster: the `istio-init` init
container, the `istio-proxy` container (image `docker.io/istio/proxyv2:<ISTIO_VERSION>`), its
volumes, labels and annotations. The embedded runtime runs `istio-proxy` as a real Envoy and
reports `istio-init` completed (there is no iptables here).

Deliberate differences from Istio: the `resourceFieldRef` variables (ISTIO_CPU_LIMIT,
GOMEMLIMIT, GOMAXPROCS) are left out because the embedded runtime does not emulate resource
limits, and application HTTP probes are not rewritten to the agent's port 15020 (the runtime
probes the application directly).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.resources import ResourceType
from labs.istio_names import SIDECAR_CONTAINER

from ...workload import PROMETHEUS_PORT, STATUS_PORT, has_sidecar, sidecar_image, workload_name
from ..kube_state import TRUST_DOMAIN

Obj = dict[str, Any]
INIT_CONTAINER = "istio-init"
INJECT = "sidecar.istio.io/inject"
NAMESPACE_INJECTION = "istio-injection"
REVISION = "istio.io/rev"
STATUS = "sidecar.istio.io/status"
DEFAULT_REVISION = "default"
TLS_MODE = "security.istio.io/tlsMode"
CANONICAL_NAME = "service.istio.io/canonical-name"
CANONICAL_REVISION = "service.istio.io/canonical-revision"
DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"
DEFAULT_LOGS_CONTAINER = "kubectl.kubernetes.io/default-logs-container"
PROMETHEUS = {"prometheus.io/port": "15020", "prometheus.io/path": "/stats/prometheus",
              "prometheus.io/scrape": "true"}
# Namespaces istiod never injects into (pkg/kube/inject: IgnoredNamespaces).
IGNORED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease",
                                "local-path-storage"})
TRUTHY = frozenset({"y", "yes", "true", "on"})
# Istio's `global.proxy.resources` defaults.
DEFAULT_RESOURCES = {"limits": {"cpu": "2", "memory": "1Gi"},
                     "requests": {"cpu": "100m", "memory": "128Mi"}}
RESOURCE_ANNOTATIONS = (("requests", "cpu", "sidecar.istio.io/proxyCPU"),
                        ("requests", "memory", "sidecar.istio.io/proxyMemory"),
                        ("limits", "cpu", "sidecar.istio.io/proxyCPULimit"),
                        ("limits", "memory", "sidecar.istio.io/proxyMemoryLimit"))
VOLUME_MOUNTS = (("workload-socket", "/var/run/secrets/workload-spiffe-uds"),
                 ("credential-socket", "/var/run/secrets/credential-uds"),
                 ("workload-certs", "/var/run/secrets/workload-spiffe-credentials"),
                 ("istiod-ca-cert", "/var/run/secrets/istio"),
                 ("istio-data", "/var/lib/istio/data"),
                 ("istio-envoy", "/etc/istio/proxy"),
                 ("istio-token", "/var/run/secrets/tokens"),
                 ("istio-podinfo", "/etc/istio/pod"))


def _labels(obj: Obj | None) -> dict[str, str]:
    return ((obj or {}).get("metadata") or {}).get("labels") or {}


def _annotations(obj: Obj) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def injection_requested(pod: Obj, namespace: Obj | None) -> bool:
    """Istio's injection policy for a default install.

    A namespace labelled `istio-injection=enabled` (or carrying `istio.io/rev`) injects every
    pod except those labelled `sidecar.istio.io/inject` with a false value; in a namespace
    without either label only pods labelled `sidecar.istio.io/inject: "true"` (or `istio.io/rev`)
    are injected; `istio-injection=disabled` injects nothing.
    """
    spec = pod.get("spec") or {}
    meta = pod.get("metadata") or {}
    if spec.get("hostNetwork") or has_sidecar(pod) or meta.get("namespace") in IGNORED_NAMESPACES:
        return False
    ns_labels, pod_labels = _labels(namespace), _labels(pod)
    label = pod_labels.get(INJECT)
    annotation = _annotations(pod).get(INJECT)  # deprecated, but istiod still reads it
    if NAMESPACE_INJECTION in ns_labels:
        if ns_labels[NAMESPACE_INJECTION] != "enabled":
            return False
    elif REVISION not in ns_labels:
        return label == "true" or (REVISION in pod_labels and label != "false")
    chosen = label if label is not None else annotation
    return not chosen or chosen.lower() in TRUTHY


def _revision(pod: Obj, namespace: Obj | None) -> str:
    return (_labels(namespace).get(REVISION) or _labels(pod).get(REVISION)
            or DEFAULT_REVISION)


def _owner(pod: Obj) -> str:
    """ISTIO_META_OWNER: the workload that created the pod, as a Kubernetes API path."""
    meta = pod["metadata"]
    namespace, name = meta.get("namespace", "default"), workload_name(pod)
    ref = next((r for r in meta.get("ownerReferences") or [] if r.get("controller")),
               None) or next(iter(meta.get("ownerReferences") or []), None)
    if ref is None:
        return f"kubernetes://apis/v1/namespaces/{namespace}/pods/{name}"
    kind, api_version = ref.get("kind", ""), ref.get("apiVersion", "v1")
    if kind == "ReplicaSet" and name != ref.get("name"):
        kind = "Deployment"  # the ReplicaSet name is the Deployment's plus the template hash
    return f"kubernetes://apis/{api_version}/namespaces/{namespace}/{kind.lower()}s/{name}"


def _pod_ports(containers: list[Obj]) -> str:
    """ISTIO_META_POD_PORTS as the template renders it (ports after API defaulting)."""
    entries = []
    for container in containers:
        for port in container.get("ports") or []:
            entry = {k: port[k] for k in ("name", "hostPort", "containerPort") if k in port}
            entry["protocol"] = port.get("protocol", "TCP")
            entry.update({"hostIP": port["hostIP"]} if "hostIP" in port else {})
            entries.append(json.dumps(entry, separators=(",", ":")))
    body = "".join(f"\n    {',' if i else ''}{e}" for i, e in enumerate(entries))
    return f"[{body}\n]"


def _resources(annotations: dict[str, str]) -> Obj:
    if not any(key in annotations for _, _, key in RESOURCE_ANNOTATIONS):
        return copy.deepcopy(DEFAULT_RESOURCES)
    resources: Obj = {}
    for section, resource, key in RESOURCE_ANNOTATIONS:
        if key in annotations:
            resources.setdefault(section, {})[resource] = annotations[key]
    return resources


def _field(name: str, path: str) -> Obj:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _init_container(annotations: dict[str, str], resources: Obj) -> Obj:
    def traffic(key: str, default: str) -> str:
        return annotations.get(f"traffic.sidecar.istio.io/{key}", default)

    excluded = ",".join(p for p in ["15090,15021,15020", traffic("excludeInboundPorts", "")]
                        if p)
    return {
        "name": INIT_CONTAINER, "image": sidecar_image(),
        "args": ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
                 "-i", traffic("includeOutboundIPRanges", "*"),
                 "-x", traffic("excludeOutboundIPRanges", ""),
                 "-b", traffic("includeInboundPorts", "*"), "-d", excluded,
                 "--log_output_level=default:info"],
        "resources": resources,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "privileged": False, "readOnlyRootFilesystem": False,
            "runAsGroup": 0, "runAsNonRoot": False, "runAsUser": 0},
    }


def _probe(annotations: dict[str, str], period: int, failures: int) -> Obj:
    def setting(key: str, default: int) -> int:
        raw = annotations.get(f"readiness.status.sidecar.istio.io/{key}", "")
        return int(raw) if raw.isdigit() else default

    return {"httpGet": {"path": "/healthz/ready", "port": STATUS_PORT},
            "initialDelaySeconds": setting("initialDelaySeconds", 0),
            "periodSeconds": setting("periodSeconds", period), "timeoutSeconds": 3,
            "failureThreshold": setting("failureThreshold", failures)}


def _proxy_container(pod: Obj, app_containers: list[Obj], resources: Obj,
                     prometheus_env: list[Obj]) -> Obj:
    annotations = _annotations(pod)
    workload = workload_name(pod)
    env = [
        {"name": "PILOT_CERT_PROVIDER", "value": "istiod"},
        {"name": "CA_ADDR", "value": "istiod.istio-system.svc:15012"},
        _field("POD_NAME", "metadata.name"),
        _field("POD_NAMESPACE", "metadata.namespace"),
        _field("INSTANCE_IP", "status.podIP"),
        _field("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        _field("HOST_IP", "status.hostIP"),
        {"name": "PROXY_CONFIG", "value": "{}\n"},
        {"name": "ISTIO_META_POD_PORTS", "value": _pod_ports(app_containers)},
        {"name": "ISTIO_META_APP_CONTAINERS",
         "value": ",".join(c["name"] for c in app_containers)},
        {"name": "ISTIO_META_CLUSTER_ID", "value": "Kubernetes"},
        _field("ISTIO_META_NODE_NAME", "spec.nodeName"),
        {"name": "ISTIO_META_INTERCEPTION_MODE", "value": "REDIRECT"},
        {"name": "ISTIO_META_WORKLOAD_NAME", "value": workload},
        {"name": "ISTIO_META_OWNER", "value": _owner(pod)},
        {"name": "ISTIO_META_MESH_ID", "value": TRUST_DOMAIN},
        {"name": "TRUST_DOMAIN", "value": TRUST_DOMAIN},
        *prometheus_env,
    ]
    log_level = annotations.get("sidecar.istio.io/logLevel", "warning")
    component_level = annotations.get("sidecar.istio.io/componentLogLevel", "misc:error")
    return {
        "name": SIDECAR_CONTAINER, "image": sidecar_image(),
        "ports": [{"containerPort": PROMETHEUS_PORT, "protocol": "TCP",
                   "name": "http-envoy-prom"}],
        "args": ["proxy", "sidecar", "--domain", f"$(POD_NAMESPACE).svc.{TRUST_DOMAIN}",
                 f"--proxyLogLevel={log_level}",
                 f"--proxyComponentLogLevel={component_level}",
                 "--log_output_level=default:info"],
        "env": env,
        "startupProbe": _probe({}, period=1, failures=600),
        "readinessProbe": _probe(annotations, period=15, failures=4),
        "resources": resources,
        "securityContext": {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "privileged": False, "readOnlyRootFilesystem": True,
            "runAsGroup": 1337, "runAsNonRoot": True, "runAsUser": 1337},
        "volumeMounts": [{"name": name, "mountPath": path} for name, path in VOLUME_MOUNTS],
    }


def _volumes() -> list[Obj]:
    return [
        {"name": "workload-socket", "emptyDir": {}},
        {"name": "credential-socket", "emptyDir": {}},
        {"name": "workload-certs", "emptyDir": {}},
        {"name": "istio-envoy", "emptyDir": {"medium": "Memory"}},
        {"name": "istio-data", "emptyDir": {}},
        {"name": "istio-podinfo", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}]}},
        {"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": {
            "audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"}}]}},
        {"name": "istiod-ca-cert", "configMap": {"name": "istio-ca-root-cert"}},
    ]


def _prometheus(annotations: dict[str, str]) -> list[Obj]:
    """Point scraping at the proxy's merged metrics (Istio's metrics merging); the app's own
    scrape settings move to ISTIO_PROMETHEUS_ANNOTATIONS. `prometheus.io/scrape: "false"`
    opts out."""
    if annotations.get("prometheus.io/scrape") == "false":
        return []
    original = {key.split("/")[1]: annotations[key] for key in PROMETHEUS if key in annotations}
    annotations.update(PROMETHEUS)
    if not original:
        return []
    return [{"name": "ISTIO_PROMETHEUS_ANNOTATIONS",
             "value": json.dumps(original, separators=(",", ":"))}]


def inject(pod: Obj, revision: str = DEFAULT_REVISION) -> None:
    """Add Istio's sidecar to `pod` (in place): containers, volumes, labels, annotations."""
    meta = pod.setdefault("metadata", {})
    spec = pod.setdefault("spec", {})
    app_containers = [c for c in spec.get("containers") or [] if c.get("name") != SIDECAR_CONTAINER]
    labels = meta.setdefault("labels", {})
    annotations = meta.setdefault("annotations", {})
    resources = _resources(annotations)
    prometheus_env = _prometheus(annotations)
    proxy = _proxy_container(pod, app_containers, resources, prometheus_env)
    spec.setdefault("initContainers", []).append(_init_container(annotations, resources))
    spec.setdefault("containers", []).append(proxy)
    volumes = _volumes()
    spec.setdefault("volumes", []).extend(volumes)
    labels.setdefault(TLS_MODE, "istio")
    labels.setdefault(CANONICAL_NAME, labels.get("app.kubernetes.io/name") or labels.get("app")
                      or workload_name(pod))
    labels.setdefault(CANONICAL_REVISION, labels.get("app.kubernetes.io/version")
                      or labels.get("version") or "latest")
    if app_containers:
        annotations.setdefault(DEFAULT_CONTAINER, app_containers[0]["name"])
        annotations.setdefault(DEFAULT_LOGS_CONTAINER, app_containers[0]["name"])
    annotations[REVISION] = revision
    annotations[STATUS] = json.dumps({
        "initContainers": [INIT_CONTAINER], "containers": [SIDECAR_CONTAINER],
        "volumes": [v["name"] for v in volumes], "imagePullSecrets": None,
        "revision": revision}, separators=(",", ":"))


def injection_hook(api: ObjectApi) -> Callable[[ResourceType, Obj], None]:
    """The admission hook: injects Pods whose namespace (or own label) asks for a sidecar."""
    namespaces = api.registry.lookup("", "v1", "namespaces")
    assert namespaces is not None

    def admit(rt: ResourceType, obj: Obj) -> None:
        if rt.group != "" or rt.plural != "pods":
            return
        namespace = api.find(namespaces, "", obj["metadata"].get("namespace", ""))
        if injection_requested(obj, namespace):
            inject(obj, _revision(obj, namespace))

    return admit


def register_injection(api: ObjectApi) -> None:
    """Install sidecar injection as a mutating admission step of `api` (Pod creation)."""
    api.mutating_admission.append(injection_hook(api))
