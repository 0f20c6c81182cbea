"""AuthorizationPolicy → Envoy RBAC HTTP filters on a sidecar's inbound listeners, like istiod.

Which policies apply to a pod: those in the root namespace (mesh-wide), those without a selector
in the pod's namespace, and those whose `selector.matchLabels` match the pod (in its namespace,
or in the root namespace for every namespace). The decision is Istio's: CUSTOM first (the
ext_authz filters of xds/ext_authz.py run before these), then DENY (any matching
DENY policy denies), then ALLOW (when ALLOW policies apply, a request matching none of them is
denied; `spec: {}` is an ALLOW policy without rules, so it denies everything), AUDIT has no
effect on the decision. Hence at most two RBAC filters, DENY before ALLOW, named like Istio's.

Each rule becomes one RBAC policy: `to` and the destination-side `when` conditions are its
permission, `from` and the source-side ones its principal (Envoy ANDs the two). Peer identities
are the mTLS peer's URI SAN (`spiffe://cluster.local/ns/<ns>/sa/<sa>`); request principals and
claims are read from the JWT payload the jwt_authn filter stores in its dynamic metadata.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from labs.istio_names import PolicyRuleName

from ....workload import host_ports
from ...kube_state import Obj
from ..state import MeshState

# Where the jwt_authn filter (xds/jwt.py) leaves a validated token's payload.
JWT_FILTER = "envoy.filters.http.jwt_authn"
PAYLOAD_KEY = "payload"
RBAC_FILTER = "envoy.filters.http.rbac"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
SPIFFE = "spiffe://"
ALLOW, DENY, AUDIT, CUSTOM = "ALLOW", "DENY", "AUDIT", "CUSTOM"
KNOWN_SPEC_FIELDS = {"selector", "action", "rules", "provider"}
SOURCE_FIELDS = {"principals", "notPrincipals", "namespaces", "notNamespaces",
                 "requestPrincipals", "notRequestPrincipals"}
OPERATION_FIELDS = {"methods", "notMethods", "paths", "notPaths", "ports", "notPorts",
                    "hosts", "notHosts"}
TARGET_REFS = {"targetRef", "targetRefs"}
WHEN_KEYS = ("request.headers[", "request.auth.claims[")
WHEN_PLAIN = {"source.principal", "source.namespace", "request.auth.principal",
              "destination.port"}


# --- which policies apply ---------------------------------------------------------------------

def _match_labels(policy: Obj) -> dict[str, str]:
    return ((policy.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}


def selected(policies: list[Obj], state: MeshState, pod: Obj) -> list[Obj]:
    """The policies (AuthorizationPolicy or RequestAuthentication) that apply to `pod`."""
    namespace = pod["metadata"].get("namespace", "")
    labels = pod["metadata"].get("labels") or {}
    chosen = []
    for policy in policies:
        spec = policy.get("spec") or {}
        if policy["metadata"].get("deletionTimestamp") or TARGET_REFS & spec.keys():
            continue  # targetRef(s) attach a policy to gateways/waypoints, never to sidecars
        policy_ns = policy["metadata"].get("namespace", "")
        if policy_ns not in (namespace, state.root_namespace):
            continue
        selector = _match_labels(policy)
        if all(labels.get(k) == v for k, v in selector.items()):
            chosen.append(policy)
    return sorted(chosen, key=lambda p: (p["metadata"].get("namespace", ""),
                                         p["metadata"]["name"]))


def action_of(policy: Obj) -> str:
    return (policy.get("spec") or {}).get("action") or ALLOW


# --- matchers ---------------------------------------------------------------------------------

def string_match(value: str) -> Obj:
    """Istio's value syntax: `*` anything (present), `abc*` prefix, `*abc` suffix, else exact."""
    if value == "*":
        return {"safe_regex": {"regex": ".+"}}
    if value.endswith("*"):
        return {"prefix": value[:-1]}
    if value.startswith("*"):
        return {"suffix": value[1:]}
    return {"exact": value}


