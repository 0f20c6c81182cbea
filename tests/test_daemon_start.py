"""What a cluster writes while it starts: its own objects, stored without building a schema."""

from __future__ import annotations

import asyncio

import pytest

from labs.embedded import controllers
from labs.embedded.apiserver import api as api_module
from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.resources import ResourceRegistry
from labs.embedded.apiserver.store import Store
from labs.embedded.daemon import install_course_crds, publish_api_service
from labs.embedded.mesh.install import install_addons
from labs.embedded.mesh.istio.gateway_install import install_ingress_gateway


def test_start_builds_no_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    """Do the course CRDs, the system namespaces, the `kubernetes` Service and the packaged
    manifests (ingress gateway, addons) go in without a built-in schema, so the API serves
    before the client models are imported (a fifth of a second or more), and are they all
    there?"""
    def no_schema(api_version: str, kind: str) -> None:
        raise AssertionError(f"a schema was built for {api_version} {kind} during the start")

    monkeypatch.setattr(api_module, "builtin_schema", no_schema)
    api = ObjectApi(Store(None), ResourceRegistry())
    install_course_crds(api)
    asyncio.run(controllers.bootstrap(api))
    publish_api_service(api, 6443)
    assert install_ingress_gateway(api) > 0 and install_addons(api) > 0
    crds = api.registry.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    namespaces = api.registry.lookup("", "v1", "namespaces")
    deployments = api.registry.lookup("apps", "v1", "deployments")
    assert crds is not None and namespaces is not None and deployments is not None
    assert api.find(crds, "", "virtualservices.networking.istio.io") is not None
    default = api.find(namespaces, "", "default")
    assert default is not None and default["spec"] == {"finalizers": ["kubernetes"]}
    gateway = api.find(deployments, "istio-system", "istio-ingressgateway")
    assert gateway is not None and gateway["apiVersion"] == "apps/v1"
    assert api.find(deployments, "istio-system", "prometheus") is not None
