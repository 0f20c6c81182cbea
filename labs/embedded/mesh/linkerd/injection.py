"""Linkerd's proxy injection: the proxy-injector webhook on Pod creation, and the same pod shape
for `linkerd inject` (a workload manifest annotated, or with `--manual` the proxy written out).

The injected shape follows Linkerd 2.20's native-sidecar output as upstream renders it: golden
linkerd/linkerd2 `cli/cmd/testdata/inject_emojivoto_deployment.golden.yml`, templates
`charts/partials/templates/_proxy.tpl` and `_proxy-init.tpl`, metadata from `pkg/inject/inject.go`
(`injectObjectMeta`, `populateMeta`). Who is injected follows `pkg/inject/report.go`
(`disabledByAnnotation`'s truth table, `HasExistingSidecars` in `pkg/healthcheck/sidecar.go`)
and the webhook's namespaceSelector (`charts/linkerd-control-plane/templates/
proxy-injector-rbac.yaml`).

On the embedded cluster `linkerd-init` is reported Completed without running (there is no
iptables); the `linkerd-proxy` native sidecar runs what the catalog maps its image to. An Istio
sidecar and a Linkerd proxy never share a pod: the webhooks run in name order (Istio's
`istio-sidecar-injector` first), and Linkerd skips a pod that already has `istio-proxy`, as
upstream does ("pod has a sidecar injected already").
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.resources import ResourceType
from labs.versions import version

from ...workload import LINKERD_PROXY_CONTAINER as PROXY_CONTAINER
from .identity import NAMESPACE as CONTROL_PLANE_NS
from .identity import TRUST_ROOTS_CONFIGMAP, TRUST_ROOTS_KEY

log = logging.getLogger(__name__)
Obj = dict[str, Any]

PREFIX = "linkerd.io"
INJECT = "linkerd.io/inject"
ENABLED, DISABLED, INGRESS = "enabled", "disabled", "ingress"
INJECT_VALUES = frozenset({ENABLED, DISABLED, INGRESS})
CREATED_BY = "linkerd.io/created-by"
PROXY_VERSION = "linkerd.io/proxy-version"
TRUST_ROOT_SHA = "linkerd.io/trust-root-sha256"
CONTROL_PLANE_NS_LABEL = "linkerd.io/control-plane-ns"
WORKLOAD_NS_LABEL = "linkerd.io/workload-ns"
COMPONENT_LABEL = "linkerd.io/control-plane-component"
DEFAULT_INBOUND_POLICY = "config.linkerd.io/default-inbound-policy"
ADMISSION_WEBHOOKS = "config.linkerd.io/admission-webhooks"
INIT_CONTAINER = "linkerd-init"
PROXY_IMAGE = "cr.l5d.io/linkerd/proxy"
VOLUMES = ("linkerd-proxy-init-xtables-lock", "linkerd-identity-end-entity",
           "linkerd-identity-token")
CONFIG_MAP = "linkerd-config"
# The webhook's namespaceSelector excludes these (and namespaces labelled admission-webhooks:
# disabled, such as `linkerd` itself).
IGNORED_NAMESPACES = frozenset({"kube-system", "cert-manager"})
# `linkerd.io/proxy-<kind>` by owner kind (pkg/k8s/labels.go)
OWNER_LABELS = {"Deployment": "deployment", "ReplicationController": "replicationcontroller",
                "ReplicaSet": "replicaset", "Job": "job", "DaemonSet": "daemonset",
                "StatefulSet": "statefulset", "CronJob": "cronjob"}
# chart defaults (charts/linkerd-control-plane/values.yaml)
CLUSTER_NETWORKS = "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8"
DEFAULT_POLICY = "all-unauthenticated"
POLICIES = frozenset({"all-unauthenticated", "all-authenticated", "cluster-authenticated",
                      "cluster-unauthenticated", "deny", "audit"})
OPAQUE_DETECTION_PORTS = "25,587,3306,4444,5432,6379,9300,11211"
SIDECAR_NAMES = frozenset({PROXY_CONTAINER, "istio-proxy"})
INIT_NAMES = frozenset({INIT_CONTAINER, "istio-init"})
SIDECAR_IMAGES = (f"{PROXY_IMAGE}:", "gcr.io/istio-release/proxyv2:")
INIT_IMAGES = ("cr.l5d.io/linkerd/proxy-init:", "gcr.io/istio-release/proxy_init:")


@dataclass(frozen=True)
class ProxyValues:
    """What injection reads from the installed control plane (linkerd-config's values and the
    trust-roots ConfigMap)."""

    trust_anchors_pem: str
    linkerd_version: str
    created_by: str
    cluster_domain: str = "cluster.local"
    default_inbound_policy: str = DEFAULT_POLICY
    namespace: str = CONTROL_PLANE_NS

    @property
    def trust_root_sha256(self) -> str:
        """sha256 of the trust bundle, as `injectObjectMeta` computes it."""
        return hashlib.sha256(self.trust_anchors_pem.encode()).hexdigest()


class InjectionError(Exception):
    """The control plane's configuration cannot be read; the message says what is missing."""


