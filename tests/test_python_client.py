"""API conformance through the official `kubernetes` Python client (models, watch, dynamic client).

The notebooks' helpers and the graders use this client, so its typed models must deserialize every
response, and its error handling must see the same Status objects a real API server sends.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import poll
from kubernetes import client, dynamic, watch
from kubernetes.client.exceptions import ApiException

from labs.cluster import ClusterRef

VS_GROUP, VS_VERSION, VS_PLURAL = "networking.istio.io", "v1", "virtualservices"


def status_of(exc: ApiException) -> dict[str, Any]:
    """The Status object an error response carries."""
    body = json.loads(exc.body)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1", body
    assert body["status"] == "Failure" and body["code"] == exc.status, body
    assert isinstance(body["message"], str) and body["message"], body
    return dict(body)


def config_map(name: str, labels: dict[str, str] | None = None, **data: str
               ) -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels=labels), data=data)


def exists(read: Callable[[], object]) -> bool:
    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


@pytest.fixture(scope="module")
def api_client(cluster: ClusterRef) -> Iterator[client.ApiClient]:
    with cluster.api_client() as api:
        yield api


@pytest.fixture
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


def virtual_service(name: str, host: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"hosts": [host], "http": [{"route": [{"destination": {"host": host}}]}]}}


# -- typed APIs ----------------------------------------------------------------------------------
def test_core_crud_and_selectors(core: client.CoreV1Api, namespace: str) -> None:
    """Do create/read/replace/patch/delete and label/field-selector lists work on ConfigMaps?"""
    created = core.create_namespaced_config_map(namespace, config_map("a", {"tier": "db"}, x="1"))
    assert created.metadata.uid and created.metadata.resource_version
    core.create_namespaced_config_map(namespace, config_map("b", {"tier": "web"}, x="2"))
    core.create_namespaced_config_map(namespace, config_map("c", {"tier": "web"}, x="3"))

    def names(**selectors: str) -> list[str]:
        return sorted(i.metadata.name for i in core.list_namespaced_config_map(
            namespace, **selectors).items)

    assert names(label_selector="tier=web") == ["b", "c"]
    assert names(label_selector="tier in (db,web),tier!=web") == ["a"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(label_selector="tier=web", field_selector="metadata.name!=b") == ["c"]
    read = core.read_namespaced_config_map("a", namespace)
    read.data["x"] = "10"
    replaced = core.replace_namespaced_config_map("a", namespace, read)
    assert replaced.data == {"x": "10"}
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    patched = core.patch_namespaced_config_map("a", namespace, {"data": {"y": "20"}})
    assert patched.data == {"x": "10", "y": "20"}
    deleted = core.delete_namespaced_config_map("a", namespace)
    # kube-apiserver answers a Status; client 37 types this response as a plain object.
    assert (deleted["kind"], deleted["status"]) == ("Status", "Success"), deleted
    assert (deleted["details"]["name"], deleted["details"]["kind"]) == ("a", "configmaps")
    assert names(label_selector="tier") == ["b", "c"]
    everywhere = core.list_config_map_for_all_namespaces(
        label_selector="tier", field_selector=f"metadata.namespace={namespace}")
    assert sorted((i.metadata.namespace, i.metadata.name) for i in everywhere.items) == [
        (namespace, "b"), (namespace, "c")]


def test_apps_crud(api_client: client.ApiClient, namespace: str) -> None:
    """Does AppsV1Api create, read, patch, list and delete a Deployment with defaults filled?"""
    apps = client.AppsV1Api(api_client)
    body = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="api", labels={"app": "api"}),
        spec=client.V1DeploymentSpec(
            replicas=1, selector=client.V1LabelSelector(match_labels={"app": "api"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "api"}),
                spec=client.V1PodSpec(containers=[client.V1Container(
                    name="api", image="docker.io/example/api:1.0")]))))
    created = apps.create_namespaced_deployment(namespace, body)
    assert created.metadata.generation == 1
    assert created.spec.strategy.type == "RollingUpdate"
    assert created.spec.template.spec.restart_policy == "Always"
    patched = apps.patch_namespaced_deployment("api", namespace, {"spec": {"replicas": 2}})
    assert patched.spec.replicas == 2 and patched.metadata.generation == 2
    listed = apps.list_namespaced_deployment(namespace, label_selector="app=api")
    assert [d.metadata.name for d in listed.items] == ["api"]
    scale = apps.read_namespaced_deployment_scale("api", namespace)
    assert scale.spec.replicas == 2
    apps.delete_namespaced_deployment("api", namespace)
    poll(lambda: not exists(lambda: apps.read_namespaced_deployment("api", namespace)),
         "the deployment to go")


def test_custom_objects_virtual_service(api_client: client.ApiClient, namespace: str) -> None:
    """Does CustomObjectsApi create, get, list, merge-patch, replace and delete a
    VirtualService?"""
    custom = client.CustomObjectsApi(api_client)
    created = custom.create_namespaced_custom_object(
        VS_GROUP, VS_VERSION, namespace, VS_PLURAL, virtual_service("r", "reviews", {"a": "b"}))
    assert created["metadata"]["generation"] == 1
    got = custom.get_namespaced_custom_object(VS_GROUP, VS_VERSION, namespace, VS_PLURAL, "r")
    assert got["spec"]["hosts"] == ["reviews"]
    listed = custom.list_namespaced_custom_object(VS_GROUP, VS_VERSION, namespace, VS_PLURAL,
                                                  label_selector="a=b")
    assert listed["kind"] == "VirtualServiceList"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["r"]
    patched = custom.patch_namespaced_custom_object(
        VS_GROUP, VS_VERSION, namespace, VS_PLURAL, "r", {"spec": {"hosts": ["reviews.x"]}})
    assert patched["spec"]["hosts"] == ["reviews.x"]
    assert patched["metadata"]["generation"] == 2
    # The mesh control plane may write this VS's status meanwhile (its host matches no
    # Service): read-modify-write retries on 409, as every Kubernetes client must.
    for _ in range(5):
        current = custom.get_namespaced_custom_object(VS_GROUP, VS_VERSION, namespace,
                                                      VS_PLURAL, "r")
        current["spec"]["gateways"] = ["mesh"]
        try:
            replaced = custom.replace_namespaced_custom_object(VS_GROUP, VS_VERSION, namespace,
                                                               VS_PLURAL, "r", current)
            break
        except ApiException as conflict:
            assert status_of(conflict)["reason"] == "Conflict"
    else:
        pytest.fail("replace kept conflicting")
    assert replaced["spec"]["gateways"] == ["mesh"]
    custom.delete_namespaced_custom_object(VS_GROUP, VS_VERSION, namespace, VS_PLURAL, "r")
    with pytest.raises(ApiException) as err:
        custom.get_namespaced_custom_object(VS_GROUP, VS_VERSION, namespace, VS_PLURAL, "r")
    assert status_of(err.value)["reason"] == "NotFound"


def test_dynamic_client_discovery(api_client: client.ApiClient, namespace: str) -> None:
    """Does the DynamicClient find VirtualService through discovery and work with it?"""
    dyn = dynamic.DynamicClient(api_client)
    vs_api = dyn.resources.get(api_version="networking.istio.io/v1", kind="VirtualService")
    assert (vs_api.name, vs_api.namespaced) == ("virtualservices", True)
    assert "vs" in vs_api.short_names
    vs_api.create(body=virtual_service("dyn", "ratings", {"team": "x"}), namespace=namespace)
    got = vs_api.get(name="dyn", namespace=namespace)
    assert got.spec.hosts == ["ratings"]
    assert got.metadata.uid
    listed = vs_api.get(namespace=namespace, label_selector="team=x")
    assert [i.metadata.name for i in listed.items] == ["dyn"]
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    assert deployments.get(namespace=namespace).items == []
    vs_api.delete(name="dyn", namespace=namespace)


# -- watch ---------------------------------------------------------------------------------------
def test_watch_sees_added_modified_deleted(core: client.CoreV1Api, namespace: str) -> None:
    """Does `watch.Watch().stream(list_namespaced_config_map)` deliver ADDED, MODIFIED and
    DELETED for a ConfigMap changed while it watches?"""
    start = core.list_namespaced_config_map(namespace).metadata.resource_version
    seen: list[tuple[str, str, str]] = []
    watcher = watch.Watch()

    def follow() -> None:
        for event in watcher.stream(core.list_namespaced_config_map, namespace,
                                    resource_version=start, timeout_seconds=20):
            obj = event["object"]
            seen.append((event["type"], obj.metadata.name, (obj.data or {}).get("v", "")))
            if event["type"] == "DELETED" and obj.metadata.name == "watched":
                watcher.stop()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    time.sleep(0.3)
    core.create_namespaced_config_map(namespace, config_map("watched", v="1"))
    core.patch_namespaced_config_map("watched", namespace, {"data": {"v": "2"}})
    core.delete_namespaced_config_map("watched", namespace)
    thread.join(timeout=25)
    assert not thread.is_alive(), f"the watch did not see the delete; saw {seen}"
    assert [e for e in seen if e[1] == "watched"] == [
        ("ADDED", "watched", "1"), ("MODIFIED", "watched", "2"), ("DELETED", "watched", "2")]


def test_watch_timeout_ends_stream(core: client.CoreV1Api, namespace: str) -> None:
    """Does a watch with timeout_seconds end on its own, after the initial ADDED events?"""
    core.create_namespaced_config_map(namespace, config_map("there", v="1"))
    began = time.monotonic()
    events = [(e["type"], e["object"].metadata.name) for e in watch.Watch().stream(
        core.list_namespaced_config_map, namespace, timeout_seconds=1)]
    assert ("ADDED", "there") in events
    assert time.monotonic() - began < 10


# -- errors --------------------------------------------------------------------------------------
def test_stale_resource_version_conflicts(core: client.CoreV1Api, namespace: str) -> None:
    """Does a replace carrying an old resourceVersion fail with 409 Conflict, leaving the newer
    data in place?"""
    first = core.create_namespaced_config_map(namespace, config_map("cas", v="1"))
    newer = core.read_namespaced_config_map("cas", namespace)
    newer.data = {"v": "2"}
    core.replace_namespaced_config_map("cas", namespace, newer)
    first.data = {"v": "stale"}
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("cas", namespace, first)
    status = status_of(err.value)
    assert (err.value.status, status["reason"]) == (409, "Conflict")
    assert "the object has been modified" in status["message"]
    assert status["details"] == {"name": "cas", "kind": "configmaps"}
    assert core.read_namespaced_config_map("cas", namespace).data == {"v": "2"}


def test_error_bodies_are_status(core: client.CoreV1Api, namespace: str) -> None:
    """Are 404, 409 (AlreadyExists) and 422 answered with Status objects carrying the standard
    reasons and details?"""
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("missing", namespace)
    status = status_of(err.value)
    assert (status["reason"], status["message"]) == ("NotFound",
                                                     'configmaps "missing" not found')
    assert status["details"] == {"name": "missing", "kind": "configmaps"}
    core.create_namespaced_config_map(namespace, config_map("dup"))
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(namespace, config_map("dup"))
    status = status_of(err.value)
    assert (err.value.status, status["reason"], status["message"]) == (
        409, "AlreadyExists", 'configmaps "dup" already exists')
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(namespace, config_map("Not_Valid"))
    status = status_of(err.value)
    assert (err.value.status, status["reason"]) == (422, "Invalid")
    assert status["details"]["causes"][0]["field"] == "metadata.name"
    with pytest.raises(ApiException) as err:
        core.read_namespace(f"{namespace}-nope")
    assert status_of(err.value)["details"]["kind"] == "namespaces"


# -- pagination ----------------------------------------------------------------------------------
def test_list_pagination(core: client.CoreV1Api, namespace: str) -> None:
    """Does `limit` with `_continue` page through every item exactly once?"""
    for i in range(7):
        core.create_namespaced_config_map(namespace, config_map(f"page-{i}", {"paged": "yes"}))
    pages: list[list[str]] = []
    token = None
    while True:
        page = core.list_namespaced_config_map(namespace, label_selector="paged=yes", limit=3,
                                               _continue=token)
        pages.append([i.metadata.name for i in page.items])
        token = page.metadata._continue
        if not token:
            assert page.metadata.remaining_item_count in (None, 0)
            break
        assert page.metadata.remaining_item_count == 7 - sum(map(len, pages))
        assert len(pages) < 5, "pagination does not end"
    assert [len(p) for p in pages] == [3, 3, 1]
    assert sorted(name for page in pages for name in page) == [f"page-{i}" for i in range(7)]


# -- garbage collection --------------------------------------------------------------------------
def _family(core: client.CoreV1Api, namespace: str, tag: str) -> str:
    """An owner ConfigMap with two dependents pointing at it; returns the owner's name."""
    owner = core.create_namespaced_config_map(namespace, config_map(f"{tag}-owner"))
    ref = client.V1OwnerReference(api_version="v1", kind="ConfigMap", name=owner.metadata.name,
                                  uid=owner.metadata.uid)
    for i in (1, 2):
        core.create_namespaced_config_map(namespace, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=f"{tag}-child-{i}", owner_references=[ref],
                                         labels={"family": tag})))
    return str(owner.metadata.name)


