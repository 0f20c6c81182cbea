"""Does sidecar injection add Istio's sidecar to exactly the pods Istio would, in Istio's shape?

Every pod is created through a real in-process `ObjectApi` with injection registered, so the
injected pod also passes the API server's schema validation, defaulting and name checks.
"""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.errors import ApiError
from labs.embedded.apiserver.resources import ResourceRegistry, ResourceType
from labs.embedded.apiserver.store import Store
from labs.embedded.controllers.deployment import DeploymentController
from labs.embedded.controllers.replicaset import ReplicaSetController, pod_from_template
from labs.embedded.mesh.istio.injection import inject, injection_requested, register_injection
from labs.embedded.workload import has_sidecar
from labs.versions import VERSIONS_FILE, VersionsError, parse, version, versions

Obj = dict[str, Any]
REGISTRY = ResourceRegistry()


def rt(group: str, version_: str, plural: str) -> ResourceType:
    found = REGISTRY.lookup(group, version_, plural)
    assert found is not None
    return found


NAMESPACES = rt("", "v1", "namespaces")
PODS = rt("", "v1", "pods")
DEPLOYMENTS = rt("apps", "v1", "deployments")
REPLICASETS = rt("apps", "v1", "replicasets")
VOLUMES = ["workload-socket", "credential-socket", "workload-certs", "istio-envoy",
           "istio-data", "istio-podinfo", "istio-token", "istiod-ca-cert"]


@pytest.fixture
def api() -> ObjectApi:
    api = ObjectApi(Store(None), ResourceRegistry())
    register_injection(api)
    for name, labels in (("meshed", {"istio-injection": "enabled"}), ("plain", {}),
                         ("off", {"istio-injection": "disabled"}),
                         ("canary", {"istio.io/rev": "canary"})):
        api.create(NAMESPACES, "", {"metadata": {"name": name, "labels": labels}})
    return api


def pod(name: str = "reviews-v2", labels: dict[str, str] | None = None, **spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {"app": "reviews", "version": "v2"}},
            "spec": {"serviceAccountName": "bookinfo-reviews",
                     "containers": [{"name": "reviews",
                                     "image": "docker.io/istio/examples-bookinfo-reviews-v2",
                                     "ports": [{"containerPort": 9080}]}], **spec}}


def create(api: ObjectApi, namespace: str, body: Obj) -> Obj:
    return api.create(PODS, namespace, body).object


def names(items: list[Obj] | None) -> list[str]:
    return [item["name"] for item in items or []]