def _meta(obj: Obj) -> Obj:
    if not isinstance(obj.get("metadata"), dict):
        obj["metadata"] = {}
    return obj["metadata"]


def has_existing_sidecar(spec: Obj) -> bool:
    """HasExistingSidecars: a Linkerd or Istio proxy (or init container) is already there."""
    inits = spec.get("initContainers") or []
    for container in [*inits, *(spec.get("containers") or [])]:
        image = str(container.get("image", ""))
        if container.get("name") in SIDECAR_NAMES or image.startswith(SIDECAR_IMAGES):
            return True
    return any(c.get("name") in INIT_NAMES or str(c.get("image", "")).startswith(INIT_IMAGES)
               for c in inits)


def webhook_skip_reason(pod: Obj, namespace: Obj | None) -> str | None:
    """Why the proxy-injector leaves `pod` alone, or None when it injects it."""
    ns_meta = (namespace or {}).get("metadata") or {}
    ns_name = ns_meta.get("name") or pod.get("metadata", {}).get("namespace", "")
    if ns_name in IGNORED_NAMESPACES or (ns_meta.get("labels") or {}).get(
            ADMISSION_WEBHOOKS) == DISABLED:
        return "namespace excluded by the webhook's namespaceSelector"
    spec = pod.get("spec") or {}
    if spec.get("hostNetwork"):
        return "hostNetwork is enabled"
    if has_existing_sidecar(spec):
        return "pod has a sidecar injected already"
    pod_value = (pod.get("metadata", {}).get("annotations") or {}).get(INJECT, "")
    ns_value = (ns_meta.get("annotations") or {}).get(INJECT, "")
    if ns_value and ns_value not in INJECT_VALUES:
        return f'invalid value for annotation "{INJECT}" at namespace'
    if pod_value and pod_value not in INJECT_VALUES:
        return f'invalid value for annotation "{INJECT}" at workload'
    if ns_value in (ENABLED, INGRESS):
        return (f'pod has the annotation "{INJECT}:{DISABLED}"' if pod_value == DISABLED
                else None)
    if pod_value not in (ENABLED, INGRESS):
        return f'neither the namespace nor the pod have the annotation "{INJECT}:{ENABLED}"'
    return None


def _field(name: str, path: str) -> Obj:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _value(name: str, value: str) -> Obj:
    return {"name": name, "value": value}


def inbound_ports(spec: Obj) -> str:
    """getPodInboundPorts: every declared container port and HTTP probe port, as strings in
    (lexical) ascending order."""
    ports: set[str] = set()
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        ports.update(str(p["containerPort"]) for p in container.get("ports") or []
                     if "containerPort" in p)
        for probe in ("readinessProbe", "livenessProbe"):
            port = ((container.get(probe) or {}).get("httpGet") or {}).get("port")
            if isinstance(port, int):
                ports.add(str(port))
    return ",".join(sorted(ports))


