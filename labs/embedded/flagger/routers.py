"""The objects Flagger's routers write (fluxcd/flagger v1.44.0 `pkg/router/`), by provider.

- KubernetesRouter (`kubernetes_default.go`): ClusterIP Services `<apex>-canary` (selector
  `<label>: <value>`), `<apex>-primary` (`<value>-primary`) and the apex (→ primary).
- IstioRouter (`istio.go`): DestinationRules `<apex>-canary`/`-primary` (host only, plus
  `service.trafficPolicy`) and VirtualService `<apex>` (hosts + apex, gateways or `mesh`, one
  http route to the two Services by weight), networking.istio.io/v1beta1.
- GatewayAPIV1Beta1Router (`gateway_api_v1beta1.go`): HTTPRoute `<apex>` with
  `service.gatewayRefs` as parents, default match PathPrefix `/`, backendRefs primary/canary.
  The embedded Istio does not route HTTPRoutes whose parent is a Service (GAMMA): it reports
  them not emulated in their status, so this provider's weights only take effect on a mesh
  that serves GAMMA routes.
- SmiRouter (`smi.go`, provider `linkerd`): TrafficSplit `<apex>` split.smi-spec.io/v1alpha1.

A/B testing (`analysis.match`), mirroring (`analysis.mirror`, `mirrorWeight`) and
`service.match`/`rewrite`/`headers`/`corsPolicy` are written into the VirtualService as
upstream does. Not emulated: session affinity,
delegation, TCP routes (`appProtocol`), and matches or filters with the Gateway API and SMI
providers. A Canary using them is refused with a Warning event rather than routed differently.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Protocol

from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.errors import ApiError
from labs.embedded.apiserver.objects import LAST_APPLIED
from labs.embedded.apiserver.resources import ResourceType

from . import spec
from .deployment import FlaggerError, filter_metadata, owner_reference
from .status import MANAGER

Obj = dict[str, Any]
CONFIG_ANNOTATION = "flagger.kubernetes.io/original-configuration"
ISTIO, GATEWAY_API_V1BETA1, LINKERD = "istio", "gatewayapi:v1beta1", "linkerd"
PROVIDERS = (ISTIO, GATEWAY_API_V1BETA1, LINKERD)
NOT_EMULATED_ANALYSIS = ("sessionAffinity",)
NOT_EMULATED_SERVICE = ("delegation", "appProtocol")
# copied into the VirtualService's routes by the Istio router only
ISTIO_ONLY_SERVICE = ("match", "rewrite", "headers", "corsPolicy")


class MeshRouter(Protocol):
    def reconcile(self, cd: Obj) -> None: ...
    def get_routes(self, cd: Obj) -> tuple[int, int, bool]: ...
    def set_routes(self, cd: Obj, primary: int, canary: int, mirrored: bool) -> None: ...


def not_emulated(cd: Obj, provider: str) -> str | None:
    """What of the Canary this emulation would silently ignore, said plainly."""
    used = [f"analysis.{f}" for f in NOT_EMULATED_ANALYSIS if spec.analysis(cd).get(f)]
    service = (cd.get("spec") or {}).get("service") or {}
    used += [f"service.{f}" for f in NOT_EMULATED_SERVICE if service.get(f)]
    if provider != ISTIO:
        used += [f"service.{f} with provider {provider}" for f in ISTIO_ONLY_SERVICE
                 if service.get(f)]
        if spec.analysis(cd).get("match"):
            used.append(f"analysis.match (A/B testing) with provider {provider}")
        if spec.analysis(cd).get("mirror"):
            used.append(f"analysis.mirror with provider {provider}")
    kind = cd["spec"]["targetRef"].get("kind", "Deployment")
    if kind != "Deployment":
        used.append(f"targetRef.kind {kind}")
    if cd["spec"].get("revertOnDeletion"):
        used.append("revertOnDeletion")
    if not used:
        return None
    return (f"the embedded Flagger does not emulate {', '.join(used)}; remove them from the "
            "Canary")


def _resource(api: ObjectApi, group: str, version: str, plural: str) -> ResourceType:
    rt = api.registry.lookup(group, version, plural)
    if rt is None:
        raise FlaggerError(f"the server could not find the requested resource "
                           f"({plural}.{group or 'core'}/{version}): is its CRD installed?")
    return rt


def _write(api: ObjectApi, rt: ResourceType, obj: Obj, what: str) -> None:
    meta = obj["metadata"]
    try:
        if meta.get("resourceVersion"):
            api.update(rt, meta["namespace"], meta["name"], obj, manager=MANAGER)
        else:
            api.create(rt, meta["namespace"], obj, manager=MANAGER)
    except ApiError as err:
        verb = "update" if meta.get("resourceVersion") else "create"
        raise FlaggerError(f"{what} {meta['name']}.{meta['namespace']} {verb} error: "
                           f"{err.message}") from None


class KubernetesRouter:
    """KubernetesDefaultRouter: the three ClusterIP Services."""

    def __init__(self, api: ObjectApi, label: str, value: str, ports: dict[str, int]) -> None:
        self.api = api
        self.services = _resource(api, "", "v1", "services")
        self.label, self.value, self.ports = label, value, ports

    def initialize(self, cd: Obj) -> None:
        _, primary, canary = spec.service_names(cd)
        service = cd["spec"].get("service") or {}
        self._reconcile(cd, canary, self.value, service.get("canary"))
        self._reconcile(cd, primary, f"{self.value}-primary", service.get("primary"))

    def reconcile(self, cd: Obj) -> None:
        apex, _, _ = spec.service_names(cd)
        self._reconcile(cd, apex, f"{self.value}-primary",
                        (cd["spec"].get("service") or {}).get("apex"))

    def _reconcile(self, cd: Obj, name: str, selector: str, metadata: Obj | None) -> None:
        service = cd["spec"].get("service") or {}
        port = int(service.get("port", 0))
        port_specs: list[Obj] = [{"name": service.get("portName") or "http",
                                  "protocol": "TCP", "port": port,
                                  "targetPort": service.get("targetPort") or port}]
        port_specs += [{"name": n, "protocol": "TCP", "port": p, "targetPort": p}
                       for n, p in sorted(self.ports.items(), key=lambda item: item[1])]
        labels = dict((metadata or {}).get("labels") or {})
        labels[self.label] = name
        annotations = filter_metadata((metadata or {}).get("annotations"))
        namespace = cd["metadata"]["namespace"]
        current = self.api.find(self.services, namespace, name)
        if current is None:
            body = {"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": name, "namespace": namespace, "labels": labels,
                                 "annotations": annotations,
                                 "ownerReferences": [owner_reference(cd)]},
                    "spec": {"type": "ClusterIP", "selector": {self.label: selector},
                             "ports": port_specs}}
            if service.get("headless"):
                body["spec"]["clusterIP"] = "None"
            _write(self.api, self.services, body, "service")
            return
        new = copy.deepcopy(current)
        changed = False
        ports = sorted(({k: p[k] for k in port_specs[0] if k in p}
                        for p in current["spec"].get("ports") or []),
                       key=lambda p: int(p.get("port", 0)))
        if ports != sorted(port_specs, key=lambda p: int(p["port"])) or \
                current["spec"].get("selector") != {self.label: selector}:
            new["spec"]["ports"] = port_specs
            new["spec"]["selector"] = {self.label: selector}
            changed = True
        owner = next((r for r in current["metadata"].get("ownerReferences") or []
                      if r.get("controller")), None)
        if owner is not None and owner.get("kind") == "Canary" and \
                owner.get("name") == cd["metadata"]["name"]:
            if (current["metadata"].get("annotations") or {}) != annotations:
                new["metadata"]["annotations"] = annotations
                changed = True
            if (current["metadata"].get("labels") or {}) != labels:
                new["metadata"]["labels"] = labels
                changed = True
        if changed:
            _write(self.api, self.services, new, "service")


def _apex_metadata(cd: Obj) -> tuple[dict[str, str], dict[str, str]]:
    apex = (cd["spec"].get("service") or {}).get("apex") or {}
    return dict(apex.get("labels") or {}), filter_metadata(apex.get("annotations"))


class IstioRouter:
    """IstioRouter for HTTP canaries."""

    def __init__(self, api: ObjectApi) -> None:
        self.api = api
        self.rules = _resource(api, "networking.istio.io", "v1beta1", "destinationrules")
        self.services = _resource(api, "networking.istio.io", "v1beta1", "virtualservices")

    def reconcile(self, cd: Obj) -> None:
        _, primary, canary = spec.service_names(cd)
        for name in (canary, primary):
            self._destination_rule(cd, name)
        self._virtual_service(cd)

    def _destination_rule(self, cd: Obj, name: str) -> None:
        namespace = cd["metadata"]["namespace"]
        new_spec: Obj = {"host": name}
        policy = (cd["spec"].get("service") or {}).get("trafficPolicy")
        if policy:
            new_spec["trafficPolicy"] = policy
        current = self.api.find(self.rules, namespace, name)
        if current is None:
            _write(self.api, self.rules, {
                "apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
                "metadata": {"name": name, "namespace": namespace,
                             "ownerReferences": [owner_reference(cd)]},
                "spec": new_spec}, "DestinationRule")
        elif current.get("spec") != new_spec:
            current["spec"] = new_spec
            _write(self.api, self.rules, current, "DestinationRule")

    @staticmethod
    def _routes(cd: Obj, primary: int, canary: int, mirrored: bool = False) -> list[Obj]:
        """The http routes: one weighted route (with `service.match` and the other
        `service` route fields, and a mirror to the canary when `mirrored`); for A/B testing
        the analysis match merged into it, then a primary-only route for the rest."""
        _, primary_name, canary_name = spec.service_names(cd)
        service = cd["spec"].get("service") or {}
        common: Obj = {f: copy.deepcopy(service[f]) for f in ("rewrite", "timeout", "retries",
                                                             "corsPolicy", "headers")
                       if service.get(f)}
        primary_dest = {"destination": {"host": primary_name}, "weight": primary}
        weighted = [primary_dest, {"destination": {"host": canary_name}, "weight": canary}]
        service_match = service.get("match") or []
        ab_match = spec.analysis(cd).get("match") or []
        if not ab_match:
            route: Obj = {**({"match": service_match} if service_match else {}), **common,
                          "route": weighted}
            if mirrored:
                route["mirror"] = {"host": canary_name}
                weight = int(spec.analysis(cd).get("mirrorWeight") or 0)
                if weight > 0:
                    route["mirrorPercentage"] = {"value": float(weight)}
            return [route]
        return [{"match": _merge_matches(ab_match, service_match), **common, "route": weighted},
                {**({"match": service_match} if service_match else {}), **common,
                 "route": [dict(primary_dest)]}]

    def _virtual_service(self, cd: Obj) -> None:
        apex, _, _ = spec.service_names(cd)
        namespace = cd["metadata"]["namespace"]
        service = cd["spec"].get("service") or {}
        hosts = list(service.get("hosts") or [])
        if not any(h in (apex, "*") for h in hosts):
            hosts.append(apex)
        gateways = list(service.get("gateways") or []) or ["mesh"]
        new_spec = {"hosts": hosts, "gateways": gateways, "http": self._routes(cd, 100, 0)}
        labels, annotations = _apex_metadata(cd)
        current = self.api.find(self.services, namespace, apex)
        if current is None:
            _write(self.api, self.services, {
                "apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
                "metadata": {"name": apex, "namespace": namespace, "labels": labels,
                             "annotations": annotations,
                             "ownerReferences": [owner_reference(cd)]},
                "spec": new_spec}, "VirtualService")
            return
        old_annotations = current["metadata"].get("annotations") or {}
        for kept in (LAST_APPLIED, CONFIG_ANNOTATION):
            if kept in old_annotations:
                annotations[kept] = old_annotations[kept]
        spec_differs = _without_weights(new_spec) != _without_weights(current.get("spec") or {})
        if spec_differs or labels != (current["metadata"].get("labels") or {}) or \
                annotations != old_annotations:
            if spec_differs and LAST_APPLIED not in annotations:
                # the VirtualService Flagger takes over is kept, to be restored on deletion
                annotations[CONFIG_ANNOTATION] = json.dumps(current.get("spec") or {})
            current["spec"] = new_spec
            current["metadata"]["labels"] = labels
            current["metadata"]["annotations"] = annotations
            _write(self.api, self.services, current, "VirtualService")

    def get_routes(self, cd: Obj) -> tuple[int, int, bool]:
        apex, primary_name, canary_name = spec.service_names(cd)
        namespace = cd["metadata"]["namespace"]
        vs = self.api.find(self.services, namespace, apex)
        if vs is None:
            raise FlaggerError(f"VirtualService {apex}.{namespace} get query error "
                               f'virtualservices.networking.istio.io "{apex}" not found')
        chosen: Obj = {}
        for http in (vs.get("spec") or {}).get("http") or []:
            if any((r.get("destination") or {}).get("host") == canary_name
                   for r in http.get("route") or []):
                chosen = http
        weights = {(r.get("destination") or {}).get("host"): int(r.get("weight") or 0)
                   for r in chosen.get("route") or []}
        mirrored = bool((chosen.get("mirror") or {}).get("host"))
        return weights.get(primary_name, 0), weights.get(canary_name, 0), mirrored

    def set_routes(self, cd: Obj, primary: int, canary: int, mirrored: bool) -> None:
        apex, _, _ = spec.service_names(cd)
        namespace = cd["metadata"]["namespace"]
        vs = self.api.find(self.services, namespace, apex)
        if vs is None:
            raise FlaggerError(f"VirtualService {apex}.{namespace} get query error "
                               f'virtualservices.networking.istio.io "{apex}" not found')
        vs["spec"]["http"] = self._routes(cd, primary, canary, mirrored)
        try:
            self.api.update(self.services, namespace, apex, vs, manager=MANAGER)
        except ApiError as err:
            raise FlaggerError(f"VirtualService {apex}.{namespace} update failed: "
                               f"{err.message}") from None


def _merge_matches(analysis_match: list[Obj], service_match: list[Obj]) -> list[Obj]:
    """mergeMatchConditions: each analysis match over each service match (its headers and
    sourceLabels win)."""
    if not service_match:
        return copy.deepcopy(analysis_match)
    merged = []
    for ab in analysis_match:
        for base in service_match:
            one = copy.deepcopy(base)
            for field in ("headers", "sourceLabels"):
                if ab.get(field) is not None:
                    one[field] = copy.deepcopy(ab[field])
            merged.append(one)
    return merged


def _without_weights(value: Any) -> Any:
    """The spec as cmp.Diff sees it with IgnoreFields(Weight, Mirror, MirrorPercentage)."""
    if isinstance(value, dict):
        return {k: _without_weights(v) for k, v in value.items()
                if k not in ("weight", "mirror", "mirrorPercentage")}
    if isinstance(value, list):
        return [_without_weights(v) for v in value]
    return value


class GatewayAPIRouter:
    """GatewayAPIV1Beta1Router: one HTTPRoute rule splitting between the two Services."""

    def __init__(self, api: ObjectApi) -> None:
        self.api = api
        self.routes = _resource(api, "gateway.networking.k8s.io", "v1beta1", "httproutes")

    @staticmethod
    def _rule(cd: Obj, primary: int, canary: int) -> Obj:
        _, primary_name, canary_name = spec.service_names(cd)
        port = int((cd["spec"].get("service") or {}).get("port", 0))
        return {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [
                    {"group": "", "kind": "Service", "name": primary_name, "port": port,
                     "weight": primary},
                    {"group": "", "kind": "Service", "name": canary_name, "port": port,
                     "weight": canary}]}

    def reconcile(self, cd: Obj) -> None:
        service = cd["spec"].get("service") or {}
        if not service.get("gatewayRefs"):
            raise FlaggerError("GatewayRefs must be specified when using Gateway API as a "
                               "provider.")
        apex, _, _ = spec.service_names(cd)
        namespace = cd["metadata"]["namespace"]
        new_spec: Obj = {"parentRefs": copy.deepcopy(service["gatewayRefs"]),
                         "rules": [self._rule(cd, 100, 0)]}
        if service.get("hosts"):
            new_spec["hostnames"] = list(service["hosts"])
        labels, annotations = _apex_metadata(cd)
        current = self.api.find(self.routes, namespace, apex)
        if current is None:
            _write(self.api, self.routes, {
                "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "HTTPRoute",
                "metadata": {"name": apex, "namespace": namespace, "labels": labels,
                             "annotations": annotations,
                             "ownerReferences": [owner_reference(cd)]},
                "spec": new_spec}, "HTTPRoute")
            return
        if _without_weights(current.get("spec") or {}) != _without_weights(new_spec):
            current["spec"] = new_spec
            current["metadata"]["labels"] = labels
            current["metadata"]["annotations"] = annotations
            _write(self.api, self.routes, current, "HTTPRoute")

    def get_routes(self, cd: Obj) -> tuple[int, int, bool]:
        apex, primary_name, canary_name = spec.service_names(cd)
        namespace = cd["metadata"]["namespace"]
        route = self.api.find(self.routes, namespace, apex)
        if route is None:
            raise FlaggerError(f"HTTPRoute {apex}.{namespace} query error: "
                               f'httproutes.gateway.networking.k8s.io "{apex}" not found')
        weights: dict[str, int] = {}
        for rule in (route.get("spec") or {}).get("rules") or []:
            refs = rule.get("backendRefs") or []
            if any(r.get("name") == canary_name for r in refs):
                weights = {r.get("name"): int(r.get("weight", 1)) for r in refs}
        if not weights:
            raise FlaggerError(f"HTTPRoute {apex}.{namespace} does not contain routes for "
                               f"{primary_name} and {canary_name}")
        return weights.get(primary_name, 0), weights.get(canary_name, 0), False

    def set_routes(self, cd: Obj, primary: int, canary: int, mirrored: bool) -> None:
        apex, _, _ = spec.service_names(cd)
        namespace = cd["metadata"]["namespace"]
        route = self.api.find(self.routes, namespace, apex)
        if route is None:
            raise FlaggerError(f"HTTPRoute {apex}.{namespace} query error: "
                               f'httproutes.gateway.networking.k8s.io "{apex}" not found')
        route["spec"]["rules"] = [self._rule(cd, primary, canary)]
        try:
            self.api.update(self.routes, namespace, apex, route, manager=MANAGER)
        except ApiError as err:
            raise FlaggerError(f"HTTPRoute {apex}.{namespace} update error: {err.message}"
                               ) from None


class SmiRouter:
    """SmiRouter (provider `linkerd`): TrafficSplit backends canary/primary."""

    def __init__(self, api: ObjectApi) -> None:
        self.api = api
        self.splits = _resource(api, "split.smi-spec.io", "v1alpha1", "trafficsplits")

    @staticmethod
    def _backends(cd: Obj, primary: int, canary: int) -> list[Obj]:
        _, primary_name, canary_name = spec.service_names(cd)
        return [{"service": canary_name, "weight": canary},
                {"service": primary_name, "weight": primary}]

    def reconcile(self, cd: Obj) -> None:
        apex, _, _ = spec.service_names(cd)
        namespace = cd["metadata"]["namespace"]
        hosts = (cd["spec"].get("service") or {}).get("hosts") or []
        new_spec = {"service": hosts[0] if hosts else apex,
                    "backends": self._backends(cd, 100, 0)}
        current = self.api.find(self.splits, namespace, apex)
        if current is None:
            _write(self.api, self.splits, {
                "apiVersion": "split.smi-spec.io/v1alpha1", "kind": "TrafficSplit",
                "metadata": {"name": apex, "namespace": namespace,
                             "ownerReferences": [owner_reference(cd)]},
                "spec": new_spec}, "TrafficSplit")
        elif _without_weights(current.get("spec")) != _without_weights(new_spec):
            current["spec"] = new_spec
            _write(self.api, self.splits, current, "TrafficSplit")

    def get_routes(self, cd: Obj) -> tuple[int, int, bool]:
        apex, primary_name, canary_name = spec.service_names(cd)
        namespace = cd["metadata"]["namespace"]
        split = self.api.find(self.splits, namespace, apex)
        if split is None:
            raise FlaggerError(f"TrafficSplit {apex}.{namespace} get query error "
                               f'trafficsplits.split.smi-spec.io "{apex}" not found')
        weights = {b.get("service"): int(float(b.get("weight") or 0))
                   for b in (split.get("spec") or {}).get("backends") or []}
        primary, canary = weights.get(primary_name, 0), weights.get(canary_name, 0)
        if primary == 0 and canary == 0:
            raise FlaggerError(f"TrafficSplit {apex}.{namespace} does not contain routes for "
                               f"{primary_name} and {canary_name}")
        return primary, canary, False

    def set_routes(self, cd: Obj, primary: int, canary: int, mirrored: bool) -> None:
        apex, _, _ = spec.service_names(cd)
        namespace = cd["metadata"]["namespace"]
        split = self.api.find(self.splits, namespace, apex)
        if split is None:
            raise FlaggerError(f"TrafficSplit {apex}.{namespace} get query error "
                               f'trafficsplits.split.smi-spec.io "{apex}" not found')
        split["spec"]["backends"] = self._backends(cd, primary, canary)
        try:
            self.api.update(self.splits, namespace, apex, split, manager=MANAGER)
        except ApiError as err:
            raise FlaggerError(f"TrafficSplit {apex}.{namespace} update error {err.message}"
                               ) from None


def mesh_router(api: ObjectApi, provider: str) -> MeshRouter:
    """router.Factory.MeshRouter for the providers emulated here."""
    if provider == LINKERD:
        return SmiRouter(api)
    if provider.startswith(GATEWAY_API_V1BETA1):
        return GatewayAPIRouter(api)
    if provider == ISTIO:
        return IstioRouter(api)
    raise FlaggerError(f"mesh provider {provider!r} is not emulated by the embedded Flagger "
                       f"(use one of {', '.join(PROVIDERS)})")
