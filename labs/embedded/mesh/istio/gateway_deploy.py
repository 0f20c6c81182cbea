"""Istio's "automated deployment" for Gateway API Gateways, and the classes istiod installs.

For every Gateway of an Istio class, istiod creates a ServiceAccount, a Deployment and a Service
named `<gateway>-<class>` (e.g. `bookinfo-gateway-istio`) in the Gateway's namespace, owned by the
Gateway (so deleting it removes them). The Deployment runs one `istio-proxy` (`proxy router`, a
real Envoy here) labelled `gateway.networking.k8s.io/gateway-name`; the Service is a LoadBalancer
with a port per listener port plus the status port. Unlike Istio's template, each listener port is
also a declared container port: pods share 127.0.0.1 here, so the runtime gives every declared
port its own host port, and the Service's node port (30000-32767) is where the learner opens
`http://localhost:<nodePort>/...`. The load balancer address reported is 127.0.0.1, as for
`istio-ingressgateway`.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from labs.istio_names import SIDECAR_CONTAINER

from ...apiserver.api import ObjectApi
from ...apiserver.errors import ApiError
from ...workload import STATUS_PORT, sidecar_image
from .gateway_api import GATEWAY_NAME_LABEL, Listener, service_name
from .gateway_install import publish_load_balancer

log = logging.getLogger(__name__)
Obj = dict[str, Any]


def port_name(listener: Listener) -> str:
    """Istio's sanitizeListenerNameForPort: a valid Service port name from the listener's."""
    name = re.sub(r"[^a-z0-9-]", "-", listener.name.lower()).strip("-")[:63]
    return name or f"{str(listener.spec.get('protocol', 'tcp')).lower()}-{listener.index}"


def _owner(gateway: Obj) -> list[Obj]:
    meta = gateway["metadata"]
    return [{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
             "name": meta["name"], "uid": meta["uid"], "controller": True}]


def desired_objects(gateway: Obj, listeners: list[Listener]) -> list[tuple[str, Obj]]:
    """(plural, object) of the ServiceAccount, Deployment and Service of one Gateway."""
    meta = gateway["metadata"]
    name, namespace = service_name(gateway), meta.get("namespace", "")
    labels = {GATEWAY_NAME_LABEL: meta["name"], "istio.io/gateway-name": meta["name"]}
    common = {"namespace": namespace, "labels": dict(labels), "ownerReferences": _owner(gateway)}
    ports = sorted({listener.port: listener for listener in listeners}.items())
    container_ports = [{"name": "status-port", "containerPort": STATUS_PORT, "protocol": "TCP"},
                       *({"containerPort": port, "protocol": "TCP"} for port, _ in ports)]
    pod_labels = {**labels, "service.istio.io/canonical-name": name,
                  "service.istio.io/canonical-revision": "latest",
                  "sidecar.istio.io/inject": "false"}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, **common},
        "spec": {"replicas": 1, "selector": {"matchLabels": {GATEWAY_NAME_LABEL: meta["name"]}},
                 "template": {
                     "metadata": {"labels": pod_labels, "annotations": {
                         "istio.io/rev": "default", "prometheus.io/path": "/stats/prometheus",
                         "prometheus.io/port": "15020", "prometheus.io/scrape": "true"}},
                     "spec": {"serviceAccountName": name, "containers": [{
                         "name": SIDECAR_CONTAINER,
                         "image": sidecar_image(),
                         "args": ["proxy", "router", "--domain",
                                  "$(POD_NAMESPACE).svc.cluster.local",
                                  "--proxyLogLevel=warning",
                                  "--proxyComponentLogLevel=misc:error",
                                  "--log_output_level=default:info"],
                         "ports": container_ports,
                         "env": [{"name": "ISTIO_META_WORKLOAD_NAME", "value": name}],
                         "readinessProbe": {"httpGet": {"path": "/healthz/ready",
                                                        "port": STATUS_PORT},
                                            "periodSeconds": 2, "failureThreshold": 30}}]}}}}
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, **common},
        "spec": {"type": "LoadBalancer", "selector": {GATEWAY_NAME_LABEL: meta["name"]},
                 "ports": [{"name": "status-port", "port": STATUS_PORT, "protocol": "TCP",
                            "appProtocol": "tcp"},
                           *({"name": port_name(listener), "port": port, "protocol": "TCP",
                              "appProtocol": str(listener.spec.get("protocol", "")).lower()}
                             for port, listener in ports)]}}
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, **common}}
    return [("serviceaccounts", account), ("deployments", deployment), ("services", service)]


def _differs(existing: Obj, wanted: Obj, plural: str) -> bool:
    if plural == "serviceaccounts":
        return False
    if plural == "services":
        have = [(p.get("name"), p.get("port")) for p in existing["spec"].get("ports") or []]
        return have != [(p["name"], p["port"]) for p in wanted["spec"]["ports"]]
    containers = existing["spec"]["template"]["spec"].get("containers") or [{}]
    return bool(containers[0].get("ports") != wanted["spec"]["template"]["spec"]["containers"][0]
                ["ports"])


def _merged(existing: Obj, wanted: Obj, plural: str) -> Obj:
    """The update of an existing object: the wanted spec, keeping allocated node ports and
    the cluster IP of a Service."""
    out = {**existing, "spec": {**existing.get("spec", {}), **wanted["spec"]}}
    if plural == "services":
        node_ports = {p.get("port"): p.get("nodePort") for p in existing["spec"].get("ports") or []}
        out["spec"]["ports"] = [{**p, **({"nodePort": node_ports[p["port"]]}
                                         if node_ports.get(p["port"]) else {})}
                                for p in wanted["spec"]["ports"]]
    return out


def ensure_deployments(api: ObjectApi, gateways: dict[tuple[str, str], list[Listener]]) -> int:
    """Create or update every Istio-class Gateway's objects; returns how many were written.
    Objects of a deleted Gateway go with it (garbage collection through ownerReferences)."""
    written = 0
    for listeners in gateways.values():
        if not listeners:
            continue
        gateway = listeners[0].gateway
        namespace = gateway["metadata"].get("namespace", "")
        for plural, wanted in desired_objects(gateway, listeners):
            group, ver = ("apps", "v1") if plural == "deployments" else ("", "v1")
            rt = api.registry.lookup(group, ver, plural)
            assert rt is not None
            existing = api.find(rt, namespace, wanted["metadata"]["name"])
            try:
                if existing is None:
                    api.create(rt, namespace, wanted, validate=False)
                elif _differs(existing, wanted, plural):
                    api.update(rt, namespace, wanted["metadata"]["name"],
                               _merged(existing, wanted, plural), validate=False)
                else:
                    continue
            except ApiError as err:  # e.g. the namespace is terminating
                log.warning("Gateway %s/%s: %s %s not written: %s", namespace,
                            gateway["metadata"]["name"], wanted["kind"],
                            wanted["metadata"]["name"], err.message)
                continue
            written += 1
        publish_load_balancer(api, namespace, service_name(gateway))
    return written