def _init_container(values: ProxyValues) -> Obj:
    return {
        "args": ["--firewall-bin-path", "iptables-nft", "--firewall-save-bin-path",
                 "iptables-nft-save", "--ipv6=false", "--incoming-proxy-port", "4143",
                 "--outgoing-proxy-port", "4140", "--proxy-uid", "2102",
                 "--inbound-ports-to-ignore", "4190,4191,4567,4568",
                 "--outbound-ports-to-ignore", "4567,4568"],
        "command": ["/usr/lib/linkerd/linkerd2-proxy-init"],
        "image": f"{PROXY_IMAGE}:{values.linkerd_version}",
        "imagePullPolicy": "IfNotPresent",
        "name": INIT_CONTAINER,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"]},
            "privileged": False, "readOnlyRootFilesystem": True, "runAsGroup": 65534,
            "runAsNonRoot": True, "runAsUser": 65534,
            "seccompProfile": {"type": "RuntimeDefault"}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"mountPath": "/run", "name": VOLUMES[0]}],
    }


def _proxy_env(values: ProxyValues, ports: str, policy: str) -> list[Obj]:
    ns, domain = values.namespace, values.cluster_domain
    identity = f"serviceaccount.identity.{ns}.{domain}"
    return [
        _field("_pod_name", "metadata.name"), _field("_pod_ns", "metadata.namespace"),
        _field("_pod_uid", "metadata.uid"), _field("_pod_ip", "status.podIP"),
        _field("_pod_nodeName", "spec.nodeName"),
        _value("_pod_containerName", PROXY_CONTAINER),
        _value("LINKERD2_PROXY_CORES", "1"), _value("LINKERD2_PROXY_CORES_MIN", "1"),
        _value("LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED", "false"),
        _value("LINKERD2_PROXY_LOG",
               "warn,linkerd=info,hickory=error,[{headers}]=off,[{request}]=off"),
        _value("LINKERD2_PROXY_LOG_FORMAT", "plain"),
        _value("LINKERD2_PROXY_DESTINATION_SVC_ADDR",
               f"linkerd-dst-headless.{ns}.svc.{domain}.:8086"),
        _value("LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS", CLUSTER_NETWORKS),
        _value("LINKERD2_PROXY_POLICY_SVC_ADDR", f"linkerd-policy.{ns}.svc.{domain}.:8090"),
        _value("LINKERD2_PROXY_POLICY_WORKLOAD", '{"ns":"$(_pod_ns)", "pod":"$(_pod_name)"}\n'),
        _value("LINKERD2_PROXY_INBOUND_DEFAULT_POLICY", policy),
        _value("LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS", CLUSTER_NETWORKS),
        _value("LINKERD2_PROXY_CONTROL_STREAM_INITIAL_TIMEOUT", "3s"),
        _value("LINKERD2_PROXY_CONTROL_STREAM_IDLE_TIMEOUT", "5m"),
        _value("LINKERD2_PROXY_CONTROL_STREAM_LIFETIME", "1h"),
        _value("LINKERD2_PROXY_INBOUND_CONNECT_TIMEOUT", "100ms"),
        _value("LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT", "1000ms"),
        _value("LINKERD2_PROXY_OUTBOUND_DISCOVERY_IDLE_TIMEOUT", "5s"),
        _value("LINKERD2_PROXY_INBOUND_DISCOVERY_IDLE_TIMEOUT", "90s"),
        _value("LINKERD2_PROXY_CONTROL_LISTEN_ADDR", "0.0.0.0:4190"),
        _value("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", "0.0.0.0:4191"),
        _value("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1:4140"),
        _value("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS", "127.0.0.1:4140"),
        _value("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "0.0.0.0:4143"),
        _field("LINKERD2_PROXY_INBOUND_IPS", "status.podIPs"),
        _value("LINKERD2_PROXY_INBOUND_PORTS", ports),
        _value("LINKERD2_PROXY_DESTINATION_PROFILE_SUFFIXES", f"svc.{domain}."),
        _value("LINKERD2_PROXY_INBOUND_ACCEPT_KEEPALIVE", "10000ms"),
        _value("LINKERD2_PROXY_OUTBOUND_CONNECT_KEEPALIVE", "10000ms"),
        _value("LINKERD2_PROXY_INBOUND_ACCEPT_USER_TIMEOUT", "30s"),
        _value("LINKERD2_PROXY_OUTBOUND_CONNECT_USER_TIMEOUT", "30s"),
        _value("LINKERD2_PROXY_OUTBOUND_METRICS_HOSTNAME_LABELS", "false"),
        _value("LINKERD2_PROXY_INBOUND_SERVER_HTTP2_KEEP_ALIVE_INTERVAL", "10s"),
        _value("LINKERD2_PROXY_INBOUND_SERVER_HTTP2_KEEP_ALIVE_TIMEOUT", "3s"),
        _value("LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_KEEP_ALIVE_INTERVAL", "10s"),
        _value("LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_KEEP_ALIVE_TIMEOUT", "3s"),
        _value("LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION",
               OPAQUE_DETECTION_PORTS),
        _value("LINKERD2_PROXY_DESTINATION_CONTEXT",
               '{"ns":"$(_pod_ns)", "nodeName":"$(_pod_nodeName)", "pod":"$(_pod_name)"}\n'),
        _field("_pod_sa", "spec.serviceAccountName"),
        _value("_l5d_ns", ns), _value("_l5d_trustdomain", domain),
        _value("LINKERD2_PROXY_IDENTITY_DIR", "/var/run/linkerd/identity/end-entity"),
        _value("LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS", values.trust_anchors_pem.strip() + "\n"),
        _value("LINKERD2_PROXY_IDENTITY_TOKEN_FILE",
               "/var/run/secrets/tokens/linkerd-identity-token"),
        _value("LINKERD2_PROXY_IDENTITY_SVC_ADDR",
               f"linkerd-identity-headless.{ns}.svc.{domain}.:8080"),
        _value("LINKERD2_PROXY_IDENTITY_LOCAL_NAME", f"$(_pod_sa).$(_pod_ns).{identity}"),
        _value("LINKERD2_PROXY_IDENTITY_SVC_NAME", f"linkerd-identity.{ns}.{identity}"),
        _value("LINKERD2_PROXY_DESTINATION_SVC_NAME", f"linkerd-destination.{ns}.{identity}"),
        _value("LINKERD2_PROXY_POLICY_SVC_NAME", f"linkerd-destination.{ns}.{identity}"),
    ]


def _probe(path: str, **fields: int) -> Obj:
    return {"httpGet": {"path": path, "port": 4191}, **fields}


def _proxy_container(values: ProxyValues, ports: str, policy: str) -> Obj:
    return {
        "env": _proxy_env(values, ports, policy),
        "image": f"{PROXY_IMAGE}:{values.linkerd_version}",
        "imagePullPolicy": "IfNotPresent",
        "livenessProbe": _probe("/live", initialDelaySeconds=10, timeoutSeconds=1),
        "name": PROXY_CONTAINER,
        "ports": [{"containerPort": 4143, "name": "linkerd-proxy"},
                  {"containerPort": 4191, "name": "linkerd-admin"}],
        "readinessProbe": _probe("/ready", initialDelaySeconds=2, timeoutSeconds=1),
        "restartPolicy": "Always",
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "runAsUser": 2102,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "startupProbe": {"failureThreshold": 120, **_probe("/ready"), "periodSeconds": 1},
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"mountPath": "/var/run/linkerd/identity/end-entity", "name": VOLUMES[1]},
            {"mountPath": "/var/run/secrets/tokens", "name": VOLUMES[2]}],
    }


