"""Writes the status istiod writes on Kubernetes Ingress and Gateway API objects, and warns about
what the embedded mesh does not emulate on them.

- GatewayClass: `Accepted` ("Handled by Istio controller").
- Gateway: `Accepted`, `Programmed` ("Resource programmed, assigned to service(s) ..." once its
  Service has the listener ports and a load balancer address), `addresses`, per-listener
  conditions and attachedRoutes.
- HTTPRoute: one `parents[]` entry per parentRef to a Gateway Istio manages (none for a missing
  Gateway), controllerName `istio.io/gateway-controller` (entries of other controllers are
  kept), conditions `Accepted` and `ResolvedRefs`.
- Ingress: `status.loadBalancer.ingress` = the ingress gateway Service's address, as Istio's
  ingress status syncer reports it (here 127.0.0.1).
A condition keeps its lastTransitionTime while its status does not change; nothing is written
when nothing changed. Not-emulated fields become a Warning event (reason NotEmulated), once per
object generation and message for as long as the problem lasts.
"""

from __future__ import annotations

import logging
from typing import Any

from ...apiserver.api import ObjectApi
from ...apiserver.errors import ApiError
from ...apiserver.objects import now
from .gateway_api import CONTROLLER, Translation, service_fqdn, service_name
from .gateway_install import GATEWAY_SERVICE
from .httproute import quoted
from .ingress import INGRESS_NAMESPACE

log = logging.getLogger(__name__)
Obj = dict[str, Any]
COMPONENT = "meshlab-mesh"
GROUP = "gateway.networking.k8s.io"


def _stamped(wanted: list[Obj], current: list[Obj]) -> list[Obj]:
    """`wanted` conditions with lastTransitionTime kept from `current` when status is unchanged."""
    before = {c.get("type"): c for c in current or []}
    out = []
    for cond in wanted:
        old = before.get(cond["type"])
        same = old is not None and old.get("status") == cond["status"]
        out.append({**cond, "lastTransitionTime": old.get("lastTransitionTime", now())
                    if same and old is not None else now()})
    return out


def _without_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items() if k != "lastTransitionTime"}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


class KubeStatusWriter:
    """Keeps Ingress and Gateway API status as istiod would, and reports what is not emulated."""

    def __init__(self, api: ObjectApi) -> None:
        self.api = api
        self._warned: set[tuple[str, int, str]] = set()

    def reconcile(self, translation: Translation, ingresses: list[Obj],
                  warnings: list[tuple[Obj, str]]) -> int:
        """Write every status that changed; returns how many objects were updated."""
        written = 0
        for (plural, namespace, name), status in translation.statuses.items():
            rt = self.api.registry.lookup(GROUP, "v1", plural)
            obj = self.api.find(rt, namespace, name) if rt is not None else None
            if obj is None or obj["metadata"].get("deletionTimestamp"):
                continue
            wanted = self._wanted(plural, obj, status)
            written += self._write(rt, obj, wanted)
        written += self._ingress_status(ingresses)
        current: set[tuple[str, int, str]] = set()
        for obj, message in translation.not_emulated:
            current.add(self._warn(obj, "NotEmulated",
                                   f"the embedded mesh does not emulate: {message}"))
        for obj, message in [*warnings, *self._missing_ingress_secrets(ingresses)]:
            current.add(self._warn(obj, "NotApplied", message))
        # Forget what no longer applies (a deleted object, an older generation, a fixed
        # problem), so the set stays as small as today's warnings.
        self._warned &= current
        return written

    # -- desired status ---------------------------------------------------------------------
    def _wanted(self, plural: str, obj: Obj, status: Obj) -> Obj:
        current = obj.get("status") or {}
        if plural == "httproutes":
            ours = {repr(p.get("parentRef")): p for p in current.get("parents") or []
                    if p.get("controllerName") == CONTROLLER}
            parents = [p for p in current.get("parents") or []
                       if p.get("controllerName") != CONTROLLER]
            for entry in status["parents"]:
                old = ours.get(repr(entry["parentRef"])) or {}
                parents.append({**entry, "conditions": _stamped(entry["conditions"],
                                                                old.get("conditions") or [])})
            return {**current, "parents": parents}
        wanted = {**current, "conditions": _stamped(status["conditions"],
                                                   current.get("conditions") or [])}
        if plural == "gateways":
            wanted.update(self._gateway_address(obj, status, current))
        return wanted

    def _gateway_address(self, gateway: Obj, status: Obj, current: Obj) -> Obj:
        """Programmed, addresses and stamped listener conditions of a Gateway."""
        rt = self.api.registry.lookup("", "v1", "services")
        assert rt is not None
        svc = self.api.find(rt, gateway["metadata"].get("namespace", ""), service_name(gateway))
        ports = {int(listener.get("port") or 0)
                 for listener in (gateway.get("spec") or {}).get("listeners") or []}
        programmed, addresses = programmed_condition(gateway, svc, ports)
        conditions = _stamped([*status["conditions"], programmed],
                              current.get("conditions") or [])
        old_listeners = {entry.get("name"): entry for entry in current.get("listeners") or []}
        listeners = [{**entry, "conditions": _stamped(
            entry["conditions"], (old_listeners.get(entry["name"]) or {}).get("conditions") or [])}
            for entry in status["listeners"]]
        # Istio reports no address until it has one, and then never removes it.
        return {"addresses": addresses or current.get("addresses") or [],
                "conditions": conditions, "listeners": listeners}

    def _ingress_status(self, ingresses: list[Obj]) -> int:
        rt = self.api.registry.lookup("networking.k8s.io", "v1", "ingresses")
        svc_rt = self.api.registry.lookup("", "v1", "services")
        assert rt is not None and svc_rt is not None
        svc = self.api.find(svc_rt, *GATEWAY_SERVICE)
        lb = ((svc or {}).get("status") or {}).get("loadBalancer", {}).get("ingress") or []
        wanted = [{k: v for k, v in i.items() if k in ("ip", "hostname")} for i in lb]
        written = 0
        for ingress in ingresses:
            current = ingress.get("status") or {}
            if (current.get("loadBalancer") or {}).get("ingress", []) == wanted:
                continue
            written += self._write(rt, ingress, {**current, "loadBalancer": {"ingress": wanted}})
        return written

    def _missing_ingress_secrets(self, ingresses: list[Obj]) -> list[tuple[Obj, str]]:
        rt = self.api.registry.lookup("", "v1", "secrets")
        assert rt is not None
        out = []
        for ingress in ingresses:
            for index, tls in enumerate((ingress.get("spec") or {}).get("tls") or []):
                name = tls.get("secretName")
                if name and self.api.find(rt, INGRESS_NAMESPACE, name) is None:
                    out.append((ingress, f"spec.tls[{index}].secretName {name}: Istio's ingress "
                                         f"gateway reads this Secret from {INGRESS_NAMESPACE}, "
                                         "where it does not exist; create it there with "
                                         f"`kubectl create secret tls {name} -n "
                                         f"{INGRESS_NAMESPACE} --cert=... --key=...`"))
        return out

    # -- writing ----------------------------------------------------------------------------
    def _write(self, rt: Any, obj: Obj, wanted: Obj) -> int:
        if _without_times(obj.get("status") or {}) == _without_times(wanted):
            return 0
        meta = obj["metadata"]
        try:
            self.api.update(rt, meta.get("namespace", ""), meta["name"],
                            {**obj, "status": wanted}, subresource="status", validate=False)
        except ApiError as err:  # deleted or changed meanwhile: the next pass sees it
            log.debug("status of %s %s not written: %s", obj.get("kind"), meta["name"],
                      err.message)
            return 0
        return 1

    def _warn(self, obj: Obj, reason: str, message: str) -> tuple[str, int, str]:
        """A Warning event, once per object generation and message; returns its key."""
        meta = obj["metadata"]
        noted = (meta.get("uid", ""), int(meta.get("generation") or 1), message)
        if noted not in self._warned:
            self._warned.add(noted)
            self.api.record_event(obj, "Warning", reason, message, COMPONENT)
        return noted


