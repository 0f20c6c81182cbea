"""What Linkerd's controllers write about routing, as a pass of the embedded control plane.

`RoutingWriter` is what the controllers write: the HTTPRoute `status.parents` entries of the
policy controller (linkerd2 `policy-controller/k8s/status`, controllerName
`linkerd.io/policy-controller`, conditions Accepted and ResolvedRefs), and the linkerd-smi
adaptor's ServiceProfile per SMI TrafficSplit (linkerd/linkerd-smi `pkg/adaptor/controller.go`:
`dstOverrides` = the backends, skipped when the profile has `smi.linkerd.io/skip`, cleared when
the TrafficSplit is deleted). Here the adaptor always runs: `linkerd smi install` is implied.
Flagger's `gatewayapi:v1` router waits for an Accepted condition whose observedGeneration is
current (FL `pkg/router/gateway_api.go` GetRoutes); Linkerd writes none, so Flagger is run for
Linkerd with `gatewayapi:v1beta1` (FL `kustomize/linkerd/patch.yaml`), which reads no status.
"""

from __future__ import annotations

import logging

from ...apiserver.api import ObjectApi
from ...apiserver.errors import ApiError
from ...apiserver.objects import now
from ..kube_state import TRUST_DOMAIN, Obj
from .routing import (
    CONTROLLER,
    SMI_SKIP,
    RuleContext,
    http_routes,
    profiles_by_service,
    rule_backends,
    service_parents,
)
from .state import LinkerdState

log = logging.getLogger(__name__)


def _condition(kind: str, ok: bool, reason: str, message: str, before: list[Obj]) -> Obj:
    """A status condition keeping lastTransitionTime while its status does not change."""
    status = "True" if ok else "False"
    old = next((c for c in before if c.get("type") == kind), None)
    since = old.get("lastTransitionTime") if old and old.get("status") == status else None
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": since or now()}


def _without_times(entries: list[Obj]) -> list[Obj]:
    return [{**e, "conditions": [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                                 for c in e.get("conditions") or []]} for e in entries]


def _service_entry(entry: Obj) -> bool:
    """A status entry of the policy controller for a Service parent (other controllers' and
    its entries for Server parents are kept as they are)."""
    return entry.get("controllerName") == CONTROLLER and (
        entry.get("parentRef") or {}).get("kind") == "Service"


def route_status(state: LinkerdState, route: Obj) -> list[Obj]:
    """The policy controller's `status.parents` entries for an HTTPRoute's Service parents
    (linkerd2 `policy-controller/k8s/status/src/index.rs` `http_parent_status`,
    `parent_condition_service`, `backend_condition`): Accepted (NoMatchingParent for a missing
    or headless Service) and ResolvedRefs (the first backend that is not a Service is
    InvalidKind, one naming no Service BackendNotFound); messages empty and no
    observedGeneration, as upstream writes them. A route Linkerd cannot use (an unsupported
    filter) is still Accepted there; here its problem is logged by the control plane."""
    namespace = route["metadata"].get("namespace", "")
    current = {(e.get("parentRef") or {}).get("name"): e for e in
               (route.get("status") or {}).get("parents") or [] if _service_entry(e)}
    entries = []
    for ref in service_parents(route):
        ns = ref.get("namespace") or namespace
        name = str(ref.get("name", ""))
        service = state.service_for_host(f"{name}.{ns}", ns)
        before = (current.get(name) or {}).get("conditions") or []
        parent_ref = {"group": "core", "kind": "Service", "name": name, "namespace": ns,
                      **({"port": ref["port"]} if ref.get("port") is not None else {})}
        if service is None:
            accepted = _condition("Accepted", False, "NoMatchingParent", "", before)
        elif (service.get("spec") or {}).get("clusterIP") == "None":
            accepted = _condition("Accepted", False, "NoMatchingParent",
                                  "parent service must have a ClusterIP", before)
        else:
            accepted = _condition("Accepted", True, "Accepted", "", before)
        ctx = RuleContext(state, route, service or {}, int(ref.get("port") or 0))
        for rule in (route.get("spec") or {}).get("rules") or []:
            if rule.get("backendRefs"):
                rule_backends(ctx, rule)
        reason = ctx.unresolved[0] if ctx.unresolved else "ResolvedRefs"
        entries.append({"parentRef": parent_ref, "controllerName": CONTROLLER,
                        "conditions": [accepted, _condition(
                            "ResolvedRefs", not ctx.unresolved, reason, "", before)]})
    return entries


