"""Does the API server validate custom resources against their CRD's schema as it is now: the
schema read on first use (the registry keeps no decoded schemas), and read again after the CRD
is updated, or deleted and created anew?"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.errors import ApiError
from labs.embedded.apiserver.resources import ResourceRegistry
from labs.embedded.apiserver.store import Store

Obj = dict[str, Any]


def widgets_crd(size_type: str) -> Obj:
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                     "openAPIV3Schema": {"type": "object", "properties": {"spec": {
                         "type": "object",
                         "properties": {"size": {"type": size_type}}}}}}}]}}


def widget(name: str, size: object) -> Obj:
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name},
            "spec": {"size": size}}


def test_custom_resources_follow_the_current_crd_schema() -> None:
    api = ObjectApi(Store(None), ResourceRegistry())
    crds = api.registry.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    namespaces = api.registry.lookup("", "v1", "namespaces")
    assert crds is not None and namespaces is not None
    api.create(namespaces, "", {"metadata": {"name": "lab"}})
    api.create(crds, "", widgets_crd("integer"))
    widgets = api.registry.lookup("example.com", "v1", "widgets")
    assert widgets is not None

    api.create(widgets, "lab", widget("one", 1))
    with pytest.raises(ApiError) as refused:
        api.create(widgets, "lab", widget("two", "big"))
    assert refused.value.code == 422 and "spec.size" in refused.value.message

    updated = copy.deepcopy(api.get(crds, "", "widgets.example.com"))
    updated["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"]["size"]["type"] = "string"
    api.update(crds, "", "widgets.example.com", updated)
    api.create(widgets, "lab", widget("two", "big"))
    with pytest.raises(ApiError):
        api.create(widgets, "lab", widget("three", 3))

    api.delete(crds, "", "widgets.example.com")
    api.create(crds, "", widgets_crd("integer"))
    api.create(widgets, "lab", widget("three", 3))
    with pytest.raises(ApiError):
        api.create(widgets, "lab", widget("four", "big"))