def _volumes() -> list[Obj]:
    return [
        {"emptyDir": {}, "name": VOLUMES[0]},
        {"emptyDir": {"medium": "Memory"}, "name": VOLUMES[1]},
        {"name": VOLUMES[2], "projected": {"sources": [{"serviceAccountToken": {
            "audience": "identity.l5d.io", "expirationSeconds": 86400,
            "path": "linkerd-identity-token"}}]}},
    ]


def inbound_policy(annotations: dict[str, str], namespace: Obj | None,
                   values: ProxyValues) -> str:
    """The pod template's, else the namespace's `config.linkerd.io/default-inbound-policy`,
    else the cluster default; an unknown value is ignored as upstream logs and ignores it."""
    ns_annotations = ((namespace or {}).get("metadata") or {}).get("annotations") or {}
    for chosen in (annotations.get(DEFAULT_INBOUND_POLICY),
                   ns_annotations.get(DEFAULT_INBOUND_POLICY)):
        if chosen in POLICIES:
            return chosen
    return values.default_inbound_policy


def inject_template(template: Obj, values: ProxyValues, owner_labels: dict[str, str],
                    namespace: Obj | None = None) -> None:
    """Add the proxy to a pod (template), in place: init containers, volumes, labels and the
    annotations created-by, proxy-version and trust-root-sha256."""
    meta, spec = _meta(template), template.setdefault("spec", {})
    annotations = meta.setdefault("annotations", {})
    policy = inbound_policy(annotations, namespace, values)
    annotations[CREATED_BY] = values.created_by
    annotations[PROXY_VERSION] = values.linkerd_version
    annotations[TRUST_ROOT_SHA] = values.trust_root_sha256
    labels = meta.setdefault("labels", {})
    labels[CONTROL_PLANE_NS_LABEL] = values.namespace
    labels.update(owner_labels)
    ports = inbound_ports(spec)
    spec["initContainers"] = [_init_container(values), _proxy_container(values, ports, policy),
                              *(spec.get("initContainers") or [])]
    spec["volumes"] = [*(spec.get("volumes") or []), *_volumes()]


