"""Which DestinationRule applies to a host for a given proxy, and its effective traffic policy.

Lookup follows Istio's: a rule in the proxy's own namespace first, then one exported from the
host's namespace, then one exported from the root namespace; within a namespace the most specific
host wins (exact before wildcard), and among equals the oldest (Istio merges such rules only in
narrow cases; `outbound_warnings` reports the shadowed ones).
"""

from __future__ import annotations

from ...kube_state import Obj
from ..state import MeshState
from .hosts import (
    MeshHost,
    creation_order,
    expand_host,
    host_matches,
    is_wildcard,
    specificity,
    visible_to,
)
from .values import duration

POLICY_PARTS = ("connectionPool", "outlierDetection", "loadBalancer", "tls")


def rule_host(rule: Obj) -> str:
    """A DestinationRule's host, expanded like Istio's (short name → rule's namespace)."""
    return expand_host(str((rule.get("spec") or {}).get("host", "")),
                       rule["metadata"].get("namespace", ""))


RulesByHost = tuple[dict[str, list[Obj]], list[tuple[str, Obj]]]


def rules_by_host(state: MeshState) -> RulesByHost:
    """The snapshot's DestinationRules by expanded host (exact hosts), and the wildcard ones
    with their pattern: built once per pass, so finding a host's rules costs no scan of all."""
    exact: dict[str, list[Obj]] = {}
    wildcards: list[tuple[str, Obj]] = []
    for rule in state.destination_rules:
        pattern = rule_host(rule)
        if is_wildcard(pattern):
            wildcards.append((pattern, rule))
        else:
            exact.setdefault(pattern, []).append(rule)
    return exact, wildcards


def destination_rule_for(state: MeshState, host: MeshHost, proxy_pod: Obj) -> Obj | None:
    proxy_meta = proxy_pod["metadata"]
    proxy_ns = proxy_meta.get("namespace", "")
    labels = proxy_meta.get("labels") or {}
    exact, wildcards = state.derived(rules_by_host)
    matching = [*exact.get(host.hostname, []),
                *(r for pattern, r in wildcards if host_matches(pattern, host.hostname))]
    candidates = [r for r in matching if _selects(r, labels)]
    order = [proxy_ns, host.namespace, state.root_namespace]
    for step, namespace in enumerate(order):
        found = [r for r in candidates if r["metadata"].get("namespace", "") == namespace
                 and (step == 0 or visible_to(r, proxy_ns))]
        if found:
            return min(found, key=lambda r: (tuple(-x for x in specificity(rule_host(r))),
                                             creation_order(r)))
    return None


def _selects(rule: Obj, proxy_labels: dict[str, str]) -> bool:
    selector = ((rule.get("spec") or {}).get("workloadSelector") or {}).get("matchLabels")
    return not selector or all(proxy_labels.get(k) == v for k, v in selector.items())


def subsets(rule: Obj | None) -> list[Obj]:
    return list(((rule or {}).get("spec") or {}).get("subsets") or [])


def effective_policy(rule: Obj | None, port: int, subset: str | None) -> Obj:
    """Istio's MergeTrafficPolicy: the rule's policy with its port-level settings for `port`,
    then the subset's policy (with its own port-level settings) overriding part by part."""
    spec = (rule or {}).get("spec") or {}
    merged = _for_port(spec.get("trafficPolicy") or {}, port)
    if subset is not None:
        for candidate in spec.get("subsets") or []:
            if candidate.get("name") == subset:
                merged.update(_for_port(candidate.get("trafficPolicy") or {}, port))
    return merged


def _for_port(policy: Obj, port: int) -> Obj:
    out = {k: policy[k] for k in POLICY_PARTS if policy.get(k) is not None}
    for setting in policy.get("portLevelSettings") or []:
        if int((setting.get("port") or {}).get("number", -1)) == port:
            out.update({k: setting[k] for k in POLICY_PARTS if setting.get(k) is not None})
    return out


def hash_policy(lb: Obj | None) -> Obj | None:
    """The route-side half of consistent hashing: what the hash is computed from."""
    consistent = (lb or {}).get("consistentHash")
    if not consistent:
        return None
    if consistent.get("httpHeaderName"):
        return {"header": {"header_name": consistent["httpHeaderName"]}}
    if consistent.get("httpCookie"):
        cookie = consistent["httpCookie"]
        out: Obj = {"name": cookie.get("name", "")}
        if cookie.get("path"):
            out["path"] = cookie["path"]
        if cookie.get("ttl") is not None:
            out["ttl"] = duration(cookie["ttl"], "consistentHash.httpCookie.ttl")
        return {"cookie": out}
    if consistent.get("useSourceIp"):
        return {"connection_properties": {"source_ip": True}}
    if consistent.get("httpQueryParameterName"):
        return {"query_parameter": {"name": consistent["httpQueryParameterName"]}}
    return None
