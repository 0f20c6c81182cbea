"""RequestAuthentication → Envoy's jwt_authn HTTP filter on a sidecar's inbound listeners.

Istio's semantics: a request without a token passes (an AuthorizationPolicy may then demand a
request principal), a token that fails validation against the applicable jwtRules is rejected
with 401. `requires_any: [each provider, allow_missing]` gives exactly that. Keys come from
inline `jwks`, or from a `jwksUri` that stays on the machine — `http://` to a loopback address,
`localhost` or a Service of the mesh — which Envoy fetches itself (`remote_jwks`, through a
cluster to that host; `jwt_authn.jwks_fetch_*` stats count the fetches). Any other `jwksUri` is
reported as not emulated and its rule left out (offline labs need inline `jwks`). The validated
payload goes into dynamic metadata under `payload`, where the RBAC filter reads
`request.auth.claims[...]` and request principals.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

from ...kube_state import TRUST_DOMAIN, Obj
from ..state import MeshState
from .authorization import JWT_FILTER, PAYLOAD_KEY, selected, unknown_spec_fields
from .hosts import is_loopback
from .upstreams import UpstreamError, resolve_upstream

JWT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
KNOWN_SPEC_FIELDS = {"selector", "jwtRules"}
JWKS_FETCH_TIMEOUT = "5s"
JWKS_CACHE_DURATION = "300s"  # Envoy's default; a rotated key is picked up within 5 minutes
KNOWN_RULE_FIELDS = {"issuer", "audiences", "jwks", "jwksUri", "forwardOriginalToken",
                     "outputPayloadToHeader", "outputClaimToHeaders", "fromHeaders",
                     "fromParams"}


def _provider(rule: Obj, keys: Obj) -> Obj:
    provider: Obj = {
        "issuer": rule["issuer"],
        **keys,
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


def _inline(rule: Obj) -> bool:
    return isinstance(rule.get("jwks"), str) and bool(rule["jwks"])


def fetchable_uri(uri: object) -> bool:
    """A `jwksUri` Envoy may fetch here: http:// to a loopback address, `localhost` or a name
    that can be a Service of the mesh (one label, `<name>.<ns>.svc[.cluster.local]`; not
    `<name>.<ns>`, which cannot be told from a public domain such as example.com)."""
    if not isinstance(uri, str):
        return False
    parts = urlsplit(uri)
    host = (parts.hostname or "").lower()
    if parts.scheme != "http" or not host:
        return False
    labels = host.split(".")
    return is_loopback(host) or len(labels) == 1 or host.endswith(
        (".svc", f".svc.{TRUST_DOMAIN}"))


def _keys(state: MeshState, namespace: str, rule: Obj) -> tuple[Obj, list[Obj]]:
    """(provider key source, clusters it needs); UpstreamError when the URI's host is not
    reachable from the proxy."""
    if _inline(rule):
        return {"local_jwks": {"inline_string": rule["jwks"]}}, []
    parts = urlsplit(str(rule["jwksUri"]))
    upstream = resolve_upstream(state, namespace, parts.hostname or "", parts.port or 80)
    return {"remote_jwks": {
        "http_uri": {"uri": rule["jwksUri"], "cluster": upstream.cluster,
                     "timeout": JWKS_FETCH_TIMEOUT},
        "cache_duration": JWKS_CACHE_DURATION,
        "async_fetch": {}}}, upstream.clusters


def _providers(state: MeshState, pod: Obj) -> Iterator[tuple[str, Obj, list[Obj]]]:
    """(provider name, provider, clusters) of each usable jwtRule applying to `pod`."""
    namespace = pod["metadata"].get("namespace", "")
    for policy in selected(state.request_authentications, state, pod):
        meta = policy["metadata"]
        for index, rule in enumerate((policy.get("spec") or {}).get("jwtRules") or []):
            rule = rule or {}
            if not rule.get("issuer") or not (_inline(rule) or fetchable_uri(rule.get("jwksUri"))):
                continue
            try:
                keys, clusters = _keys(state, namespace, rule)
            except UpstreamError:
                continue  # reported by jwks_warnings
            yield f"{meta.get('namespace', '')}/{meta['name']}/{index}", _provider(rule, keys), \
                clusters


def jwks_clusters(state: MeshState, pod: Obj) -> list[Obj]:
    """The clusters the jwt_authn filter fetches remote JWKS through (loopback targets)."""
    found: dict[str, Obj] = {}
    for _, _, clusters in _providers(state, pod):
        found.update({c["name"]: c for c in clusters})
    return list(found.values())


def build_jwt_filter(state: MeshState, pod: Obj) -> list[Obj]:
    """The jwt_authn filter for `pod` (an empty list when no RequestAuthentication applies)."""
    providers = {name: provider for name, provider, _ in _providers(state, pod)}
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
        elif not _inline(rule) and not fetchable_uri(rule.get("jwksUri")):
            ignored.append(f"{where}.jwksUri (keys are fetched only over http:// from a "
                           "loopback address, localhost or a Service of the mesh: put the JWKS "
                           "inline in `jwks`; the rule is left out)")
    return ignored


def jwks_warnings(state: MeshState) -> list[tuple[Obj, str]]:
    """(RequestAuthentication, message) for each `jwksUri` naming a Service that does not
    resolve: its rule is left out until the Service exists."""
    warnings = []
    for policy in state.request_authentications:
        namespace = policy["metadata"].get("namespace", "")
        for index, rule in enumerate((policy.get("spec") or {}).get("jwtRules") or []):
            rule = rule or {}
            if not rule.get("issuer") or _inline(rule) or not fetchable_uri(rule.get("jwksUri")):
                continue
            try:
                _keys(state, namespace, rule)
            except UpstreamError as err:
                warnings.append((policy, f"spec.jwtRules[{index}].jwksUri is not reachable: "
                                         f"{err}; the rule is left out"))
    return warnings
