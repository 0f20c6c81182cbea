"""Lab day2.jwt: Istio's "JWT Token" authorization task, offline — a RequestAuthentication for
httpbin in `foo` trusting issuer testing@secure.istio.io through an inline JWKS, then an
AuthorizationPolicy requiring a request principal, then a `when` on the `groups` claim.

The lab's signing key is made in the notebook (`labs.tokens.Signer`); so that these checks — run
in another process, by "Check my work" or the grader — can mint valid tokens too, the notebook
hands the key over in Secret foo/jwt-issuer (`share_signer`). It is a throwaway lab key: with a
real identity provider the key never leaves it."""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from labs.checks.context import CheckContext
from labs.checks.model import Outcome, Retry, failed, passed
from labs.checks.public.day2 import Expect, expect_statuses, meshed_apps
from labs.checks.registry import check
from labs.cluster import ClusterRef, current_cluster
from labs.course import manifest
from labs.tokens import Signer

NAMESPACE = "foo"
ISSUER = "testing@secure.istio.io"
PRINCIPAL = f"{ISSUER}/{ISSUER}"  # <iss>/<sub>, as AuthorizationPolicy requestPrincipals
GROUPS = ["group1", "group2"]  # the claims of Istio's groups-scope.jwt
URL = f"http://httpbin.{NAMESPACE}:8000/headers"
KEY_SECRET = "jwt-issuer"
KEY_FIELD = "key.pem"
SETTLE = Retry(consecutive=2, deadline=20, interval=1)


class KeyNotShared(RuntimeError):
    """The lab's signing key is not (or not correctly) in Secret foo/jwt-issuer."""


def share_signer(signer: Signer, cluster: ClusterRef | None = None) -> None:
    """Store the signer's private key in Secret foo/jwt-issuer, so that checks running in
    another process can sign tokens the RequestAuthentication accepts."""
    pem = signer.key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": {"name": KEY_SECRET, "labels": {"meshlab.dev/lab": "day2.jwt"}},
              "data": {KEY_FIELD: base64.b64encode(pem).decode(),
                       "kid": base64.b64encode(signer.kid.encode()).decode()}}
    ref = cluster or current_cluster()
    result = ref.kubectl("apply", f"--namespace={NAMESPACE}", "-f", "-",
                         input=json.dumps(secret))
    if result.returncode != 0:
        raise KeyNotShared(f"could not store the key in Secret {NAMESPACE}/{KEY_SECRET}: "
                           f"{result.stderr.strip()}")
    print(f"the signing key is in Secret {NAMESPACE}/{KEY_SECRET} (for Check my work)")


class _SharedSigner(Signer):
    """A Signer around a key read back from the Secret (no new key is generated)."""

    def __init__(self, key: rsa.RSAPrivateKey, kid: str) -> None:
        self.kid = kid
        self.key = key


def shared_signer(ctx: CheckContext) -> Signer:
    """The notebook's signer, from Secret foo/jwt-issuer."""
    secret = ctx.get("secret", KEY_SECRET, NAMESPACE)
    data = (secret or {}).get("data") or {}
    if KEY_FIELD not in data:
        raise KeyNotShared(f"Secret {NAMESPACE}/{KEY_SECRET} with the lab's signing key is "
                           "missing: run the notebook cell that calls share_signer(signer)")
    try:
        key = serialization.load_pem_private_key(base64.b64decode(data[KEY_FIELD]), None)
        kid = base64.b64decode(data.get("kid", "")).decode() or "meshlab"
    except ValueError as exc:
        raise KeyNotShared(f"Secret {NAMESPACE}/{KEY_SECRET} does not hold a PEM key: "
                           f"{exc}") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyNotShared(f"Secret {NAMESPACE}/{KEY_SECRET} holds a non-RSA key")
    return _SharedSigner(key, kid)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@check("day2.jwt.workloads",
       f"httpbin and the curl client run in {NAMESPACE}, each pod with an istio-proxy sidecar",
       fatal=True, points=0,
       hint=f"run the lab's setup cell: namespace {NAMESPACE} labelled "
            f"istio-injection=enabled, {manifest('httpbin')} and {manifest('curl')} applied")