def env_of(container: Obj) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_pod_in_a_labelled_namespace_gets_istios_sidecar(api: ObjectApi) -> None:
    """Does a pod in an `istio-injection=enabled` namespace get istio-init, istio-proxy, the
    volumes, labels and annotations Istio's template adds — and pass validation?"""
    created = create(api, "meshed", pod())
    spec, meta = created["spec"], created["metadata"]
    image = f"docker.io/istio/proxyv2:{version('ISTIO_VERSION')}"
    assert names(spec["containers"]) == ["reviews", "istio-proxy"]
    assert names(spec["initContainers"]) == ["istio-init"]
    assert names(spec["volumes"]) == VOLUMES
    proxy, init = spec["containers"][1], spec["initContainers"][0]
    assert proxy["image"] == init["image"] == image
    assert init["args"][:2] == ["istio-iptables", "-p"]
    assert "-d" in init["args"] and "15090,15021,15020" in init["args"]
    assert "NET_ADMIN" in init["securityContext"]["capabilities"]["add"]
    assert "restartPolicy" not in init  # a plain init container, reported completed
    assert proxy["args"][:4] == ["proxy", "sidecar", "--domain",
                                 "$(POD_NAMESPACE).svc.cluster.local"]
    assert proxy["ports"] == [{"containerPort": 15090, "protocol": "TCP",
                               "name": "http-envoy-prom"}]
    assert proxy["readinessProbe"]["httpGet"]["path"] == "/healthz/ready"
    assert proxy["readinessProbe"]["httpGet"]["port"] == 15021
    assert proxy["readinessProbe"]["periodSeconds"] == 15
    assert proxy["readinessProbe"]["failureThreshold"] == 4
    assert proxy["startupProbe"]["httpGet"]["port"] == 15021
    assert proxy["securityContext"]["runAsUser"] == 1337
    assert proxy["resources"] == {"limits": {"cpu": "2", "memory": "1Gi"},
                                  "requests": {"cpu": "100m", "memory": "128Mi"}}
    assert {m["name"] for m in proxy["volumeMounts"]} == set(VOLUMES)
    env = env_of(proxy)
    assert env["POD_NAME"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["SERVICE_ACCOUNT"]["fieldRef"]["fieldPath"] == "spec.serviceAccountName"
    assert env["ISTIO_META_APP_CONTAINERS"] == "reviews"
    assert env["ISTIO_META_POD_PORTS"] == '[\n    {"containerPort":9080,"protocol":"TCP"}\n]'
    assert env["ISTIO_META_WORKLOAD_NAME"] == "reviews-v2"
    assert env["ISTIO_META_OWNER"] == "kubernetes://apis/v1/namespaces/meshed/pods/reviews-v2"
    assert env["ISTIO_META_MESH_ID"] == env["TRUST_DOMAIN"] == "cluster.local"
    assert meta["labels"] == {"app": "reviews", "version": "v2",
                              "security.istio.io/tlsMode": "istio",
                              "service.istio.io/canonical-name": "reviews",
                              "service.istio.io/canonical-revision": "v2"}
    annotations = meta["annotations"]
    assert annotations["kubectl.kubernetes.io/default-container"] == "reviews"
    assert annotations["kubectl.kubernetes.io/default-logs-container"] == "reviews"
    assert annotations["istio.io/rev"] == "default"
    assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"],
            annotations["prometheus.io/scrape"]) == ("15020", "/stats/prometheus", "true")
    assert json.loads(annotations["sidecar.istio.io/status"]) == {
        "initContainers": ["istio-init"], "containers": ["istio-proxy"], "volumes": VOLUMES,
        "imagePullSecrets": None, "revision": "default"}
    assert annotations["sidecar.istio.io/status"].startswith('{"initContainers":["istio-init"]')
    assert has_sidecar(created)


@pytest.mark.parametrize(("namespace", "label", "injected"), [
    ("meshed", None, True),
    ("meshed", "false", False),
    ("meshed", "true", True),
    ("plain", None, False),
    ("plain", "true", True),
    ("plain", "false", False),
    ("off", "true", False),
    ("canary", None, True),
    ("canary", "false", False),
])
def test_injection_policy(api: ObjectApi, namespace: str, label: str | None,
                          injected: bool) -> None:
    """Do the namespace label and the pod's `sidecar.istio.io/inject` label decide as in
    Istio (pod false wins in a labelled namespace; pod true injects in an unlabelled one;
    `istio-injection=disabled` wins over everything)?"""
    labels = {"app": "reviews"} | ({"sidecar.istio.io/inject": label} if label else {})
    created = create(api, namespace, pod(labels=labels))
    assert has_sidecar(created) is injected
    assert (len(created["spec"]["containers"]), "initContainers" in created["spec"]) == (
        (2, True) if injected else (1, False))
    if not injected:
        assert "sidecar.istio.io/status" not in (created["metadata"].get("annotations") or {})
        assert "security.istio.io/tlsMode" not in created["metadata"]["labels"]


def test_revision_comes_from_the_namespace(api: ObjectApi) -> None:
    """Is the `istio.io/rev` of a revision-labelled namespace recorded on the pod?"""
    created = create(api, "canary", pod())
    status = json.loads(created["metadata"]["annotations"]["sidecar.istio.io/status"])
    assert status["revision"] == created["metadata"]["annotations"]["istio.io/rev"] == "canary"


def test_host_network_and_other_kinds_are_left_alone(api: ObjectApi) -> None:
    """Are hostNetwork pods, and objects that are not pods, never touched?"""
    created = create(api, "meshed", pod(hostNetwork=True))
    assert names(created["spec"]["containers"]) == ["reviews"]
    configmaps = rt("", "v1", "configmaps")
    cm = api.create(configmaps, "meshed", {"metadata": {"name": "c"}, "data": {"a": "b"}})
    assert cm.object["data"] == {"a": "b"} and "labels" not in cm.object["metadata"]