def _header(name: str, value: str) -> Obj:
    if value == "*":
        return {"header": {"name": name, "present_match": True}}
    return {"header": {"name": name, "string_match": string_match(value)}}


def any_of(items: list[Obj], key: str) -> Obj:
    """One matcher when there is one; otherwise an OR (`or_rules` / `or_ids`)."""
    return items[0] if len(items) == 1 else {key: {key.replace("or_", ""): items}}


def peer_id(value: str) -> Obj:
    if value == "*":
        return {"authenticated": {"principal_name": {"safe_regex": {"regex": ".+"}}}}
    if value.endswith("*"):
        return {"authenticated": {"principal_name": {"prefix": SPIFFE + value[:-1]}}}
    if value.startswith("*"):
        return {"authenticated": {"principal_name": {"suffix": value[1:]}}}
    return {"authenticated": {"principal_name": {"exact": SPIFFE + value}}}


def namespace_id(value: str) -> Obj:
    if value == "*":
        return {"authenticated": {"principal_name": {"safe_regex": {"regex": ".*/ns/.+/.*"}}}}
    if value.endswith("*"):
        regex = f".*/ns/{re.escape(value[:-1])}.*/.*"
    elif value.startswith("*"):
        regex = f".*/ns/.*{re.escape(value[1:])}/.*"
    else:
        regex = f".*/ns/{re.escape(value)}/.*"
    return {"authenticated": {"principal_name": {"safe_regex": {"regex": regex}}}}


def _payload(path: list[str], value: Obj) -> Obj:
    return {"metadata": {"filter": JWT_FILTER,
                         "path": [{"key": key} for key in [PAYLOAD_KEY, *path]],
                         "value": value}}


def _request_principal(value: str) -> Obj:
    """`<iss>/<sub>` of a validated JWT; `*` any validated JWT."""
    if value == "*":
        return _payload(["iss"], {"present_match": True})
    issuer, _, subject = value.rpartition("/")
    if not issuer:  # not <issuer>/<subject>: reported, and matches no request
        return {"not_id": {"any": True}}
    ids = []
    if issuer != "*":
        ids.append(_payload(["iss"], {"string_match": string_match(issuer)}))
    ids.append(_payload(["sub"], {"present_match": True} if subject == "*"
                        else {"string_match": string_match(subject)}))
    return ids[0] if len(ids) == 1 else {"and_ids": {"ids": ids}}


def _claim(key: str, value: str) -> Obj:
    """A claim — nested ones written `request.auth.claims[a][b]` as in Istio — that is the
    value or a list containing it."""
    path = key.split("][")
    return {"or_ids": {"ids": [
        _payload(path, {"string_match": string_match(value)}),
        _payload(path, {"list_match": {"one_of": {"string_match": string_match(value)}}})]}}


def _port(pod: Obj, value: str | int) -> Obj:
    """A container port, as the inbound listener sees it: the pod's host port for it."""
    try:
        port = int(value)
    except ValueError:  # reported as not emulated; matches no request
        return {"not_rule": {"any": True}}
    return {"destination_port": host_ports(pod).get(str(port), port)}


def _negate(matcher: Obj, side: str) -> Obj:
    return {"not_rule" if side == "permission" else "not_id": matcher}


# --- rules --------------------------------------------------------------------------------------

def _source(source: Obj) -> list[Obj]:
    ids: list[Obj] = []
    for key, build in (("principals", peer_id), ("namespaces", namespace_id),
                       ("requestPrincipals", _request_principal)):
        if source.get(key):
            ids.append(any_of([build(v) for v in source[key]], "or_ids"))
        negated = "not" + key[0].upper() + key[1:]
        if source.get(negated):
            ids.append({"not_id": any_of([build(v) for v in source[negated]], "or_ids")})
    return ids


