"""Endpoints controller: one Endpoints object per Service with a selector.

Every pod of the embedded cluster listens on 127.0.0.1, each on host ports of its own that the
runtime records in the pod annotation `meshlab.dev/host-ports` (labs/embedded/workload.py).
So where a real Endpoints lists `podIP:containerPort`, this one lists `127.0.0.1:hostPort`: the
service's targetPort (a number or a container port name) is resolved to the pod's containerPort,
then to that pod's host port. Subsets are packed as the real RepackSubsets does: ports offered by
the same set of addresses share a subset — which here means one subset per pod.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.errors import ApiError
from labs.embedded.apiserver.objects import now
from labs.embedded.apiserver.selectors import labels_match
from labs.embedded.apiserver.store import Event
from labs.embedded.workload import host_ports

from . import pods as podutil
from .base import Controller

Obj = dict[str, Any]

TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"
HEADLESS_LABEL = "service.kubernetes.io/headless"


def container_port(pod: Obj, service_port: Obj) -> int | None:
    """FindPort: a numeric targetPort as is; a name looked up among the containers' ports."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int):
        return target
    protocol = service_port.get("protocol", "TCP")
    for container in pod.get("spec", {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target and port.get("protocol", "TCP") == protocol:
                return int(port["containerPort"])
    return None


def should_be_listed(pod: Obj) -> bool:
    """ShouldPodBeInEndpoints for the Endpoints API (terminating pods are left out)."""
    status = pod.get("status", {})
    if not status.get("podIP") or podutil.is_terminating(pod):
        return False
    restart = pod.get("spec", {}).get("restartPolicy", "Always")
    if restart == "Never":
        return podutil.phase(pod) not in podutil.TERMINAL_PHASES
    if restart == "OnFailure":
        return podutil.phase(pod) != "Succeeded"
    return True


def _address(pod: Obj, service_name: str) -> Obj:
    meta, spec = pod["metadata"], pod.get("spec", {})
    address: Obj = {"ip": pod["status"]["podIP"]}
    if spec.get("hostname") and spec.get("subdomain") == service_name:
        address["hostname"] = spec["hostname"]
    if spec.get("nodeName"):
        address["nodeName"] = spec["nodeName"]
    address["targetRef"] = {"kind": "Pod", "namespace": meta["namespace"], "name": meta["name"],
                            "uid": meta["uid"]}
    return address


def _port_entry(service_port: Obj, number: int) -> Obj:
    entry: Obj = {}
    if service_port.get("name"):
        entry["name"] = service_port["name"]
    entry["port"] = number
    entry["protocol"] = service_port.get("protocol", "TCP")
    if service_port.get("appProtocol"):
        entry["appProtocol"] = service_port["appProtocol"]
    return entry


def _address_key(address: Obj) -> tuple[str, str]:
    return address["ip"], address["targetRef"]["uid"]


def desired_subsets(service: Obj, pods: list[Obj]) -> list[Obj]:
    spec = service.get("spec", {})
    name = service["metadata"]["name"]
    publish_not_ready = bool(spec.get("publishNotReadyAddresses"))
    headless = spec.get("clusterIP") == "None"
    # (address, ready) per pod, and for every port entry the pods offering it.
    by_port: dict[str, tuple[Obj, set[tuple[str, str]]]] = {}
    addresses: dict[tuple[str, str], tuple[Obj, bool]] = {}
    portless: set[tuple[str, str]] = set()
    for pod in pods:
        if not should_be_listed(pod):
            continue
        address = _address(pod, name)
        key = _address_key(address)
        addresses[key] = (address, publish_not_ready or podutil.is_ready(pod))
        ports = host_ports(pod)
        if not spec.get("ports") and headless:
            portless.add(key)
        for service_port in spec.get("ports") or []:
            number = container_port(pod, service_port)
            if number is None or str(number) not in ports:
                continue  # the pod does not (yet) offer this port
            entry = _port_entry(service_port, ports[str(number)])
            ident = json.dumps(entry, sort_keys=True)
            by_port.setdefault(ident, (entry, set()))[1].add(key)
    # Ports offered by the same set of addresses share one subset.
    groups: dict[frozenset[tuple[str, str]], list[Obj]] = {}
    for entry, keys in by_port.values():
        groups.setdefault(frozenset(keys), []).append(entry)
    if portless:
        groups.setdefault(frozenset(portless), [])
    subsets = []
    for offering, entries in groups.items():
        ordered = sorted(offering)
        subset: Obj = {}
        ready = [addresses[k][0] for k in ordered if addresses[k][1]]
        not_ready = [addresses[k][0] for k in ordered if not addresses[k][1]]
        if ready:
            subset["addresses"] = ready
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        if entries:
            subset["ports"] = sorted(entries, key=lambda e: (e.get("name", ""), e["port"]))
        subsets.append(subset)
    return sorted(subsets, key=lambda s: json.dumps(s, sort_keys=True))


class EndpointsController(Controller[tuple[str, str]]):
    name = "endpoints"

    def __init__(self, api: ObjectApi) -> None:
        super().__init__(api)
        self.svc_rt = self.resource("", "services")
        self.ep_rt = self.resource("", "endpoints")
        self.pod_rt = self.resource("", "pods")

    def initial_keys(self) -> Iterable[tuple[str, str]]:
        for svc in self.api.store.list(self.svc_rt.key):
            yield svc["metadata"]["namespace"], svc["metadata"]["name"]
        # Endpoints we wrote for services deleted while the daemon was down.
        for ep in self.api.store.list(self.ep_rt.key):
            meta = ep["metadata"]
            if TRIGGER_TIME in (meta.get("annotations") or {}) and self.api.store.get(
                    self.svc_rt.key, meta["namespace"], meta["name"]) is None:
                yield meta["namespace"], meta["name"]

    def keys_for(self, event: Event) -> Iterable[tuple[str, str]]:
        meta = event.object["metadata"]
        namespace = meta.get("namespace", "")
        if event.key == self.svc_rt.key:
            return [(namespace, meta["name"])]
        if event.key == self.pod_rt.key:
            # Labels may have changed either way: look at every selecting service around.
            return [(namespace, svc["metadata"]["name"])
                    for svc in self.api.store.list(self.svc_rt.key, namespace)
                    if svc.get("spec", {}).get("selector")]
        if event.key == self.ep_rt.key:
            svc = self.api.store.get(self.svc_rt.key, namespace, meta["name"])
            if svc is not None and svc.get("spec", {}).get("selector"):
                return [(namespace, meta["name"])]  # put back what someone changed
        return []

    def reconcile(self, key: tuple[str, str]) -> float | None:
        namespace, name = key
        service = self.api.find(self.svc_rt, namespace, name)
        current = self.api.find(self.ep_rt, namespace, name)
        if service is None:
            if current is not None:
                self._delete(namespace, name)
            return None
        selector = service.get("spec", {}).get("selector")
        if not selector:
            return None  # user-managed Endpoints
        ns = self.api.store.get("/namespaces", "", namespace)
        if ns is None or ns["metadata"].get("deletionTimestamp"):
            return None  # no new content in a namespace being emptied
        pods, _ = self.api.list(self.pod_rt, namespace)
        matching = [p for p in pods
                    if labels_match({"matchLabels": selector}, p["metadata"].get("labels") or {})]
        subsets = desired_subsets(service, matching)
        labels = dict(service["metadata"].get("labels") or {})
        if service.get("spec", {}).get("clusterIP") == "None":
            labels[HEADLESS_LABEL] = ""
        if current is not None and (current.get("subsets") or []) == subsets and (
                current["metadata"].get("labels") or {}) == labels:
            return None
        endpoints = current or {"apiVersion": "v1", "kind": "Endpoints",
                                "metadata": {"name": name, "namespace": namespace}}
        meta = endpoints["metadata"]
        if labels:
            meta["labels"] = labels
        else:
            meta.pop("labels", None)
        meta.setdefault("annotations", {})[TRIGGER_TIME] = now()
        if subsets:
            endpoints["subsets"] = subsets
        else:
            endpoints.pop("subsets", None)
        if current is None:
            self.api.create(self.ep_rt, namespace, endpoints)
        else:
            self.api.update(self.ep_rt, namespace, name, endpoints)
        return None

    def _delete(self, namespace: str, name: str) -> None:
        try:
            self.api.delete(self.ep_rt, namespace, name)
        except ApiError as exc:
            if exc.code != 404:
                raise
