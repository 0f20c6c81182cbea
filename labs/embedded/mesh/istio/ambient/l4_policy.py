"""AuthorizationPolicy at ztunnel: what istiod sends a ztunnel and how ztunnel decides a
connection, as RBAC on the routes of a workload's HBONE listener (hbone.py).

The conversion is istiod's (istio/istio 1.30 `pilot/pkg/serviceregistry/ambient/
authorization.go`, `convertAuthorizationPolicy` and `handleRule`):
- a policy with `targetRef(s)` is for waypoints, never for ztunnel;
- only ALLOW and DENY are sent; CUSTOM and AUDIT get the status message "ztunnel does not
  support the <action> action";
- each rule becomes a group of *rules* that must all match (`to` operations, `from` sources, one
  per `when` condition), each rule a list of *matches* of which one must match; the L4
  attributes are the sources' principals, namespaces, serviceAccounts and ipBlocks, the
  operations' ports and the `when` keys `L4_WHEN` (and their negations);
- an HTTP attribute (`L7_OPERATION`, `L7_SOURCE`, another `when` key) drops its whole rule from
  an ALLOW policy ("L7 policies never match for ALLOW") and is left out of a DENY rule ("for DENY
  they will always match, so it is more restrictive"); the policy's `ZtunnelAccepted` condition
  then says so (`ztunnel_condition`, upstream's exact text).

ztunnel's decision (istio/ztunnel `src/rbac.rs`): a connection matching any DENY policy of the
workload is denied; when ALLOW policies apply, it must match one of them (an ALLOW policy left
without rules matches nothing). Here each group is one Envoy RBAC policy named
`<namespace>/<name>#<index>`, the DENY ones in `RBAC_DENY_FILTER`, the ALLOW ones in
`RBAC_ALLOW_FILTER`; the destination port, known per route, is decided when the route is built.

Not emulated: `ipBlocks`/`notIpBlocks` and the `source.ip`/`destination.ip` conditions (every
pod shares 127.0.0.1 here): a match using one never matches in an ALLOW policy and is applied
without it in a DENY policy, as the sidecars' policies treat fields they cannot emulate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...kube_state import TRUST_DOMAIN
from ..state import MeshState
from ..xds.authorization import (
    ALLOW,
    DENY,
    RBAC_TYPE,
    action_of,
    all_of,
    any_of,
    namespace_id,
    peer_id,
    selected,
)

Obj = dict[str, Any]
RBAC_DENY_FILTER = "ztunnel.rbac.deny"
RBAC_ALLOW_FILTER = "ztunnel.rbac.allow"
CONDITION = "ZtunnelAccepted"
L7_OPERATION = ("hosts", "notHosts", "methods", "notMethods", "paths", "notPaths")
L7_SOURCE = ("remoteIpBlocks", "notRemoteIpBlocks", "requestPrincipals", "notRequestPrincipals")
L4_WHEN = ("source.ip", "source.namespace", "source.principal", "destination.ip",
           "destination.port")
HTTP_RULE = ("ztunnel does not support HTTP attributes (found: {found}). In ambient mode you "
             "must use a waypoint proxy to enforce HTTP rules. {boilerplate}")
DENY_BOILERPLATE = ("DENY policy with HTTP attributes is enforced without the HTTP rules. "
                    "This will be more restrictive than requested.")
ALLOW_BOILERPLATE = ("Within an ALLOW policy, rules matching HTTP attributes are omitted. "
                     "This will be more restrictive than requested.")
NEVER: Obj = {"not_id": {"any": True}}
# the fields of one match (security.Match), with the `when` key each may also come from
MATCH_WHEN = {"namespaces": "source.namespace", "principals": "source.principal",
              "sourceIps": "source.ip", "destinationPorts": "destination.port",
              "destinationIps": "destination.ip"}


@dataclass
class ZtunnelPolicy:
    """One AuthorizationPolicy as ztunnel holds it: `groups` of rules of matches."""

    namespace: str
    name: str
    action: str  # ALLOW or DENY
    groups: list[list[list[Obj]]] = field(default_factory=list)


def convert(policy: Obj) -> tuple[ZtunnelPolicy | None, str | None]:
    """(what ztunnel gets, the status message); (None, None) for a waypoint's policy."""
    spec = policy.get("spec") or {}
    if spec.get("targetRef") or spec.get("targetRefs"):
        return None, None
    action = action_of(policy)
    if action not in (ALLOW, DENY):
        return None, f"ztunnel does not support the {action} action"
    meta = policy["metadata"]
    converted = ZtunnelPolicy(meta.get("namespace", ""), meta["name"], action)
    found: set[str] = set()
    for rule in spec.get("rules") or []:
        rules, http = _handle_rule(action, rule or {}, converted.namespace)
        if rules is not None:
            converted.groups.append(rules)
        found.update(http)
    if not found:
        return converted, None
    boilerplate = ALLOW_BOILERPLATE if action == ALLOW else DENY_BOILERPLATE
    return converted, HTTP_RULE.format(found=", ".join(sorted(found)), boilerplate=boilerplate)