def _children(core: client.CoreV1Api, namespace: str, tag: str) -> list[client.V1ConfigMap]:
    return list(core.list_namespaced_config_map(namespace, label_selector=f"family={tag}").items)


@pytest.mark.parametrize("policy", ["Background", "Foreground"])
def test_cascading_delete(core: client.CoreV1Api, namespace: str, policy: str) -> None:
    """Does deleting an owner with propagationPolicy Background / Foreground delete its
    dependents (Foreground: before the owner is gone)?"""
    owner = _family(core, namespace, policy.lower())
    core.delete_namespaced_config_map(owner, namespace,
                                      body=client.V1DeleteOptions(propagation_policy=policy))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        owner_there = exists(lambda: core.read_namespaced_config_map(owner, namespace))
        children = _children(core, namespace, policy.lower())
        if policy == "Foreground" and not owner_there:
            assert children == [], "the owner went before its dependents"
        if not owner_there and not children:
            return
        time.sleep(0.1)
    pytest.fail(f"{policy} delete left owner={owner_there} children="
                f"{[c.metadata.name for c in children]}")


def test_orphan_delete(core: client.CoreV1Api, namespace: str) -> None:
    """Does propagationPolicy Orphan keep the dependents and strip their ownerReferences?"""
    owner = _family(core, namespace, "orphan")
    core.delete_namespaced_config_map(owner, namespace,
                                      body=client.V1DeleteOptions(propagation_policy="Orphan"))
    poll(lambda: not exists(lambda: core.read_namespaced_config_map(owner, namespace)),
         "the owner to go")
    time.sleep(1)  # give a garbage collector the chance to (wrongly) act
    children = _children(core, namespace, "orphan")
    assert sorted(c.metadata.name for c in children) == ["orphan-child-1", "orphan-child-2"]
    assert all(not c.metadata.owner_references for c in children)