def uninject_template(template: Obj, workload_meta: Obj | None = None) -> bool:
    """Remove what injection or `linkerd inject` added (pkg/inject/uninject.go); True when
    there was something to remove. Control-plane components keep their linkerd.io metadata.
    Fields left empty are dropped, as upstream's round trip through the API types does."""
    spec = template.get("spec") or {}
    removed = False
    for key, unwanted in (("initContainers", (INIT_CONTAINER, PROXY_CONTAINER)),
                          ("containers", (PROXY_CONTAINER,)), ("volumes", VOLUMES)):
        if key in spec:
            kept = [item for item in spec[key] or [] if item.get("name") not in unwanted]
            removed |= key != "volumes" and len(kept) != len(spec[key] or [])
            _set_or_drop(spec, key, kept)
    for meta in (m for m in (workload_meta, template.get("metadata")) if m):
        labels = meta.get("labels") or {}
        if COMPONENT_LABEL in labels:
            continue
        annotations = meta.get("annotations") or {}
        kept_annotations = {k: v for k, v in annotations.items()
                            if not k.startswith(PREFIX) or (k == INJECT and v == DISABLED)}
        removed |= len(kept_annotations) != len(annotations)
        if "annotations" in meta:
            _set_or_drop(meta, "annotations", kept_annotations)
        if "labels" in meta:
            _set_or_drop(meta, "labels",
                         {k: v for k, v in labels.items() if not k.startswith(PREFIX)})
    return removed


def _set_or_drop(obj: Obj, key: str, value: list[Obj] | dict[str, str]) -> None:
    if value:
        obj[key] = value
    else:
        obj.pop(key, None)


def config_values(config: Obj | None) -> Obj:
    """linkerd-config's `values` (the chart values `linkerd install` rendered), {} when the
    ConfigMap is missing or its values unreadable."""
    raw = ((config or {}).get("data") or {}).get("values") or ""
    try:
        parsed = yaml.safe_load(raw) if raw else {}
    except yaml.YAMLError:
        parsed = {}
    return parsed if isinstance(parsed, dict) else {}


def values_from_objects(config_values: Obj, trust_roots: Obj | None,
                        created_by: str) -> ProxyValues:
    """ProxyValues from linkerd-config's `values` and the trust-roots ConfigMap (the same
    objects the CLI reads with kubectl)."""
    pem = ((trust_roots or {}).get("data") or {}).get(TRUST_ROOTS_KEY, "")
    if not pem.strip():
        raise InjectionError(
            f"ConfigMap {CONTROL_PLANE_NS}/{TRUST_ROOTS_CONFIGMAP} (key {TRUST_ROOTS_KEY}) is "
            "missing: Linkerd's control plane is not installed (`linkerd install --crds | "
            "kubectl apply -f -`, then `linkerd install | kubectl apply -f -`)")
    proxy = config_values.get("proxy") or {}
    return ProxyValues(
        trust_anchors_pem=pem,
        linkerd_version=str(config_values.get("linkerdVersion") or version("LINKERD_VERSION")),
        created_by=created_by,
        cluster_domain=str(config_values.get("clusterDomain") or "cluster.local"),
        default_inbound_policy=str(proxy.get("defaultInboundPolicy") or DEFAULT_POLICY))


