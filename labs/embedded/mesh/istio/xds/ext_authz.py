"""AuthorizationPolicy `action: CUSTOM` → Envoy's ext_authz HTTP filter, the way istiod builds it.

A CUSTOM policy names an extension provider of the mesh config (`extensionProviders[]` with
`envoyExtAuthzHttp` or `envoyExtAuthzGrpc`). Istio checks CUSTOM first, then DENY, then ALLOW,
and only requests matched by the CUSTOM policies' rules go to the external authorizer: an RBAC
filter in shadow mode (policies `istio-ext-authz-ns[..]-policy[..]-rule[..]`, stat prefix
`istio_ext_authz_`) marks the matching requests in dynamic metadata, and the ext_authz filter
runs only for requests so marked (`filter_enabled_metadata`). A workload whose CUSTOM policies
cannot be applied (unknown provider, several providers, a provider that does not resolve) gets a
deny-all filter, as istiod gives it; the policy's status says why and how to fix it.
"""

from __future__ import annotations

from labs.istio_names import BAD_CUSTOM_POLICY, PolicyRuleName

from ...kube_state import Obj
from ..meshconfig import extension_providers
from ..state import MeshState
from .authorization import CUSTOM, RBAC_FILTER, action_of, rbac_filter, rule_policy, selected
from .upstreams import Upstream, UpstreamError, resolve_upstream
from .values import ConfigError, duration

EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
EXT_AUTHZ_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
SHADOW_STAT_PREFIX = "istio_ext_authz_"
# What the ext_authz filter looks for in the shadow policy id (istiod's extAuthzMatchPrefix).
MATCH_PREFIX = "istio-ext-authz"
SHADOW_POLICY_KEY = SHADOW_STAT_PREFIX + "shadow_effective_policy_id"
DEFAULT_TIMEOUT = "600s"  # istiod's default: the DestinationRule is meant to bound it
KINDS = ("envoyExtAuthzHttp", "envoyExtAuthzGrpc")
EDIT_HINT = "`kubectl edit configmap istio -n istio-system`"


class ProviderError(ValueError):
    """A CUSTOM policy's provider cannot be used; the message says what to fix."""


def custom_policies(state: MeshState, pod: Obj) -> list[Obj]:
    return [p for p in selected(state.authorization_policies, state, pod)
            if action_of(p) == CUSTOM]


def provider_name(policy: Obj) -> str:
    return str(((policy.get("spec") or {}).get("provider") or {}).get("name") or "")


def _provider(state: MeshState, name: str) -> tuple[str, Obj]:
    """(kind, settings) of the named provider."""
    if state.mesh_config_error:
        raise ProviderError(state.mesh_config_error)
    if not name:
        raise ProviderError("spec.provider.name is empty: name an ext-authz provider declared "
                            f"under `extensionProviders` in the mesh config ({EDIT_HINT})")
    providers = extension_providers(state.mesh_config)
    if name not in providers:
        known = ", ".join(sorted(providers)) or "none"
        raise ProviderError(
            f"extension provider {name!r} is not declared in the mesh config (declared: "
            f"{known}); add it under `extensionProviders` with `envoyExtAuthzHttp` {{service, "
            f"port}} in ConfigMap istio-system/istio ({EDIT_HINT})")
    kinds = [k for k in KINDS if isinstance(providers[name].get(k), dict)]
    if not kinds:
        raise ProviderError(f"extension provider {name!r} is not an ext-authz provider (give it "
                            f"`envoyExtAuthzHttp` or `envoyExtAuthzGrpc`)")
    return kinds[0], providers[name][kinds[0]]


def _upstream(state: MeshState, namespace: str, name: str, kind: str, settings: Obj) -> Upstream:
    try:
        port = int(settings.get("port") or 0)
    except (TypeError, ValueError):
        port = 0
    try:
        return resolve_upstream(state, namespace, str(settings.get("service") or ""), port,
                                http2=kind == "envoyExtAuthzGrpc")
    except UpstreamError as err:
        raise ProviderError(f"extension provider {name!r}: {err} ({EDIT_HINT})") from None


def _patterns(headers: list[str] | None) -> Obj | None:
    """Istio's header list → a ListStringMatcher (`x-*` prefix, `*-id` suffix, else exact)."""
    patterns = []
    for header in headers or []:
        if header.startswith("*"):
            patterns.append({"suffix": header[1:], "ignore_case": True})
        elif header.endswith("*"):
            patterns.append({"prefix": header[:-1], "ignore_case": True})
        else:
            patterns.append({"exact": header, "ignore_case": True})
    return {"patterns": patterns} if patterns else None


def _common(name: str, settings: Obj) -> Obj:
    config: Obj = {"@type": EXT_AUTHZ_TYPE, "transport_api_version": "V3",
                   "failure_mode_allow": bool(settings.get("failOpen")),
                   "filter_enabled_metadata": {
                       "filter": RBAC_FILTER, "path": [{"key": SHADOW_POLICY_KEY}],
                       "value": {"string_match": {"prefix": MATCH_PREFIX}}}}
    status = settings.get("statusOnError")
    if status:
        if not str(status).isdigit():
            raise ProviderError(f"extension provider {name!r}: statusOnError {status!r} is not "
                                "an HTTP status code")
        config["status_on_error"] = {"code": int(status)}
    body = settings.get("includeRequestBodyInCheck")
    if isinstance(body, dict):
        config["with_request_body"] = {
            "max_request_bytes": int(body.get("maxRequestBytes") or 0),
            "allow_partial_message": bool(body.get("allowPartialMessage")),
            "pack_as_bytes": bool(body.get("packAsBytes"))}
    return config