def quantity_text(value: object) -> str:
    """A weight as a resource.Quantity serialises (`100`, `500m`): what the adaptor writes."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)  # the ServiceProfile's schema judges it
    number = float(value)
    return str(int(number)) if number == int(number) else f"{round(number * 1000)}m"


def adaptor_profile(split: Obj) -> tuple[str, list[Obj]]:
    """(ServiceProfile name, dstOverrides) the linkerd-smi adaptor makes of a TrafficSplit."""
    namespace = split["metadata"].get("namespace", "")
    spec = split.get("spec") or {}
    name = f"{spec.get('service', '')}.{namespace}.svc.{TRUST_DOMAIN}"
    overrides = [{"authority": f"{b.get('service', '')}.{namespace}.svc.{TRUST_DOMAIN}",
                  "weight": quantity_text(b.get("weight", 0))}
                 for b in spec.get("backends") or []]
    return name, overrides


class RoutingWriter:
    """Writes, after each control-plane pass, what Linkerd's controllers would: HTTPRoute status
    and the ServiceProfiles of SMI TrafficSplits. Nothing is written when nothing changed."""

    def __init__(self, api: ObjectApi) -> None:
        self.api = api
        self._splits: dict[tuple[str, str], str] = {}  # (namespace, split) -> profile name

    def write(self, state: LinkerdState) -> None:
        for route in http_routes(state):
            if service_parents(route):
                self._write_status(state, route)
        self._adapt(state.traffic_splits, state.derived(profiles_by_service))

    def _write_status(self, state: LinkerdState, route: Obj) -> None:
        meta = route["metadata"]
        status = route.get("status") or {}
        mine = [e for e in status.get("parents") or [] if _service_entry(e)]
        others = [e for e in status.get("parents") or [] if not _service_entry(e)]
        ours = route_status(state, route)
        if _without_times(ours) == _without_times(mine):
            return
        group = route["apiVersion"].split("/")[0]
        rt = self.api.registry.by_key(f"{group}/httproutes")
        if rt is None:
            return
        body = {**route, "status": {**status, "parents": others + ours}}
        try:
            self.api.update(rt, meta.get("namespace", ""), meta["name"], body,
                            subresource="status", validate=False)
        except ApiError as err:  # changed meanwhile: the next pass writes it
            log.debug("HTTPRoute %s status: %s", meta["name"], err)

    def _adapt(self, splits: list[Obj], profiles: dict[tuple[str, str], Obj]) -> None:
        rt = self.api.registry.by_key("linkerd.io/serviceprofiles")
        if rt is None:
            return
        live: dict[tuple[str, str], str] = {}
        wanted: dict[tuple[str, str], list[Obj]] = {}
        for split in splits:
            namespace = split["metadata"].get("namespace", "")
            name, overrides = adaptor_profile(split)
            live[(namespace, split["metadata"]["name"])] = name
            wanted[(namespace, name)] = overrides
        for (namespace, _), name in self._splits.items():
            wanted.setdefault((namespace, name), [])  # deleted: clear its dstOverrides
        self._splits = live
        for (namespace, name), overrides in wanted.items():
            profile = profiles.get((namespace, name))
            try:
                if profile is None:
                    if overrides:
                        self.api.create(rt, namespace, {
                            "apiVersion": rt.api_version, "kind": "ServiceProfile",
                            "metadata": {"name": name, "namespace": namespace},
                            "spec": {"dstOverrides": overrides}})
                elif SMI_SKIP not in (profile["metadata"].get("annotations") or {}) and (
                        (profile.get("spec") or {}).get("dstOverrides") or []) != overrides:
                    spec = {k: v for k, v in (profile.get("spec") or {}).items()
                            if k != "dstOverrides"}
                    if overrides:
                        spec["dstOverrides"] = overrides
                    self.api.update(rt, namespace, name, {**profile, "spec": spec})
            except ApiError as err:
                log.warning("linkerd-smi adaptor: ServiceProfile %s/%s: %s", namespace, name,
                            err)