def _operation(pod: Obj, operation: Obj) -> list[Obj]:
    def methods(v: str) -> Obj:
        return _header(":method", v)

    def paths(v: str) -> Obj:
        return {"url_path": {"path": string_match(v)}}

    def hosts(v: str) -> Obj:
        if v == "*":
            return _header(":authority", v)
        return {"header": {"name": ":authority",
                           "string_match": {**string_match(v), "ignore_case": True}}}

    def ports(v: str) -> Obj:
        return _port(pod, v)

    rules: list[Obj] = []
    for key, build in (("methods", methods), ("paths", paths), ("hosts", hosts),
                       ("ports", ports)):
        if operation.get(key):
            rules.append(any_of([build(v) for v in operation[key]], "or_rules"))
        negated = "not" + key[0].upper() + key[1:]
        if operation.get(negated):
            rules.append({"not_rule": any_of([build(v) for v in operation[negated]],
                                              "or_rules")})
    return rules


def _condition(pod: Obj, key: str) -> tuple[str, Callable[[str], Obj]] | None:
    """(side, builder) of a `when` key; None when not emulated."""
    if key.startswith("request.headers[") and key.endswith("]"):
        name = key[len("request.headers["):-1].lower()
        return "principal", lambda v: _header(name, v)
    if key.startswith("request.auth.claims[") and key.endswith("]"):
        claim = key[len("request.auth.claims["):-1]
        return "principal", lambda v: _claim(claim, v)
    plain: dict[str, tuple[str, Callable[[str], Obj]]] = {
        "source.principal": ("principal", peer_id),
        "source.namespace": ("principal", namespace_id),
        "request.auth.principal": ("principal", _request_principal),
        "destination.port": ("permission", lambda v: _port(pod, v)),
    }
    return plain.get(key)


def rule_policy(pod: Obj, rule: Obj) -> Obj:
    """One RBAC policy: ANY of the `from` sources and ANY of the `to` operations, AND every
    `when` condition."""
    permissions: list[Obj] = []
    principals: list[Obj] = []
    sources = [all_of(_source(f.get("source") or {}), "and_ids")
               for f in rule.get("from") or []]
    if sources:
        principals.append(any_of(sources, "or_ids"))
    operations = [all_of(_operation(pod, t.get("operation") or {}), "and_rules")
                  for t in rule.get("to") or []]
    if operations:
        permissions.append(any_of(operations, "or_rules"))
    for condition in rule.get("when") or []:
        found = _condition(pod, condition.get("key", ""))
        if found is None:
            continue  # reported by authz_unsupported_fields
        side, build = found
        target = permissions if side == "permission" else principals
        key = "or_rules" if side == "permission" else "or_ids"
        if condition.get("values"):
            target.append(any_of([build(v) for v in condition["values"]], key))
        if condition.get("notValues"):
            target.append(_negate(any_of([build(v) for v in condition["notValues"]], key),
                                  side))
    return {"permissions": [all_of(permissions, "and_rules")],
            "principals": [all_of(principals, "and_ids")]}


def all_of(items: list[Obj], key: str) -> Obj:
    """AND of matchers; nothing to match is `any: true`."""
    if not items:
        return {"any": True}
    return items[0] if len(items) == 1 else {key: {key.replace("and_", ""): items}}


def rbac_filter(config: Obj) -> Obj:
    """An RBAC HTTP filter with `config` (`rules`, `shadow_rules`, ...)."""
    return {"name": RBAC_FILTER, "typed_config": {"@type": RBAC_TYPE, **config}}


def _rbac(action: str, policies: dict[str, Obj]) -> Obj:
    return rbac_filter({"rules": {"action": action, "policies": policies}})