def _join(items: list[str]) -> str:
    """Istio's humanReadableJoin."""
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + ", and " + items[-1]


def programmed_condition(gateway: Obj, svc: Obj | None, ports: set[int]) -> tuple[Obj, list[Obj]]:
    """A Gateway's `Programmed` condition and the addresses to report, as Istio's
    ResolveGatewayInstances and setProgrammedCondition decide them (pilot/pkg/config/kube/
    gateway/context.go, conversion.go): each listener port found on the Gateway's Service is
    "assigned"; a LoadBalancer Service without an ingress address is "address pending". Istio
    also requires endpoints behind each port; this pass does not watch Endpoints, so a Gateway
    whose pod is not ready yet already counts as assigned here."""
    fqdn = service_fqdn(gateway)
    generation = int(gateway["metadata"].get("generation") or 1)
    internal: list[str] = []
    warnings: list[str] = []
    usable = True
    spec, lb = (svc or {}).get("spec") or {}, ((svc or {}).get("status") or {}).get(
        "loadBalancer") or {}
    external = [i["ip"] for i in lb.get("ingress") or [] if i.get("ip")]
    if svc is None:
        warnings.append(f"hostname {quoted(fqdn)} not found")
        usable = False
    else:
        service_ports = {int(p.get("port") or 0) for p in spec.get("ports") or []}
        for port in sorted(ports):
            if port not in service_ports:
                warnings.append(f"port {port} not found for hostname {quoted(fqdn)}")
                usable = False
                continue
            internal.append(f"{fqdn}:{port}")
        if internal and not external and spec.get("type") == "LoadBalancer":
            warnings.append(f"address pending for hostname {quoted(fqdn)}")
    internal.sort()  # Go's sets.SortedList: as strings
    warnings.sort()
    if not warnings:
        programmed = {"type": "Programmed", "status": "True", "reason": "Programmed",
                      "message": f"Resource programmed, assigned to service(s) {_join(internal)}"
                      if internal else "Resource programmed"}
    else:
        detail = "; ".join(warnings)
        programmed = {"type": "Programmed", "status": "False",
                      "reason": "AddressNotAssigned" if usable else "AddressNotUsable",
                      "message": f"Assigned to service(s) {_join(internal)}, but failed to "
                                 f"assign to all requested addresses: {detail}" if internal
                      else f"Failed to assign to any requested addresses: {detail}"}
    ips = external or ([str(spec["clusterIP"])] if internal and spec.get("clusterIP")
                       not in (None, "", "None") else [])
    return ({**programmed, "observedGeneration": generation},
            [{"type": "IPAddress", "value": ip} for ip in ips])

