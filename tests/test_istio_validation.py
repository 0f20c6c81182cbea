"""istiod's validating webhook, as `kubectl apply` shows it: configuration a real mesh refuses is
refused here too, with Istio's words (pilot/pkg/config/validation)."""

from __future__ import annotations

import json

import pytest
from conftest import Kubectl

from labs.embedded.mesh.istio.config_validation import virtual_service_errors


def virtual_service(hosts: list[str], gateways: list[str] | None = None) -> str:
    spec: dict[str, object] = {"hosts": hosts, "http": [{"route": [
        {"destination": {"host": "productpage"}}]}]}
    if gateways is not None:
        spec["gateways"] = gateways
    return json.dumps({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                       "metadata": {"name": "catch-all"}, "spec": spec})


@pytest.mark.parametrize("gateways", [None, ["mesh"], ["bookinfo-gateway", "mesh"]])
def test_a_wildcard_host_bound_to_sidecars_is_refused(kubectl: Kubectl,
                                                     gateways: list[str] | None) -> None:
    stderr = kubectl.fails("apply", "-f", "-", input=virtual_service(["*"], gateways))
    assert ('admission webhook "validation.istio.io" denied the request: configuration is '
            "invalid: wildcard host * is not allowed for virtual services bound to the mesh "
            "gateway") in stderr
    assert "NotFound" in kubectl.run("get", "virtualservice", "catch-all").stderr


def test_a_wildcard_host_on_a_gateway_is_accepted(kubectl: Kubectl) -> None:
    assert "created" in kubectl("apply", "-f", "-",
                                input=virtual_service(["*"], ["bookinfo-gateway"]))
    stderr = kubectl.fails("apply", "-f", "-", input=virtual_service(["*"], ["mesh"]))
    assert "wildcard host *" in stderr  # an update is validated like a create


def test_rules_follow_istio() -> None:
    assert virtual_service_errors({"hosts": ["reviews"]}) == []
    assert virtual_service_errors({}) == ["virtual service must have at least one host"]