def test_injection_is_idempotent(api: ObjectApi) -> None:
    """Is a pod that already has istio-proxy (say, one re-created from `kubectl get -o yaml`)
    created unchanged, not given a second sidecar?"""
    first = create(api, "meshed", pod())
    again = copy.deepcopy(first)
    again["metadata"] = {k: v for k, v in first["metadata"].items()
                         if k in ("labels", "annotations")} | {"name": "reviews-copy"}
    again.pop("status", None)
    second = create(api, "meshed", again)
    assert names(second["spec"]["containers"]) == ["reviews", "istio-proxy"]
    assert names(second["spec"]["initContainers"]) == ["istio-init"]
    assert names(second["spec"]["volumes"]) == VOLUMES
    assert not injection_requested(first, api.find(NAMESPACES, "", "meshed"))


def test_deployment_pods_name_their_workload(api: ObjectApi) -> None:
    """Does a pod made by the ReplicaSet controller name the Deployment as its workload and
    owner, keep the template's annotations, and default the canonical revision?"""
    rs = api.create(REPLICASETS, "meshed", {
        "metadata": {"name": "productpage-v1-7d4d9d5fcb",
                     "labels": {"app": "productpage", "pod-template-hash": "7d4d9d5fcb"}},
        "spec": {"replicas": 1,
                 "selector": {"matchLabels": {"app": "productpage",
                                              "pod-template-hash": "7d4d9d5fcb"}},
                 "template": {
                     "metadata": {"labels": {"app": "productpage",
                                             "pod-template-hash": "7d4d9d5fcb"},
                                  "annotations": {"prometheus.io/scrape": "true",
                                                  "prometheus.io/port": "9080"}},
                     "spec": {"containers": [{"name": "productpage", "image": "productpage",
                                              "ports": [{"name": "http",
                                                         "containerPort": 9080}]}]}}}}).object
    created = create(api, "meshed", pod_from_template(rs))
    proxy = created["spec"]["containers"][1]
    env = env_of(proxy)
    assert created["metadata"]["name"].startswith("productpage-v1-7d4d9d5fcb-")
    assert env["ISTIO_META_WORKLOAD_NAME"] == "productpage-v1"
    assert env["ISTIO_META_OWNER"] == \
        "kubernetes://apis/apps/v1/namespaces/meshed/deployments/productpage-v1"
    assert env["ISTIO_META_POD_PORTS"] == \
        '[\n    {"name":"http","containerPort":9080,"protocol":"TCP"}\n]'
    # Istio's metrics merging: the app's own scrape settings move into the proxy's env
    assert json.loads(env["ISTIO_PROMETHEUS_ANNOTATIONS"]) == {"scrape": "true", "port": "9080"}
    assert created["metadata"]["annotations"]["prometheus.io/port"] == "15020"
    labels = created["metadata"]["labels"]
    assert labels["service.istio.io/canonical-name"] == "productpage"
    assert labels["service.istio.io/canonical-revision"] == "latest"


def test_a_deployment_rolls_out_injected_pods(api: ObjectApi) -> None:
    """Do the real Deployment and ReplicaSet controllers create pods that come out injected?"""
    async def scenario() -> list[Obj]:
        tasks = [asyncio.create_task(c.run())
                 for c in (DeploymentController(api), ReplicaSetController(api))]
        try:
            api.create(DEPLOYMENTS, "meshed", {
                "metadata": {"name": "ratings-v1"},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "ratings"}},
                         "template": {"metadata": {"labels": {"app": "ratings",
                                                              "version": "v1"}},
                                      "spec": {"containers": [{"name": "ratings",
                                                               "image": "ratings"}]}}}})
            for _ in range(200):
                pods = api.list(PODS, "meshed")[0]
                if len(pods) == 2:
                    return pods
                await asyncio.sleep(0.02)
            raise AssertionError("the Deployment's pods were not created")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    pods = asyncio.run(scenario())
    for created in pods:
        assert names(created["spec"]["containers"]) == ["ratings", "istio-proxy"]
        assert env_of(created["spec"]["containers"][1])["ISTIO_META_WORKLOAD_NAME"] == \
            "ratings-v1"
        assert created["metadata"]["labels"]["service.istio.io/canonical-revision"] == "v1"


