"""The embedded API server decodes every write into its type before admission, like
kube-apiserver: a top-level field of the wrong JSON type is a 400 naming the field (custom
resources: the schema's 422), `null` is the zero value (the same answer as leaving the field
out), never a 5xx. Swept over every top-level field of every kind discovery lists as writable,
on POST and PUT, through the admission hooks (sidecar injection in an injection-enabled
namespace, istiod's validation of VirtualServices, the Gateway deployment controller).

Also here: the patch types' decode errors, and the `fieldValidation` default (Warn).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import poll

from labs.cluster import ClusterRef
from labs.embedded.apiserver.builtin_schemas import builtin_schema

Obj = dict[str, Any]
VALUES: dict[str, Any] = {"null": None, "bool": True, "number": 1, "string": "x", "array": [],
                          "object": {}}
# JSON type of each sample value -> the schema types it satisfies.
FITS = {"bool": {"boolean"}, "number": {"integer", "number"}, "string": {"string"},
        "array": {"array"}, "object": {"object"}}
POD_SPEC = {"containers": [{"name": "web", "image": "docker.io/example/web:1.0"}]}
# Bases that get past validation, so the hooks behind it run; other kinds start from a bare
# object (their spec's own requirements then answer 422, still through the decode step).
BASES: dict[str, Obj] = {
    "Pod": {"spec": POD_SPEC},
    "Deployment": {"spec": {"replicas": 0, "selector": {"matchLabels": {"app": "d"}},
                            "template": {"metadata": {"labels": {"app": "d"}},
                                         "spec": POD_SPEC}}},
    "Service": {"spec": {"selector": {"app": "d"}, "ports": [{"port": 80}]}},
    "VirtualService": {"spec": {"hosts": ["reviews"],
                                "http": [{"route": [{"destination": {"host": "reviews"}}]}]}},
    "Gateway": {"spec": {"gatewayClassName": "istio",
                         "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}},
}


@dataclass
class Api:
    """Raw HTTPS to the cluster with its bearer token (the kubernetes client's pool)."""

    client: Any

    def send(self, method: str, path: str, body: Any = None, *, query: str = "",
             content_type: str = "application/json") -> tuple[int, Obj, list[str]]:
        config = self.client.configuration
        headers = {"Authorization": config.get_api_key_with_prefix("BearerToken"),
                   "Content-Type": content_type, "Accept": "application/json"}
        data = body if isinstance(body, bytes) else (
            None if body is None else json.dumps(body).encode())
        response = self.client.rest_client.pool_manager.request(
            method, f"{config.host}{path}" + (f"?{query}" if query else ""), body=data,
            headers=headers, timeout=15, retries=False)
        is_json = response.headers.get("Content-Type", "").startswith("application/json")
        payload = json.loads(response.data) if is_json else {"text": response.data.decode()}
        return response.status, payload, response.headers.getlist("Warning")


@dataclass(frozen=True)
class Kind:
    """A writable kind from discovery, with its top-level fields' schema types."""

    group_version: str
    kind: str
    plural: str
    namespaced: bool
    verbs: frozenset[str]
    fields: dict[str, str | None]  # JSON name -> schema type (None: any)
    custom: bool

    def collection(self, namespace: str) -> str:
        root = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        return f"{root}/namespaces/{namespace}/{self.plural}" if self.namespaced else (
            f"{root}/{self.plural}")


@pytest.fixture(scope="module")
def api(cluster: ClusterRef) -> Iterator[Api]:
    client = cluster.api_client()
    try:
        yield Api(client)
    finally:
        client.close()


@pytest.fixture(scope="module")
def injected(cluster: ClusterRef) -> Iterator[str]:
    """A namespace whose pods get an Istio sidecar (the injection hook runs on each)."""
    name = f"decode-{uuid.uuid4().hex[:6]}"
    assert cluster.kubectl("create", "namespace", name).returncode == 0
    assert cluster.kubectl("label", "namespace", name, "istio-injection=enabled").returncode == 0
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def _top_level_types(schema: Obj) -> dict[str, str | None]:
    props = schema.get("properties") or {}
    return {key: (sub.get("type") if isinstance(sub, dict) else None)
            for key, sub in props.items()} | {"apiVersion": "string", "kind": "string",
                                              "metadata": "object"}


def writable_kinds(api: Api) -> list[Kind]:
    """Every kind discovery lists with the `create` verb, and its top-level fields."""
    _, crds, _ = api.send("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
    crd_schemas = {
        (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"]):
        version.get("schema", {}).get("openAPIV3Schema", {})
        for crd in crds["items"] for version in crd["spec"]["versions"] if version["served"]}
    group_versions = ["v1"]
    _, groups, _ = api.send("GET", "/apis")
    group_versions += [gv["groupVersion"] for group in groups["groups"]
                       for gv in group["versions"]]
    kinds = []
    for gv in group_versions:
        _, resources, _ = api.send("GET", "/api/v1" if gv == "v1" else f"/apis/{gv}")
        for res in resources["resources"]:
            if "/" in res["name"] or "create" not in res["verbs"]:
                continue
            custom = (gv, res["kind"]) in crd_schemas
            schema = crd_schemas[(gv, res["kind"])] if custom else builtin_schema(gv, res["kind"])
            assert schema is not None, f"no schema for the built-in kind {gv} {res['kind']}"
            kinds.append(Kind(gv, res["kind"], res["name"], res["namespaced"],
                              frozenset(res["verbs"]), _top_level_types(schema), custom))
    return kinds


def _base(kind: Kind, name: str) -> Obj:
    return {"apiVersion": kind.group_version, "kind": kind.kind, "metadata": {"name": name},
            **json.loads(json.dumps(BASES.get(kind.kind, {})))}


def _expect_type_error(kind: Kind, field: str, status: int, body: Obj, what: str) -> None:
    """Wrong type: built-ins answer the Go decoder's 400 naming the field; a custom resource's
    body is unstructured there, so its schema answers (422, `spec in body must be of type`)."""
    message = body.get("message", "")
    if field in ("apiVersion", "kind"):
        assert status == 400, what
        assert f"Go struct field .{field} of type string" in message, what
    elif not kind.custom:
        assert status == 400, what
        assert f"into Go struct field {kind.kind}.{field} of type" in message, what
    else:
        assert status == 422, what
        assert field in message, what


def sweep(api: Api, kind: Kind, method: str, path: str, base: Obj, query: str) -> int:
    """Each top-level field with each JSON type; returns the number of requests sent."""
    sent = 0
    for field, schema_type in kind.fields.items():
        without = {k: v for k, v in base.items() if k != field}
        if field == "metadata" and method == "PUT":
            without["metadata"] = {"name": base["metadata"]["name"]}
        absent, absent_body, _ = api.send(method, path, without, query=query)
        sent += 1
        for label, value in VALUES.items():
            status, body, _ = api.send(method, path, {**without, field: value}, query=query)
            sent += 1
            what = f"{method} {path} {kind.kind}.{field}={label}: {status} {body}"
            assert status < 500, what
            if label == "null":
                assert status == absent, f"{what} (absent: {absent} {absent_body})"
            elif schema_type is not None and schema_type not in FITS[label]:
                _expect_type_error(kind, field, status, body, what)
            else:
                assert "cannot unmarshal" not in body.get("message", ""), what
    return sent


def test_every_top_level_field_of_every_writable_kind(api: Api, injected: str,
                                                      cluster: ClusterRef) -> None:
    """Does every writable kind decode each top-level field like kube-apiserver (400 naming
    the field, null as absent, never a 5xx) on POST and PUT, dry-run through admission?"""
    kinds = writable_kinds(api)
    assert {"Pod", "Namespace", "Deployment", "VirtualService", "Gateway",
            "SelfSubjectAccessReview"} <= {k.kind for k in kinds}
    sent = 0
    for kind in kinds:
        path = kind.collection(injected)
        sent += sweep(api, kind, "POST", path, _base(kind, "swept"), "dryRun=All")
        if "update" not in kind.verbs:
            continue
        seed = _base(kind, f"seed-{kind.plural}")
        created, current, _ = api.send("POST", path, seed)
        if created == 201:  # (without its resourceVersion: controllers may update it)
            seed = {**current, "metadata": {k: v for k, v in current["metadata"].items()
                                            if k != "resourceVersion"}}
        sent += sweep(api, kind, "PUT", f"{path}/{seed['metadata']['name']}", seed,
                      "dryRun=All")
        if created == 201 and not kind.namespaced:  # namespaced seeds go with the namespace
            api.send("DELETE", f"{path}/{seed['metadata']['name']}")
    assert sent > 1000
    assert api.send("GET", "/readyz")[:2] == (200, {"text": "ok"})


def test_admission_hooks_see_only_decoded_objects(api: Api, injected: str,
                                                  cluster: ClusterRef) -> None:
    """Do a Pod and a Gateway written with `null` top-level fields get their sidecar and their
    gateway Deployment (the hooks ran on the decoded object), while `spec: []` is refused?"""
    pod = {**_base(_kind(api, "Pod"), "nulls"), "status": None, "kind": None}
    status, body, _ = api.send("POST", f"/api/v1/namespaces/{injected}/pods", pod)
    assert status == 201, body
    assert [c["name"] for c in body["spec"]["containers"]] == ["web", "istio-proxy"]
    gateways = f"/apis/gateway.networking.k8s.io/v1/namespaces/{injected}/gateways"
    gateway = {**_base(_kind(api, "Gateway"), "nulls"), "status": None}
    status, body, _ = api.send("POST", gateways, gateway)
    assert status == 201, body
    poll(lambda: api.send("GET", f"/apis/apps/v1/namespaces/{injected}/deployments/"
                          "nulls-istio")[0] == 200, "the gateway's Deployment", timeout=30)
    for value in ([], "", 1, True):
        status, body, _ = api.send("POST", f"/api/v1/namespaces/{injected}/pods",
                                   {**pod, "spec": value})
        assert status == 400, body


def _kind(api: Api, name: str) -> Kind:
    return next(k for k in writable_kinds(api) if k.kind == name)


@pytest.mark.parametrize(("value", "json_type"), [([], "array"), ("", "string"),
                                                  (1, "number"), (True, "bool")])
def test_pod_spec_of_the_wrong_type_is_kube_apiservers_400(api: Api, injected: str,
                                                           value: Any, json_type: str) -> None:
    """Is a Pod whose spec is not an object refused with kube-apiserver's words?"""
    status, body, _ = api.send("POST", f"/api/v1/namespaces/{injected}/pods",
                               {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                                "spec": value})
    assert (status, body["reason"]) == (400, "BadRequest")
    assert body["message"] == (
        f'Pod in version "v1" cannot be handled as a Pod: json: cannot unmarshal {json_type} '
        "into Go struct field Pod.spec of type v1.PodSpec")


def test_nested_type_errors_name_the_struct_and_path(api: Api, injected: str) -> None:
    """Are nested wrong types and out-of-range numbers worded like encoding/json's errors?"""
    pods = f"/api/v1/namespaces/{injected}/pods"
    pod: Obj = {"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "web", "image": "i", "ports": [{"containerPort": "80"}]}]}}
    status, body, _ = api.send("POST", pods, pod)
    assert status == 400
    assert body["message"].endswith(
        "json: cannot unmarshal string into Go struct field ContainerPort.spec.containers.ports."
        "containerPort of type int32")
    pod["spec"]["containers"][0]["ports"] = [{"containerPort": 2**40}]
    status, body, _ = api.send("POST", pods, pod)
    assert body["message"].endswith(f"cannot unmarshal number {2**40} into Go struct field "
                                    "ContainerPort.spec.containers.ports.containerPort of type "
                                    "int32")
    status, body, _ = api.send("POST", pods, {"metadata": {"name": "p", "labels": {"a": 1}},
                                              "spec": POD_SPEC})
    assert body["message"].endswith("json: cannot unmarshal number into Go struct field "
                                    "ObjectMeta.metadata.labels of type string")


def test_namespace_null_spec_and_status_are_zero_values(api: Api) -> None:
    """Are `spec: null` and `status: null` on a Namespace (POST and PUT) the same as leaving
    them out?"""
    name = f"nulls-{uuid.uuid4().hex[:6]}"
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
            "spec": None, "status": None}
    status, created, _ = api.send("POST", "/api/v1/namespaces", body)
    try:
        assert status == 201, created
        assert created["spec"] == {"finalizers": ["kubernetes"]}
        assert created["status"]["phase"] == "Active"
        status, updated, _ = api.send("PUT", f"/api/v1/namespaces/{name}", body)
        assert status == 200, updated
        assert updated["status"]["phase"] == "Active"
    finally:
        api.send("DELETE", f"/api/v1/namespaces/{name}")


def test_patch_results_are_decoded(api: Api, injected: str) -> None:
    """Does every patch type's result go through the decoder: JSON and merge patches a 422 on
    `patch` with encoding/json's words, strategic merge with the unstructured converter's,
    apply a 400?"""
    configmaps = f"/api/v1/namespaces/{injected}/configmaps"
    status, _, _ = api.send("POST", configmaps, {"metadata": {"name": "patched"},
                                                 "data": {"a": "b"}})
    assert status == 201
    path = f"{configmaps}/patched"
    status, body, _ = api.send("PATCH", path, {"data": []},
                               content_type="application/merge-patch+json")
    assert (status, body["details"]["causes"][0]["field"]) == (422, "patch")
    assert body["message"].endswith(": json: cannot unmarshal array into Go struct field "
                                    "ConfigMap.data of type map[string]string")
    status, body, _ = api.send("PATCH", path, [{"op": "replace", "path": "/data", "value": 1}],
                               content_type="application/json-patch+json")
    assert status == 422
    assert body["message"].endswith("cannot unmarshal number into Go struct field "
                                    "ConfigMap.data of type map[string]string")
    status, body, _ = api.send("PATCH", path, {"data": "x"},
                               content_type="application/strategic-merge-patch+json")
    assert status == 422
    assert body["message"] == (' "" is invalid: patch: Invalid value: "map[data:x]": cannot '
                               "restore map from string")
    status, body, _ = api.send(
        "PATCH", path, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "patched"},
                        "data": True},
        query="fieldManager=decode-test", content_type="application/apply-patch+yaml")
    assert status == 400
    assert "cannot unmarshal bool into Go struct field ConfigMap.data" in body["message"]
    status, body, _ = api.send("PATCH", path, {"data": None, "binaryData": None},
                               content_type="application/merge-patch+json")
    assert status == 200 and "data" not in body, body


def test_field_validation_defaults_to_warn(api: Api, injected: str,
                                           cluster: ClusterRef) -> None:
    """Is a write without `fieldValidation` handled as Warn (unknown fields dropped, one
    Warning header each), Strict only when asked, as kube-apiserver does?"""
    configmaps = f"/api/v1/namespaces/{injected}/configmaps"
    document = {"metadata": {"name": "unknown"}, "data": {"a": "b"}, "foo": 1,
                "spec": {"bar": 2}}
    status, body, warnings = api.send("POST", configmaps, document)
    assert status == 201, body
    assert warnings == ['299 - "unknown field \\"foo\\""', '299 - "unknown field \\"spec\\""']
    assert "foo" not in body and "spec" not in body
    # a field name with control characters still gets its warning, as spaces (found by fuzzing:
    # the header was refused and the client saw a 500)
    status, body, warnings = api.send("POST", configmaps, {"metadata": {"name": "ctl"},
                                                           "a\r\nb\x01": 1})
    assert (status, warnings) == (201, ['299 - "unknown field \\"a  b \\""']), body
    status, body, _ = api.send("PUT", f"{configmaps}/unknown", document,
                               query="fieldValidation=Strict")
    assert (status, body["message"]) == (400, 'ConfigMap in version "v1" cannot be handled as '
                                         'a ConfigMap: strict decoding error: unknown field '
                                         '"foo", unknown field "spec"')
    result = cluster.kubectl("apply", "-n", injected, "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "strict"}, "foo": 1}))
    assert result.returncode != 0
    assert 'strict decoding error: unknown field "foo"' in result.stderr
