"""Does `labs.authz.explain` say which policy allowed or denied a request, from the destination
proxy's own access log, stats and configuration: the DENY policy and rule that denied it, the
allow-nothing policy, a missing JWT where a rule wants a request principal, and the ALLOW rule
that let a request through?

Real daemon, real Envoys: httpbin and curl in one injected namespace; each explanation sends one
real request with `labs.traffic.probe`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mesh_support import MeshNamespace, mesh_namespace_fixture, yaml_stream
from test_mesh_authorization import POLICY_KINDS, authorization_policy, expect
from test_xds_authorization import ISSUER, Signer

from labs import authz
from labs.authz import Decision, PolicyRef
from labs.cluster import ClusterRef

meshed = mesh_namespace_fixture("httpbin", "curl", prefix="explain")


@pytest.fixture(autouse=True)
def reset_policies(meshed: MeshNamespace) -> Iterator[None]:
    meshed.kubectl("delete", POLICY_KINDS, "--all", "--ignore-not-found", "--wait=false")
    yield
    meshed.kubectl("delete", POLICY_KINDS, "--all", "--ignore-not-found", "--wait=false")


def explain(meshed: MeshNamespace, path: str, **kwargs: object) -> Decision:
    return authz.explain(f"http://httpbin:8000{path}", namespace=meshed.name,
                         cluster=meshed.cluster, **kwargs)  # type: ignore[arg-type]


def test_deny_policy_is_named_and_allow_rule_too(meshed: MeshNamespace) -> None:
    meshed.apply(yaml_stream(
        authorization_policy("deny-teapot", action="DENY", rules=[
            {"to": [{"operation": {"methods": ["POST"]}}]},
            {"to": [{"operation": {"paths": ["/status/418"]}}]}]),
        authorization_policy("allow-get", rules=[{"to": [{"operation": {"methods": ["GET"]}}]}])))
    expect(meshed, [("curl", "/status/418", (), 403), ("curl", "/get", (), 200)],
           "the DENY and ALLOW policies to apply")
    denied = explain(meshed, "/status/418")
    assert (denied.status, denied.allowed) == (403, False)
    assert denied.policy == PolicyRef(meshed.name, "deny-teapot", 1, "DENY")
    assert denied.details == (f"rbac_access_denied_matched_policy[ns[{meshed.name}]-policy"
                              "[deny-teapot]-rule[1]]")
    assert any(name.endswith(".rbac.denied") and n == 1 for name, n in denied.stats.items())
    assert f"DENIED by AuthorizationPolicy {meshed.name}/deny-teapot (DENY), rule 1" in str(
        denied)
    assert "deny-teapot" in denied._repr_html_()

    allowed = explain(meshed, "/get")
    assert (allowed.status, allowed.allowed) == (200, True)
    assert allowed.policy == PolicyRef(meshed.name, "allow-get", 0, "ALLOW")

    # Kind's path: `kubectl logs -c istio-proxy` (Istio's text format) and `pilot-agent
    # request`, which the embedded sidecars answer too; the text log names the DENY rule.
    remote = ClusterRef(meshed.cluster.kubeconfig, meshed.cluster.context)
    by_kubectl = authz.explain("http://httpbin:8000/status/418", namespace=meshed.name,
                               cluster=remote)
    assert (by_kubectl.status, by_kubectl.details) == (403, denied.details)
    assert by_kubectl.policy == denied.policy


def test_allow_nothing(meshed: MeshNamespace) -> None:
    meshed.apply(yaml_stream(authorization_policy("allow-nothing")))
    expect(meshed, [("curl", "/get", (), 403)], "`spec: {}` to deny all")
    decision = explain(meshed, "/get")
    assert (decision.status, decision.allowed, decision.policy) == (403, False, None)
    assert decision.details == "rbac_access_denied_matched_policy[none]"
    assert decision.verdict == "DENIED: no ALLOW policy matched"
    assert any("ALLOW filter has no rules" in r for r in decision.reasons)


def test_missing_jwt_where_a_request_principal_is_required(meshed: MeshNamespace) -> None:
    signer = Signer()
    meshed.apply(yaml_stream(
        {"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
         "metadata": {"name": "jwt"},
         "spec": {"selector": {"matchLabels": {"app": "httpbin"}},
                  "jwtRules": [{"issuer": ISSUER, "jwks": signer.jwks}]}},
        authorization_policy("require-jwt", rules=[
            {"from": [{"source": {"requestPrincipals": [f"{ISSUER}/alice"]}}]}])))
    token = signer.token("alice")
    expect(meshed, [("curl", "/get", (), 403),
                    ("curl", "/get", ("-H", f"Authorization: Bearer {token}"), 200)],
           "a request principal to be required")
    missing = explain(meshed, "/get")
    assert (missing.status, missing.details) == (403, "rbac_access_denied_matched_policy[none]")
    needing = [r for r in missing.reasons if "no JWT was sent" in r]
    assert len(needing) == 1 and needing[0].count("require-jwt") == 1, needing
    assert any(name.endswith("jwt_authn.allowed") for name in missing.stats)

    invalid = explain(meshed, "/get", token=Signer().token("alice"))
    assert (invalid.status, invalid.allowed) == (401, False)
    assert invalid.details.startswith("jwt_authn_access_denied")
    assert invalid.verdict.startswith("DENIED by RequestAuthentication")

    valid = explain(meshed, "/get", token=token)
    assert valid.allowed and valid.policy == PolicyRef(meshed.name, "require-jwt", 0, "ALLOW")


def test_no_policy_and_bad_url(meshed: MeshNamespace) -> None:
    expect(meshed, [("curl", "/get", (), 200)], "the previous test's policies to be gone")
    decision = explain(meshed, "/get")
    assert decision.allowed and decision.policy is None
    assert any("allowed by default" in r for r in decision.reasons)
    with pytest.raises(authz.AuthzError, match=r"no Service 'nothere' .*: run the cells that "
                                               r"deploy it first") as missing:
        authz.explain("http://nothere:8000/", namespace=meshed.name, cluster=meshed.cluster)
    # In a notebook: the message alone, no traceback through labs/.
    assert missing.value._render_traceback_() == [f"AuthzError: {missing.value}"]