def workloads(ctx: CheckContext) -> Outcome:
    return meshed_apps(ctx, NAMESPACE, ("httpbin", "curl"))


def _selects_httpbin(spec: dict[str, Any]) -> bool:
    labels = (spec.get("selector") or {}).get("matchLabels") or {}
    return all(value == {"app": "httpbin", "version": "v1"}.get(key)
               for key, value in labels.items())


@check("day2.jwt.request-authentication",
       f"a RequestAuthentication for httpbin in {NAMESPACE} trusts issuer {ISSUER} with an "
       "inline JWKS",
       hint=f"apply jwt-example: selector app: httpbin, jwtRules: [{{issuer: {ISSUER}, jwks: "
            "<signer.jwks>}]; offline, the keys go inline in `jwks`, not behind `jwksUri`")
def request_authentication(ctx: CheckContext) -> Outcome:
    found = [p for p in ctx.items("requestauthentications.security.istio.io", NAMESPACE)
             if _selects_httpbin(p.get("spec") or {})]
    rules = [(p["metadata"]["name"], r) for p in found
             for r in (p["spec"].get("jwtRules") or []) if r.get("issuer") == ISSUER]
    if not rules:
        return failed(f"no RequestAuthentication selecting httpbin in {NAMESPACE} has a jwtRule "
                      f"with issuer {ISSUER}")
    if not any(rule.get("jwks") for _, rule in rules):
        names = ", ".join(name for name, _ in rules)
        return failed(f"{names}: the jwtRule for {ISSUER} has no inline `jwks`")
    return passed()


@check("day2.jwt.invalid-token",
       "httpbin answers 401 to a token it cannot verify (malformed, or signed by another key)",
       retry=SETTLE,
       hint="the RequestAuthentication must select httpbin (app: httpbin) and list the "
            "issuer; a token is only checked when a RequestAuthentication applies")
def invalid_token(ctx: CheckContext) -> Outcome:
    stranger = Signer().token(ISSUER, iss=ISSUER, groups=GROUPS)
    return expect_statuses(ctx, NAMESPACE, [
        Expect("curl", URL, 401, headers=bearer("invalidToken"), what="with a malformed token"),
        Expect("curl", URL, 401, headers=bearer(stranger),
               what="with a token signed by an unknown key")])


def _tokens(ctx: CheckContext) -> tuple[str, str]:
    """(a token with the groups claim, one without), both valid for the lab's issuer."""
    signer = shared_signer(ctx)
    return (signer.token(ISSUER, iss=ISSUER, groups=GROUPS), signer.token(ISSUER, iss=ISSUER))


@check("day2.jwt.require-jwt",
       f"httpbin requires a valid JWT: no token gets 403, a token from {ISSUER} gets 200",
       retry=SETTLE,
       hint="apply require-jwt: selector app: httpbin, action: ALLOW, rules: [{from: "
            f"[{{source: {{requestPrincipals: [{PRINCIPAL}]}}}}]}}]")
def require_jwt(ctx: CheckContext) -> Outcome:
    try:
        grouped, _ = _tokens(ctx)
    except KeyNotShared as exc:
        return failed(str(exc))
    return expect_statuses(ctx, NAMESPACE, [
        Expect("curl", URL, 403, what="with no token"),
        Expect("curl", URL, 200, headers=bearer(grouped), what="with a valid token")])


@check("day2.jwt.groups-claim",
       "only tokens whose groups claim contains group1 are allowed",
       retry=SETTLE,
       hint="add to require-jwt's rule: when: [{key: request.auth.claims[groups], "
            "values: [group1]}]")
def groups_claim(ctx: CheckContext) -> Outcome:
    try:
        grouped, plain = _tokens(ctx)
    except KeyNotShared as exc:
        return failed(str(exc))
    return expect_statuses(ctx, NAMESPACE, [
        Expect("curl", URL, 200, headers=bearer(grouped),
               what="with a valid token, groups [group1, group2]"),
        Expect("curl", URL, 403, headers=bearer(plain), what="with a valid token, no groups")])
