"""Cluster IPs and node ports of Services, allocated and checked as kube-apiserver does.

Cluster IPs come from 127.96.0.0/16 (a real cluster uses 10.96.0.0/16): the embedded cluster
stays on loopback so that a learner's `curl <cluster-ip>` can never send a packet off this
machine. Node ports come from the real default range 30000-32767, chosen at random as
kube-apiserver chooses them, and never one that something on this host already listens on:
several clusters share one host (a workshop, the test suite), and gateway Envoys bind their node
ports with SO_REUSEPORT, so two clusters on one port would silently split each other's
connections instead of failing.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable
from typing import Any

from labs.embedded.loopback import port_is_free

from .errors import FieldCause, invalid

Obj = dict[str, Any]
CLUSTER_IP_RANGE = ipaddress.ip_network("127.96.0.0/16")
FIRST_DYNAMIC_IP = 10  # .1 is the `kubernetes` Service, as on a real cluster
NODE_PORT_RANGE = range(30000, 32768)
NODE_PORT_TYPES = ("NodePort", "LoadBalancer")


def _node_ports(svc: Obj) -> set[int]:
    return {int(p["nodePort"]) for p in svc.get("spec", {}).get("ports") or []
            if isinstance(p.get("nodePort"), int)}


class ServiceAddresses:
    """Which cluster IPs and node ports are taken, and `admit`/`release` of Services."""

    def __init__(self, services: Iterable[Obj]) -> None:
        self._ips: set[str] = set()
        self._ports: set[int] = set()
        for svc in services:
            self._ips.add(svc.get("spec", {}).get("clusterIP", ""))
            self._ports |= _node_ports(svc)
        self._next_ip = FIRST_DYNAMIC_IP

    def admit(self, svc: Obj, old: Obj | None, commit: bool = True) -> None:
        """Fill in and claim the Service's cluster IP (on create) and node ports; 422 when a
        requested one is taken or out of range. Nothing is claimed when the write is rejected
        or `commit` is False (dry run)."""
        saved = (set(self._ips), set(self._ports), self._next_ip)
        try:
            spec = svc.setdefault("spec", {})
            name = svc["metadata"]["name"]
            if old is None and spec.get("type") != "ExternalName":
                self._admit_cluster_ip(spec, name)
            self._admit_node_ports(spec, name, old)
        except BaseException:
            self._ips, self._ports, self._next_ip = saved
            raise
        if not commit:
            self._ips, self._ports, self._next_ip = saved

    def release(self, svc: Obj) -> None:
        self._ips.discard(svc.get("spec", {}).get("clusterIP", ""))
        self._ports -= _node_ports(svc)

    def _admit_cluster_ip(self, spec: Obj, name: str) -> None:
        requested = spec.get("clusterIP")
        if requested in (None, ""):
            spec["clusterIP"] = self._allocate_ip()
            spec["clusterIPs"] = [spec["clusterIP"]]
        elif requested != "None":  # "None" is a headless Service: no address to claim
            if requested in self._ips:
                raise invalid("Service", name, [FieldCause(
                    "spec.clusterIPs", "FieldValueInvalid",
                    f'Invalid value: ["{requested}"]: failed to allocate IP {requested}: '
                    "provided IP is already allocated")])
            self._ips.add(requested)

    def _allocate_ip(self) -> str:
        for _ in range(CLUSTER_IP_RANGE.num_addresses):
            candidate = str(CLUSTER_IP_RANGE[self._next_ip])
            self._next_ip += 1
            if self._next_ip >= CLUSTER_IP_RANGE.num_addresses - 1:
                self._next_ip = FIRST_DYNAMIC_IP
            if candidate not in self._ips:
                self._ips.add(candidate)
                return candidate
        raise RuntimeError("the embedded cluster ran out of Service cluster IPs")

    def _admit_node_ports(self, spec: Obj, name: str, old: Obj | None) -> None:
        previous = _node_ports(old) if old else set()
        old_by_port = {p.get("port"): p.get("nodePort")
                       for p in (old or {}).get("spec", {}).get("ports") or []}
        wanted = spec.get("type") in NODE_PORT_TYPES
        kept: set[int] = set()
        for i, port in enumerate(spec.get("ports") or []):
            if not wanted:
                port.pop("nodePort", None)
                continue
            node_port = port.get("nodePort") or old_by_port.get(port.get("port"))
            if node_port is None:
                node_port = self._allocate_port()
            elif node_port not in previous:
                self._claim_port(node_port, name, i)
            port["nodePort"] = node_port
            kept.add(node_port)
        self._ports -= previous - kept

    def _claim_port(self, node_port: Any, name: str, index: int) -> None:
        field = f"spec.ports[{index}].nodePort"
        if not isinstance(node_port, int) or node_port not in NODE_PORT_RANGE:
            raise invalid("Service", name, [FieldCause(
                field, "FieldValueInvalid",
                f"Invalid value: {node_port}: provided port is not in the valid range. "
                f"The range of valid ports is {NODE_PORT_RANGE.start}-"
                f"{NODE_PORT_RANGE.stop - 1}")])
        if node_port in self._ports:
            raise invalid("Service", name, [FieldCause(
                field, "FieldValueInvalid",
                f"Invalid value: {node_port}: provided port is already allocated")])
        self._ports.add(node_port)

    def _allocate_port(self) -> int:
        start = random.randrange(len(NODE_PORT_RANGE))
        for offset in range(len(NODE_PORT_RANGE)):
            candidate = NODE_PORT_RANGE[(start + offset) % len(NODE_PORT_RANGE)]
            if candidate not in self._ports and port_is_free(candidate):
                self._ports.add(candidate)
                return candidate
        raise RuntimeError("the embedded cluster ran out of Service node ports")
