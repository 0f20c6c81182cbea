"""The checks of Linkerd's policy admission webhook (`linkerd-policy-validator.linkerd.io`) that
the CRD schemas cannot express, so `kubectl apply` refuses what a real cluster refuses instead
of accepting a policy the policy controller would ignore. Messages follow linkerd/linkerd2
`policy-controller/src/admission.rs`; a malformed CIDR gets the same kind of refusal with a
message of its own (upstream's is serde's parse error)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from ...apiserver.api import ObjectApi
from ...apiserver.errors import ApiError
from ...apiserver.resources import ResourceType
from ..kube_state import Obj
from .policy import GROUP, POLICIES

WEBHOOK = "linkerd-policy-validator.linkerd.io"
IDENTITY_KINDS = ("MeshTLSAuthentication", "ServiceAccount", "NetworkAuthentication")


class Invalid(Exception):
    """The reason the webhook denies an object."""


def _network(cidr: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(str(cidr), strict=False)
    except ValueError as err:
        raise Invalid(f"invalid cidr {cidr!r}: {err}") from None


def _networks(networks: list[Obj]) -> None:
    """admission.rs validate_networks: each `except` inside its cidr, not covering it."""
    for net in networks:
        cidr = _network(net.get("cidr"))
        for raw in net.get("except") or []:
            ex = _network(raw)
            if cidr.version == ex.version and cidr.subnet_of(ex):
                raise Invalid(f"cidr '{net.get('cidr')}' is completely negated by exception "
                              f"'{raw}'")
            if cidr.version != ex.version or not ex.subnet_of(cidr):
                raise Invalid(f"cidr '{net.get('cidr')}' does not include exception '{raw}'")


def _server(api: ObjectApi, rt: ResourceType, obj: Obj) -> None:
    spec, meta = obj.get("spec") or {}, obj["metadata"]
    # exactly one selector: the CRD's schema (oneOf) refuses both or none before this runs
    selector_key = "podSelector" if "podSelector" in spec else "externalWorkloadSelector"
    if selector_key not in spec:
        return
    mine = spec[selector_key]
    for other in api.list(rt, meta.get("namespace", ""))[0]:
        other_spec = other.get("spec") or {}
        if other["metadata"]["name"] == meta["name"] or other_spec.get("port") != spec.get(
                "port") or selector_key not in other_spec:
            continue
        theirs = other_spec[selector_key]
        if not mine or not theirs or mine == theirs:  # admission.rs `overlaps`
            raise Invalid(
                f"Server spec '{other['metadata'].get('namespace') or 'default'}/"
                f"{other['metadata']['name']}' already defines a policy for port "
                f"{spec.get('port')}, and selects pods that would be selected by this Server")
    access = spec.get("accessPolicy")
    if access is not None and access not in POLICIES:
        raise Invalid(f"Invalid 'accessPolicy' field: invalid policy: {access}")


def _authorization_policy(obj: Obj) -> None:
    spec, namespace = obj.get("spec") or {}, obj["metadata"].get("namespace", "")
    target = spec.get("targetRef") or {}
    kind = target.get("kind", "")
    if kind == "Namespace":
        if target.get("name") != namespace:
            raise Invalid(f"cannot target another namespace: {target.get('name')}")
    elif kind not in ("Server", "HTTPRoute", "GRPCRoute"):
        group = target.get("group") or ""
        raise Invalid(f"invalid targetRef kind: {f'{kind}.{group}' if group else kind}")
    refs = spec.get("requiredAuthenticationRefs") or []
    count = {k: sum(1 for r in refs if r.get("kind") == k) for k in IDENTITY_KINDS}
    if count["MeshTLSAuthentication"] > 1:
        raise Invalid("only a single MeshTLSAuthentication may be set")
    if count["ServiceAccount"] > 1:
        raise Invalid("only a single ServiceAccount may be set")
    if count["MeshTLSAuthentication"] + count["ServiceAccount"] > 1:
        raise Invalid("a MeshTLSAuthentication and ServiceAccount may not be set together")
    if count["NetworkAuthentication"] > 1:
        raise Invalid("only a single NetworkAuthentication may be set")
    if others := [str(r.get("kind")) for r in refs if r.get("kind") not in IDENTITY_KINDS]:
        raise Invalid(f"unsupported authentication kind(s): {', '.join(others)}")


def _meshtls_authentication(obj: Obj) -> None:
    spec = obj.get("spec") or {}
    for identity in spec.get("identities") or []:
        if not identity or " " in identity:
            raise Invalid(f"id {identity} is invalid: identities must be DNS-like names, "
                          "`*` or `*.<suffix>`")
    for ref in spec.get("identityRefs") or []:
        if ref.get("kind") == "Namespace" and ref.get("namespace"):
            raise Invalid("Namespace identity_ref is cluster-scoped and cannot have a namespace")
        if ref.get("kind") not in ("ServiceAccount", "Namespace"):
            raise Invalid(f"invalid identity target kind: {ref.get('kind')}")


def _network_authentication(obj: Obj) -> None:
    networks = (obj.get("spec") or {}).get("networks") or []
    if not networks:
        raise Invalid("at least one network must be specified")
    _networks(networks)


def _server_authorization(obj: Obj) -> None:
    client = (obj.get("spec") or {}).get("client") or {}
    mesh = client.get("meshTLS")
    if mesh is not None:
        if client.get("unauthenticated"):
            raise Invalid("`unauthenticated` must be false if `mesh_tls` is specified")
        if mesh.get("unauthenticatedTLS") and (mesh.get("identities")
                                               or mesh.get("serviceAccounts")):
            raise Invalid("`unauthenticatedTLS` be false if any `identities` or "
                          "`service_accounts` is specified")
    _networks(client.get("networks") or [])


def policy_validation_hook(api: ObjectApi) -> Callable[[ResourceType, Obj], None]:
    checks: dict[str, Callable[[Obj], None]] = {
        "AuthorizationPolicy": _authorization_policy,
        "MeshTLSAuthentication": _meshtls_authentication,
        "NetworkAuthentication": _network_authentication,
        "ServerAuthorization": _server_authorization}

    def validate(rt: ResourceType, obj: Obj) -> None:
        if rt.group != GROUP:
            return
        try:
            if rt.kind == "Server":
                _server(api, rt, obj)
            elif check := checks.get(rt.kind):
                check(obj)
        except Invalid as err:
            raise ApiError(400, "BadRequest",
                           f'admission webhook "{WEBHOOK}" denied the request: {err}') from None

    return validate


def register_policy_validation(api: ObjectApi) -> None:
    api.validating_admission.append(policy_validation_hook(api))
