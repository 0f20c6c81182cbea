"""AuthorizationPolicy as ztunnel gets it (labs/embedded/mesh/istio/ambient/l4_policy.py): istiod's
conversion and its `ZtunnelAccepted` messages, checked against upstream's own test cases
(istio/istio pilot/pkg/serviceregistry/ambient/authorization_test.go) and docs."""

from __future__ import annotations

from typing import Any

import pytest

from labs.embedded.mesh.istio.ambient.l4_policy import (
    RBAC_ALLOW_FILTER,
    RBAC_DENY_FILTER,
    convert,
    route_rbac,
    workload_policies,
    ztunnel_condition,
)
from labs.embedded.mesh.istio.state import MeshState

Obj = dict[str, Any]
HTTP_ALLOW = ("ztunnel does not support HTTP attributes (found: {}). In ambient mode you must "
              "use a waypoint proxy to enforce HTTP rules. Within an ALLOW policy, rules "
              "matching HTTP attributes are omitted. This will be more restrictive than "
              "requested.")


def policy(spec: Obj, name: str = "p", namespace: str = "default") -> Obj:
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def test_http_attributes_are_named_sorted_as_upstream_does() -> None:
    """Upstream's "unsupported HTTP methods" case: requestPrincipals, methods and a `when` key."""
    found = policy({"rules": [{
        "from": [{"source": {"requestPrincipals": ["example.com/sub-1"]}}],
        "to": [{"operation": {"methods": ["GET"]}}],
        "when": [{"key": "request.auth.presenter", "values": ["presenter.example.com"]}]}]})
    converted, message = convert(found)
    assert message == HTTP_ALLOW.format("methods, request.auth.presenter, requestPrincipals")
    assert converted is not None and converted.groups == []  # the rule is dropped
    assert ztunnel_condition(found) == {"type": "ZtunnelAccepted", "status": "True",
                                        "reason": "UnsupportedValue", "message": message}


def test_deny_keeps_the_rest_of_the_rule() -> None:
    found = policy({"action": "DENY", "rules": [{
        "from": [{"source": {"namespaces": ["other"]}}],
        "to": [{"operation": {"methods": ["POST"]}}]}]})
    converted, message = convert(found)
    assert message == (
        "ztunnel does not support HTTP attributes (found: methods). In ambient mode you must "
        "use a waypoint proxy to enforce HTTP rules. DENY policy with HTTP attributes is "
        "enforced without the HTTP rules. This will be more restrictive than requested.")
    assert converted is not None and len(converted.groups) == 1


@pytest.mark.parametrize("action", ["CUSTOM", "AUDIT"])
def test_unsupported_actions(action: str) -> None:
    found = policy({"action": action, "provider": {"name": "x"}, "rules": [{}]})
    assert convert(found) == (None, f"ztunnel does not support the {action} action")
    assert ztunnel_condition(found)["reason"] == "UnsupportedValue"  # type: ignore[index]


def test_target_refs_are_for_waypoints() -> None:
    found = policy({"targetRefs": [{"kind": "Service", "group": "", "name": "productpage"}],
                    "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]})
    assert convert(found) == (None, None)
    assert ztunnel_condition(found) is None


def test_clean_policy_is_attached_to_ztunnel() -> None:
    found = policy({"rules": [{"from": [{"source": {
        "principals": ["cluster.local/ns/default/sa/curl"]}}]}]})
    assert ztunnel_condition(found) == {"type": "ZtunnelAccepted", "status": "True",
                                        "reason": "Accepted", "message": "attached to ztunnel"}


def test_route_rbac_decides_ports_per_route() -> None:
    """`ports` are the connection's destination port: known per route, so decided there."""
    converted, _ = convert(policy({"rules": [{"to": [{"operation": {"ports": ["9080"]}}]}]}))
    assert converted is not None
    on_9080 = route_rbac([converted], 9080)[RBAC_ALLOW_FILTER]["rules"]["policies"]
    on_8080 = route_rbac([converted], 8080)[RBAC_ALLOW_FILTER]["rules"]["policies"]
    assert on_9080["default/p#0"]["principals"] == [{"any": True}]
    assert on_8080["default/p#0"]["principals"] == [{"not_id": {"any": True}}]


def test_service_accounts_and_policies_selection() -> None:
    """`serviceAccounts` are read in the policy's namespace unless they name one; a selector
    policy applies to matching pods only, a namespace-wide one to every pod."""
    sa = policy({"action": "DENY", "rules": [{"from": [{"source": {
        "serviceAccounts": ["curl", "other/bot"]}}]}]}, name="sa")
    picky = policy({"selector": {"matchLabels": {"app": "web"}}, "rules": [{}]}, name="picky")
    state = MeshState(authorization_policies=[sa, picky])
    db = {"metadata": {"name": "db-1", "namespace": "default", "labels": {"app": "db"}}}
    chosen = workload_policies(state, db)
    assert [p.name for p in chosen] == ["sa"]
    rbac = route_rbac(chosen, 5432)
    assert RBAC_ALLOW_FILTER not in rbac
    principal = rbac[RBAC_DENY_FILTER]["rules"]["policies"]["default/sa#0"]["principals"][0]
    assert principal == {"or_ids": {"ids": [
        {"authenticated": {"principal_name": {
            "exact": "spiffe://cluster.local/ns/default/sa/curl"}}},
        {"authenticated": {"principal_name": {
            "exact": "spiffe://cluster.local/ns/other/sa/bot"}}}]}}