def _handle_rule(action: str, rule: Obj, namespace: str) -> tuple[list[list[Obj]] | None,
                                                                   list[str]]:
    http: list[str] = []
    rules: list[list[Obj]] = []
    to_matches = []
    for item in rule.get("to") or []:
        operation = (item or {}).get("operation") or {}
        http += [key for key in L7_OPERATION if operation.get(key)]
        to_matches.append({"destinationPorts": operation.get("ports") or [],
                           "notDestinationPorts": operation.get("notPorts") or []})
    from_matches = []
    for item in rule.get("from") or []:
        source = (item or {}).get("source") or {}
        http += [key for key in L7_SOURCE if source.get(key)]
        from_matches.append({
            "sourceIps": source.get("ipBlocks") or [],
            "notSourceIps": source.get("notIpBlocks") or [],
            "namespaces": source.get("namespaces") or [],
            "notNamespaces": source.get("notNamespaces") or [],
            "serviceAccounts": _service_accounts(source.get("serviceAccounts"), namespace),
            "notServiceAccounts": _service_accounts(source.get("notServiceAccounts"),
                                                    namespace),
            "principals": source.get("principals") or [],
            "notPrincipals": source.get("notPrincipals") or []})
    if to_matches:
        rules.append(to_matches)
    if from_matches:
        rules.append(from_matches)
    for condition in rule.get("when") or []:
        key = (condition or {}).get("key", "")
        if key not in L4_WHEN:
            http.append(key)
        match: Obj = {}
        for field_name, when_key in MATCH_WHEN.items():
            if key == when_key:
                match[field_name] = condition.get("values") or []
                negated = "not" + field_name[0].upper() + field_name[1:]
                match[negated] = condition.get("notValues") or []
        rules.append([match])
    if action == ALLOW and http:
        return None, http
    return rules, http


def _service_accounts(values: list[str] | None, namespace: str) -> list[str]:
    """`ns/sa`, or `sa` in the policy's namespace, as SPIFFE principals without the scheme."""
    out = []
    for value in values or []:
        ns, slash, sa = value.partition("/")
        ns, sa = (ns, sa) if slash else (namespace, value)
        out.append(f"{TRUST_DOMAIN}/ns/{ns}/sa/{sa}")
    return out


def workload_policies(state: MeshState, pod: Obj) -> list[ZtunnelPolicy]:
    """The converted policies that apply to `pod` (the sidecars' selection rules)."""
    converted = (convert(p)[0] for p in selected(state.authorization_policies, state, pod))
    return [p for p in converted if p is not None]


def route_rbac(policies: list[ZtunnelPolicy], port: int) -> dict[str, Obj]:
    """The RBAC of the route to container `port`: filter name -> RBAC rules, for the filters
    that have something to decide (none: every connection is allowed)."""
    out: dict[str, Obj] = {}
    for action, name in ((DENY, RBAC_DENY_FILTER), (ALLOW, RBAC_ALLOW_FILTER)):
        chosen = [p for p in policies if p.action == action]
        if not chosen:
            continue
        entries = {f"{p.namespace}/{p.name}#{i}": {
            "permissions": [{"any": True}],
            "principals": [_group(group, port, deny=action == DENY)]}
            for p in chosen for i, group in enumerate(p.groups)}
        out[name] = {"rules": {"action": action, "policies": entries}}
    return out


def _group(group: list[list[Obj]], port: int, deny: bool) -> Obj:
    """All rules of the group; each rule any of its matches (no match: never)."""
    return all_of([any_of([_match(m, port, deny) for m in rule], "or_ids") if rule else NEVER
                   for rule in group], "and_ids")


def _match(match: Obj, port: int, deny: bool) -> Obj:
    """One match: every field it sets (each any of its values, its negation none of them)."""
    if match.get("destinationPorts") and str(port) not in map(str, match["destinationPorts"]):
        return NEVER
    if str(port) in map(str, match.get("notDestinationPorts") or []):
        return NEVER
    if not deny and any(match.get(k) for k in ("sourceIps", "notSourceIps", "destinationIps",
                                               "notDestinationIps")):
        return NEVER  # not emulated: fail closed in an ALLOW policy
    ids: list[Obj] = []
    for key, build in (("principals", peer_id), ("serviceAccounts", peer_id),
                       ("namespaces", namespace_id)):
        negated = "not" + key[0].upper() + key[1:]
        if match.get(key):
            ids.append(any_of([build(v) for v in match[key]], "or_ids"))
        if match.get(negated):
            ids.append({"not_id": any_of([build(v) for v in match[negated]], "or_ids")})
    return all_of(ids, "and_ids")


def rbac_filter(name: str) -> Obj:
    """An RBAC HTTP filter named `name` that allows everything unless a route says more."""
    return {"name": name, "typed_config": {"@type": RBAC_TYPE}}


def ztunnel_condition(policy: Obj) -> Obj | None:
    """The `ZtunnelAccepted` status condition istiod writes on `policy`; None for a policy
    with targetRef(s), which ztunnel never gets."""
    converted, message = convert(policy)
    if converted is None and message is None:
        return None
    return {"type": CONDITION, "status": "True",
            "reason": "Accepted" if message is None else "UnsupportedValue",
            "message": message or "attached to ztunnel"}