def build_rbac_filters(state: MeshState, pod: Obj) -> list[Obj]:
    """The RBAC HTTP filters of `pod`'s inbound listeners: DENY then ALLOW, each only when such
    policies apply (an ALLOW filter without policies denies every request)."""
    by_action: dict[str, dict[str, Obj]] = {ALLOW: {}, DENY: {}}
    for policy in selected(state.authorization_policies, state, pod):
        action = action_of(policy)
        if action not in by_action:
            continue  # AUDIT never changes the decision; CUSTOM is xds/ext_authz.py's
        meta = policy["metadata"]
        for index, rule in enumerate((policy.get("spec") or {}).get("rules") or []):
            if action == ALLOW and _rule_problems(rule or {}, ""):
                continue  # fail closed, like istiod: reported by authz_unsupported_fields
            name = PolicyRuleName(meta.get("namespace", ""), meta["name"], index)
            by_action[action][str(name)] = rule_policy(pod, rule or {})
    filters = []
    if by_action[DENY]:
        filters.append(_rbac(DENY, by_action[DENY]))
    if any(action_of(p) == ALLOW for p in selected(state.authorization_policies, state, pod)):
        filters.append(_rbac(ALLOW, by_action[ALLOW]))
    return filters


# --- what is not emulated ------------------------------------------------------------------------

def unknown_spec_fields(spec: Obj, known: set[str]) -> list[str]:
    """Top-level fields not emulated; a policy with targetRef(s) applies to no sidecar."""
    return [f"spec.{key} (the policy applies to no sidecar)" if key in TARGET_REFS
            else f"spec.{key}" for key in sorted(spec) if key not in known]


def authz_unsupported_fields(obj: Obj) -> list[str]:
    """Field paths of an AuthorizationPolicy that are not emulated (see `_rule_problems` for
    what a rule using one does)."""
    spec = obj.get("spec") or {}
    ignored = unknown_spec_fields(spec, KNOWN_SPEC_FIELDS)
    action = spec.get("action") or ALLOW
    if action not in (ALLOW, DENY, AUDIT, CUSTOM):
        ignored.append(f"spec.action {action} (use ALLOW, DENY, AUDIT or CUSTOM)")
    if action != CUSTOM and "provider" in spec:
        ignored.append("spec.provider (only a CUSTOM policy has a provider)")
    for r, rule in enumerate(spec.get("rules") or []):
        problems = _rule_problems(rule or {}, f"spec.rules[{r}]")
        if problems and action == ALLOW:
            problems[-1] += f" (so spec.rules[{r}] never matches, as in Istio)"
        ignored += problems
    return ignored


def _rule_problems(rule: Obj, where: str) -> list[str]:
    """What of one rule is not emulated. Like istiod, an ALLOW rule with such a field never
    matches (fail closed) and a DENY rule is applied without it (denies more)."""
    problems = []
    for f, item in enumerate(rule.get("from") or []):
        source = (item or {}).get("source") or {}
        problems += [f"{where}.from[{f}].source.{key}" for key in sorted(source)
                     if key not in SOURCE_FIELDS]
        for value in [*(source.get("requestPrincipals") or []),
                      *(source.get("notRequestPrincipals") or [])]:
            if value != "*" and "/" not in value:
                problems.append(f"{where}.from[{f}].source.requestPrincipals "
                                f"{value!r} (write <issuer>/<subject>)")
    for t, item in enumerate(rule.get("to") or []):
        operation = (item or {}).get("operation") or {}
        problems += [f"{where}.to[{t}].operation.{key}" for key in sorted(operation)
                     if key not in OPERATION_FIELDS]
        problems += [f"{where}.to[{t}].operation.{key} {value!r} (not a port number)"
                     for key in ("ports", "notPorts") for value in operation.get(key) or []
                     if not str(value).isdigit()]
    for w, condition in enumerate(rule.get("when") or []):
        key = (condition or {}).get("key", "")
        if key not in WHEN_PLAIN and not (key.startswith(WHEN_KEYS) and key.endswith("]")):
            problems.append(f"{where}.when[{w}].key {key}")
    return problems