def cluster_values(api: ObjectApi) -> ProxyValues:
    """The proxy-injector's view of the installed control plane."""
    configmaps = api.registry.lookup("", "v1", "configmaps")
    assert configmaps is not None
    return values_from_objects(
        config_values(api.find(configmaps, CONTROL_PLANE_NS, CONFIG_MAP)),
        api.find(configmaps, CONTROL_PLANE_NS, TRUST_ROOTS_CONFIGMAP),
        f"linkerd/proxy-injector {version('LINKERD_VERSION')}")


def _owner_labels(api: ObjectApi, pod: Obj) -> dict[str, str]:
    """The webhook's ownerRetriever: a ReplicaSet owned by a Deployment names the Deployment."""
    meta = pod["metadata"]
    labels = {WORKLOAD_NS_LABEL: meta.get("namespace", "")}
    ref = next((r for r in meta.get("ownerReferences") or [] if r.get("controller")), None)
    if ref is None:
        return labels
    kind, name = ref.get("kind", ""), ref.get("name", "")
    if kind == "ReplicaSet":
        replicasets = api.registry.lookup("apps", "v1", "replicasets")
        assert replicasets is not None
        owner = api.find(replicasets, meta.get("namespace", ""), name)
        parent = next((r for r in ((owner or {}).get("metadata") or {}).get(
            "ownerReferences") or [] if r.get("kind") == "Deployment"), None)
        if parent is not None:
            kind, name = "Deployment", parent["name"]
    if kind in OWNER_LABELS:
        labels[f"linkerd.io/proxy-{OWNER_LABELS[kind]}"] = name
    return labels


def injection_hook(api: ObjectApi) -> Callable[[ResourceType, Obj], None]:
    """The admission hook: injects Pods whose annotation or namespace asks for the proxy.
    Like the real webhook (failurePolicy: Ignore), a control plane that cannot be read leaves
    the pod uninjected, with an error in the daemon's log."""
    namespaces = api.registry.lookup("", "v1", "namespaces")
    assert namespaces is not None

    def admit(rt: ResourceType, obj: Obj) -> None:
        if rt.group != "" or rt.plural != "pods":
            return
        namespace = api.find(namespaces, "", obj["metadata"].get("namespace", ""))
        reason = webhook_skip_reason(obj, namespace)
        if reason is not None:
            log.debug("linkerd proxy injection skipped for pod %s/%s: %s",
                      obj["metadata"].get("namespace"), obj["metadata"].get("name")
                      or obj["metadata"].get("generateName"), reason)
            return
        try:
            values = cluster_values(api)
        except InjectionError as err:
            log.error("linkerd proxy injection skipped for pod %s/%s: %s",
                      obj["metadata"].get("namespace"), obj["metadata"].get("name")
                      or obj["metadata"].get("generateName"), err)
            return
        inject_template(obj, values, _owner_labels(api, obj), namespace)

    return admit


def register_injection(api: ObjectApi) -> None:
    """Install Linkerd's proxy injection as a mutating admission step (after Istio's)."""
    api.mutating_admission.append(injection_hook(api))


def pod_templates(obj: Obj) -> list[Obj]:
    """The pod (template)s of a workload manifest, by kind; [] for kinds without one."""
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind == "Pod":
        return [obj]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job",
                "ReplicationController") and isinstance(spec.get("template"), dict):
        return [spec["template"]]
    if kind == "CronJob":
        template = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template")
        return [template] if isinstance(template, dict) else []
    return []


def owner_labels_of(obj: Obj) -> dict[str, str]:
    """populateMeta's labels for a workload manifest (a Pod gets only the namespace)."""
    meta = obj.get("metadata") or {}
    labels = {WORKLOAD_NS_LABEL: meta.get("namespace", "")}
    if obj.get("kind") in OWNER_LABELS:
        labels[f"linkerd.io/proxy-{OWNER_LABELS[obj['kind']]}"] = meta.get("name", "")
    return labels