def _timeout(name: str, settings: Obj) -> str:
    try:
        return duration(settings.get("timeout") or DEFAULT_TIMEOUT, "timeout")
    except ConfigError as err:
        raise ProviderError(f"extension provider {name!r}: {err}") from None


def ext_authz_config(name: str, kind: str, settings: Obj, upstream: Upstream) -> Obj:
    """The ext_authz filter's typed_config for one provider, field for field as istiod."""
    config = _common(name, settings)
    timeout = _timeout(name, settings)
    if kind == "envoyExtAuthzGrpc":
        config["grpc_service"] = {"envoy_grpc": {
            "cluster_name": upstream.cluster,
            "authority": upstream.cluster.replace("|", "_.")}, "timeout": timeout}
        return config
    prefix = str(settings.get("pathPrefix") or "")
    if prefix and not prefix.startswith("/"):
        raise ProviderError(f"extension provider {name!r}: pathPrefix must begin with `/`, "
                            f"found {prefix!r}")
    service: Obj = {"server_uri": {"uri": f"http://{upstream.hostname}",
                                   "cluster": upstream.cluster, "timeout": timeout}}
    if prefix:
        service["path_prefix"] = prefix
    allowed = _patterns(settings.get("includeRequestHeadersInCheck")
                        or settings.get("includeHeadersInCheck"))
    if allowed:
        config["allowed_headers"] = allowed
    extra = settings.get("includeAdditionalHeadersInCheck") or {}
    if extra:
        service["authorization_request"] = {"headers_to_add": [
            {"key": k, "value": str(extra[k])} for k in sorted(extra)]}
    response = {key: matcher for key, field in (
        ("allowed_upstream_headers", "headersToUpstreamOnAllow"),
        ("allowed_client_headers", "headersToDownstreamOnDeny"),
        ("allowed_client_headers_on_success", "headersToDownstreamOnAllow"))
        if (matcher := _patterns(settings.get(field)))}
    if response:
        service["authorization_response"] = response
    config["http_service"] = service
    return config


def _resolve(state: MeshState, pod: Obj, policies: list[Obj]) -> tuple[Obj, Upstream]:
    names = sorted({provider_name(p) for p in policies})
    if len(names) > 1:
        raise ProviderError(f"only one provider can be used per workload, found {names}: make "
                            "the CUSTOM policies of this workload name the same provider")
    kind, settings = _provider(state, names[0])
    namespace = pod["metadata"].get("namespace", "")
    upstream = _upstream(state, namespace, names[0], kind, settings)
    return ext_authz_config(names[0], kind, settings, upstream), upstream


def build_ext_authz(state: MeshState, pod: Obj) -> tuple[list[Obj], list[Obj]]:
    """(HTTP filters, clusters) for `pod`'s CUSTOM policies: the shadow RBAC filter and the
    ext_authz filter, or a deny-all filter when they cannot be applied; nothing without any."""
    policies = custom_policies(state, pod)
    if not policies:
        return [], []
    try:
        config, upstream = _resolve(state, pod, policies)
    except ProviderError:
        deny_all = {BAD_CUSTOM_POLICY: {"permissions": [{"any": True}],
                                        "principals": [{"any": True}]}}
        return [rbac_filter({"rules": {"action": "DENY", "policies": deny_all}})], []
    shadow: dict[str, Obj] = {}
    for policy in policies:
        meta = policy["metadata"]
        for index, rule in enumerate((policy.get("spec") or {}).get("rules") or []):
            name = PolicyRuleName(meta.get("namespace", ""), meta["name"], index, custom=True)
            shadow[str(name)] = rule_policy(pod, rule or {})
    marker = rbac_filter({"shadow_rules": {"action": "DENY", "policies": shadow},
                          "shadow_rules_stat_prefix": SHADOW_STAT_PREFIX})
    return [marker, {"name": EXT_AUTHZ_FILTER, "typed_config": config}], upstream.clusters


def custom_warnings(state: MeshState) -> list[tuple[Obj, str]]:
    """(policy, message) for each CUSTOM policy whose provider cannot be applied: Istio rejects
    it and denies every request to the workloads it selects."""
    warnings = []
    for policy in state.authorization_policies:
        if action_of(policy) != CUSTOM or policy["metadata"].get("deletionTimestamp"):
            continue
        name = provider_name(policy)
        try:
            kind, settings = _provider(state, name)
            upstream = _upstream(state, policy["metadata"].get("namespace", ""), name, kind,
                                 settings)
            ext_authz_config(name, kind, settings, upstream)
        except ProviderError as err:
            warnings.append((policy, f"CUSTOM policy not applied: {err}; meanwhile every "
                                     "request to the workloads it selects is denied, as in "
                                     "Istio"))
    return warnings