def test_resource_and_probe_annotations_are_honoured(api: ObjectApi) -> None:
    """Do `sidecar.istio.io/proxyCPU`-style and readiness annotations shape the proxy, and
    does `prometheus.io/scrape: "false"` opt out of metrics merging?"""
    body = pod()
    body["metadata"]["annotations"] = {
        "sidecar.istio.io/proxyCPU": "50m", "sidecar.istio.io/proxyMemoryLimit": "256Mi",
        "readiness.status.sidecar.istio.io/periodSeconds": "2",
        "prometheus.io/scrape": "false"}
    created = create(api, "meshed", body)
    proxy = created["spec"]["containers"][1]
    assert proxy["resources"] == {"requests": {"cpu": "50m"}, "limits": {"memory": "256Mi"}}
    assert proxy["readinessProbe"]["periodSeconds"] == 2
    assert created["metadata"]["annotations"]["prometheus.io/scrape"] == "false"
    assert "prometheus.io/port" not in created["metadata"]["annotations"]


def test_inject_keeps_explicit_labels_and_default_container(api: ObjectApi) -> None:
    """Are a pod's own canonical labels and default-container annotation kept?"""
    body = pod(labels={"app": "web", "service.istio.io/canonical-name": "frontend"})
    body["metadata"]["annotations"] = {"kubectl.kubernetes.io/default-container": "reviews"}
    body["spec"]["containers"].insert(0, {"name": "helper", "image": "busybox"})
    created = create(api, "meshed", body)
    assert created["metadata"]["labels"]["service.istio.io/canonical-name"] == "frontend"
    annotations = created["metadata"]["annotations"]
    assert annotations["kubectl.kubernetes.io/default-container"] == "reviews"
    assert annotations["kubectl.kubernetes.io/default-logs-container"] == "helper"
    assert env_of(created["spec"]["containers"][2])["ISTIO_META_APP_CONTAINERS"] == \
        "helper,reviews"


def test_injected_pod_still_gets_validated(api: ObjectApi) -> None:
    """Does an invalid pod still get the API server's 422 after injection ran?"""
    body = pod()
    # (a well-typed but invalid value: a wrong JSON type is refused before admission, 400)
    body["spec"]["containers"][0]["imagePullPolicy"] = "Sometimes"
    with pytest.raises(ApiError) as raised:
        create(api, "meshed", body)
    assert raised.value.code == 422


def test_inject_works_on_a_bare_pod_dict() -> None:
    """Can `inject` be used on its own (e.g. by a `kube-inject`-style helper)?"""
    body = pod()
    body["metadata"]["namespace"] = "default"
    inject(body)
    assert has_sidecar(body)
    assert names(body["spec"]["initContainers"]) == ["istio-init"]


# -- the pinned versions the sidecar image comes from ------------------------------------------

def test_versions_file_pins_every_tool_and_is_shell_sourceable() -> None:
    """Does versions.env pin every tool, and does a shell read the same values as Python?"""
    pinned = versions()
    assert {"ISTIO_VERSION", "LINKERD_VERSION", "GATEWAY_API_VERSION", "KIND_VERSION",
            "KIND_NODE_IMAGE", "KUBECTL_VERSION", "ENVOY_VERSION"} <= pinned.keys()
    assert pinned["ISTIO_VERSION"].startswith("1.30.")
    script = f". {VERSIONS_FILE} && " + " && ".join(f'echo "{k}=${k}"' for k in pinned)
    shell = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert dict(line.split("=", 1) for line in shell.stdout.splitlines()) == pinned


@pytest.mark.parametrize(("text", "message"), [
    ("ISTIO_VERSION = 1.30.0", "versions.env:1: cannot read"),
    ("# ok\nistio_version=1", "versions.env:2: cannot read"),
    ('ISTIO_VERSION="1.30.0"', "without spaces or quotes"),
    ("A=1\nA=2", "A is set twice"),
])
def test_malformed_versions_are_reported_by_line(text: str, message: str) -> None:
    """Does a malformed versions.env line raise an error naming the line and the fix?"""
    with pytest.raises(VersionsError, match=message):
        parse(text)


def test_unknown_version_key_lists_the_known_ones() -> None:
    """Does asking for a version the file does not pin say which ones it does?"""
    with pytest.raises(VersionsError, match=r"does not set NOPE_VERSION.*ISTIO_VERSION"):
        version("NOPE_VERSION")


def test_missing_versions_file_says_where_it_was_looked_for(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without cluster-setup/versions.env, is the error the path and how to get the file?"""
    import labs.versions as module

    monkeypatch.setattr(module, "VERSIONS_FILE", tmp_path / "versions.env")
    module._load.cache_clear()
    try:
        with pytest.raises(VersionsError, match=r"versions.env \(No such file"):
            versions()
    finally:
        module._load.cache_clear()
