"""Mesh-wide problems with VirtualServices, DestinationRules and ServiceEntries that are not
unsupported fields: values that cannot be translated, hosts that match nothing, rules shadowed
by an older one. `build_outbound` skips what it cannot translate; this says why.
"""

from __future__ import annotations

from ...kube_state import Obj
from ..state import MeshState
from .clusters import check_traffic_policy
from .destinationrule import effective_policy, rule_host
from .hosts import creation_order, host_matches, sidecar_hosts
from .values import ConfigError
from .virtualservice import RouteContext, applies_to_sidecars, vs_hosts, vs_routes

ObjectWarning = tuple[Obj, str]


def outbound_warnings(state: MeshState) -> list[ObjectWarning]:
    """(object, message) for every problem found, each message saying how to fix it."""
    warn: list[ObjectWarning] = []
    known: set[str] = set()
    for namespace in sorted({o["metadata"].get("namespace", "") for o in
                             [*state.services, *state.service_entries]}):
        known.update(h.hostname for h in sidecar_hosts(state, namespace, warn))
    warn += _virtual_services(state, sorted(known))
    warn += _destination_rules(state, sorted(known))
    unique: dict[tuple[int, str], ObjectWarning] = {}
    for obj, message in warn:
        unique.setdefault((id(obj), message), (obj, message))
    return list(unique.values())


def _matches_nothing(pattern: str, known: list[str], kind: str) -> str | None:
    if any(host_matches(pattern, h) for h in known):
        return None
    hint = ""
    if "*" not in pattern and pattern.count(".") in (1, 2):
        hint = (" (Istio expands only single-label short names such as `reviews`; write the "
                "short name or the full name like reviews.default.svc.cluster.local)")
    return f"host {pattern} matches no Service or ServiceEntry, so this {kind} has no effect{hint}"


def _virtual_services(state: MeshState, known: list[str]) -> list[ObjectWarning]:
    out: list[ObjectWarning] = []
    owner: dict[str, Obj] = {}
    for vs in sorted(state.virtual_services, key=creation_order):
        for pattern in vs_hosts(vs):
            problem = _matches_nothing(pattern, known, "VirtualService")
            if problem and applies_to_sidecars(vs):  # gateway hosts need no Service
                out.append((vs, problem))
            if not applies_to_sidecars(vs):
                continue
            older = owner.setdefault(pattern, vs)
            if older is not vs:
                meta = older["metadata"]
                out.append((vs, f"host {pattern} is already routed by the older VirtualService "
                                f"{meta.get('namespace')}/{meta['name']}; Istio merges "
                                f"VirtualServices only in narrow cases, so this one is ignored "
                                f"for it — merge the routes into one VirtualService"))
        ctx = RouteContext(vs, 80, {}, "", {}, lambda *_: None, check_only=True)
        try:
            vs_routes(ctx)
        except ConfigError as exc:
            out.append((vs, f"{exc}; the VirtualService is not applied"))
    return out


def _destination_rules(state: MeshState, known: list[str]) -> list[ObjectWarning]:
    out: list[ObjectWarning] = []
    owner: dict[tuple[str, str], Obj] = {}
    for rule in sorted(state.destination_rules, key=creation_order):
        host = rule_host(rule)
        problem = _matches_nothing(host, known, "DestinationRule")
        if problem:
            out.append((rule, problem))
        key = (rule["metadata"].get("namespace", ""), host)
        older = owner.setdefault(key, rule)
        if older is not rule and not (rule.get("spec") or {}).get("workloadSelector"):
            out.append((rule, f"the older DestinationRule {older['metadata']['name']} in this "
                              f"namespace already applies to {host}; this one is ignored — "
                              f"merge the two"))
        try:
            _check_rule(rule)
        except ConfigError as exc:
            out.append((rule, f"{exc}; the traffic policy is not applied"))
    return out


def _check_rule(rule: Obj) -> None:
    spec = rule.get("spec") or {}
    ports = {int((s.get("port") or {}).get("number", 0))
             for s in (spec.get("trafficPolicy") or {}).get("portLevelSettings") or []}
    subset_names: list[str | None] = [None]
    for index, subset in enumerate(spec.get("subsets") or []):
        if not subset.get("name"):
            raise ConfigError(f"spec.subsets[{index}] has no name")
        subset_names.append(subset["name"])
        ports |= {int((s.get("port") or {}).get("number", 0))
                  for s in (subset.get("trafficPolicy") or {}).get("portLevelSettings") or []}
    for port in ports | {0}:
        for name in subset_names:
            check_traffic_policy(effective_policy(rule, port, name))
