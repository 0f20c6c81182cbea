"""RequestAuthentication → Envoy's jwt_authn HTTP filter on a sidecar's inbound listeners.

Istio's semantics: a request without a token passes (an AuthorizationPolicy may then demand a
request principal), a token that fails validation against the applicable jwtRules is rejected
with 401. `requires_any: [each provider, allow_missing]` gives exactly that. Keys come only from
inline `jwks` (no network); a jwtRule with only `jwksUri` is reported as not emulated and left
out. The validated payload goes into dynamic metadata under `payload`, where the RBAC filter
reads `request.auth.claims[...]` and request principals.
"""

from __future__ import annotations

from ..state import MeshState, Obj
from .authorization import JWT_FILTER, PAYLOAD_KEY, selected, unknown_spec_fields

JWT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
KNOWN_SPEC_FIELDS = {"selector", "jwtRules"}
KNOWN_RULE_FIELDS = {"issuer", "audiences", "jwks", "jwksUri", "forwardOriginalToken",
                     "outputPayloadToHeader", "outputClaimToHeaders", "fromHeaders",
                     "fromParams"}


def _provider(rule: Obj) -> Obj:
    provider: Obj = {
        "issuer": rule["issuer"],
        "local_jwks": {"inline_string": rule["jwks"]},
        "forward": bool(rule.get("forwardOriginalToken")),
        "payload_in_metadata": PAYLOAD_KEY,
    }
    if rule.get("audiences"):
        provider["audiences"] = list(rule["audiences"])
    if rule.get("outputPayloadToHeader"):
        provider["forward_payload_header"] = rule["outputPayloadToHeader"]
    if rule.get("outputClaimToHeaders"):
        provider["claim_to_headers"] = [
            {"header_name": item["header"], "claim_name": item["claim"]}
            for item in rule["outputClaimToHeaders"] if item.get("header") and item.get("claim")]
    if rule.get("fromHeaders"):
        provider["from_headers"] = [
            {"name": h["name"], **({"value_prefix": h["prefix"]} if h.get("prefix") else {})}
            for h in rule["fromHeaders"] if h.get("name")]
    if rule.get("fromParams"):
        provider["from_params"] = list(rule["fromParams"])
    return provider


def _usable(rule: Obj) -> bool:
    return bool(rule.get("issuer")) and isinstance(rule.get("jwks"), str) and bool(rule["jwks"])


def build_jwt_filter(state: MeshState, pod: Obj) -> list[Obj]:
    """The jwt_authn filter for `pod` (an empty list when no RequestAuthentication applies)."""
    providers: dict[str, Obj] = {}
    for policy in selected(state.request_authentications, state, pod):
        meta = policy["metadata"]
        for index, rule in enumerate((policy.get("spec") or {}).get("jwtRules") or []):
            if _usable(rule or {}):
                providers[f"{meta.get('namespace', '')}/{meta['name']}/{index}"] = _provider(rule)
    if not providers:
        return []
    requirements: list[Obj] = [{"provider_name": name} for name in providers]
    requirements.append({"allow_missing": {}})
    return [{"name": JWT_FILTER, "typed_config": {
        "@type": JWT_TYPE, "providers": providers,
        "rules": [{"match": {"prefix": "/"},
                   "requires": {"requires_any": {"requirements": requirements}}}]}}]


def ra_unsupported_fields(obj: Obj) -> list[str]:
    """Field paths of a RequestAuthentication that have no effect here."""
    spec = obj.get("spec") or {}
    ignored = unknown_spec_fields(spec, KNOWN_SPEC_FIELDS)
    for index, rule in enumerate(spec.get("jwtRules") or []):
        rule = rule or {}
        where = f"spec.jwtRules[{index}]"
        ignored += [f"{where}.{key}" for key in sorted(rule) if key not in KNOWN_RULE_FIELDS]
        if not rule.get("issuer"):
            ignored.append(f"{where} (no issuer: the rule is left out)")
        elif not _usable(rule):
            ignored.append(f"{where}.jwksUri (keys are not fetched: put the JWKS inline in "
                           "`jwks`; the rule is left out)")
    return ignored
