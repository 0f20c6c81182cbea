"""Fuzzing the embedded API server over HTTPS: whatever a client sends, the answer is never a 5xx,
and every error is a `Status` with a message a learner can read.

Bounded and reproducible (derandomized hypothesis, a fixed number of examples per test) against
the session cluster; the requests stay inside one namespace, except read-only GETs of random
paths, so the rest of the session is not disturbed.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import requests
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labs.cluster import ClusterRef

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
REQUEST_TIMEOUT_S = 15

# Words a Kubernetes client would use, so random documents hit real code paths. "replicas" is
# left out on purpose: a fuzzed `spec.replicas: 10**9` would make the cluster start that many pods.
WORDS = ["apiVersion", "kind", "metadata", "name", "namespace", "labels", "annotations", "uid",
         "resourceVersion", "generation", "finalizers", "ownerReferences", "deletionTimestamp",
         "generateName", "spec", "status", "data", "binaryData", "stringData", "type", "template",
         "selector", "matchLabels", "matchExpressions", "containers", "name", "image", "ports",
         "containerPort", "port", "targetPort", "protocol", "env", "value", "hosts", "http",
         "route", "destination", "host", "subset", "weight", "clusterIP", "conditions",
         "strategy", "managedFields", "items", "0", "-", "~0", "~1", ""]
KINDS = ["ConfigMap", "Service", "Secret", "Pod", "Deployment", "VirtualService", "Namespace",
         "CustomResourceDefinition", "Status", "List", "Table", ""]
API_VERSIONS = ["v1", "apps/v1", "networking.istio.io/v1", "apiextensions.k8s.io/v1",
                "networking.istio.io/v1alpha3", "v2", "", "/"]
CONTENT_TYPES = ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf",
                 "application/merge-patch+json", "application/json-patch+json",
                 "application/strategic-merge-patch+json", "application/apply-patch+yaml",
                 "text/plain", "application/json; charset=utf-8", "", "multipart/form-data"]
SEGMENTS = ["api", "apis", "v1", "v2", "apps", "networking.istio.io", "namespaces", "pods",
            "configmaps", "services", "deployments", "replicasets", "virtualservices", "status",
            "scale", "log", "exec", "finalize", "default", "kube-system", "seed", "..", ".", "%2F",
            "apiextensions.k8s.io", "customresourcedefinitions", "openapi", "watch", "proxy",
            "x" * 300]
QUERY_KEYS = ["labelSelector", "fieldSelector", "limit", "continue", "resourceVersion",
              "resourceVersionMatch", "timeoutSeconds", "includeObject", "pretty", "dryRun",
              "fieldValidation", "fieldManager", "force", "propagationPolicy",
              "gracePeriodSeconds", "allowWatchBookmarks", "container", "tailLines"]

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats() | st.text(max_size=20) | st.sampled_from(WORDS + KINDS))
keys = st.sampled_from(WORDS) | st.text(max_size=10)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=25)
names = st.sampled_from(["seed", "fuzzed", "a", "", "UPPER", "a" * 300, "../x", "ns/x"]) | st.text(
    max_size=12)
k8s_objects = st.fixed_dictionaries(
    {},
    optional={"apiVersion": st.sampled_from(API_VERSIONS) | st.text(max_size=8),
              "kind": st.sampled_from(KINDS),
              "metadata": st.fixed_dictionaries({}, optional={
                  "name": names, "namespace": names, "generateName": names,
                  "labels": st.dictionaries(keys, scalars, max_size=3),
                  "resourceVersion": st.sampled_from(["1", "0", "999999999", "x", ""]),
                  "finalizers": st.lists(st.text(max_size=10), max_size=2),
                  "ownerReferences": json_values}) | json_values,
              "spec": json_values, "data": json_values, "status": json_values,
              "stringData": json_values, "type": scalars})


def _dump(value: Any) -> bytes:
    return json.dumps(value).encode()  # NaN and Infinity stay in: not JSON, must be refused


SEED_OBJECTS: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "seed", "labels": {"a": "b"}},
     "data": {"k": "v"}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "seed"},
     "spec": {"selector": {"app": "seed"}, "ports": [{"name": "http", "port": 80}]}},
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "seed"},
     "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "seed"}},
              "template": {"metadata": {"labels": {"app": "seed"}}, "spec": {"containers": [
                  {"name": "web", "image": "docker.io/example/web:1.0",
                   "ports": [{"containerPort": 8080}], "env": [{"name": "A", "value": "1"}]}]}}}},
    {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "seed"},
     "spec": {"hosts": ["seed"], "http": [{"route": [{"destination": {"host": "seed"}}]}]}},
]


dns_names = st.from_regex(r"[a-z]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
SAFE_REPLICAS = st.sampled_from([0, -1, "1", None, 0.5, True])


def variants(value: Any, key: str = "") -> st.SearchStrategy[Any]:
    """Documents shaped like `value` (a valid object), mostly kept, with some parts replaced,
    dropped or added: close enough to valid to reach validation, defaulting and controllers."""
    if key == "replicas":
        return SAFE_REPLICAS
    if isinstance(value, dict):
        fields = {k: variants(v, k) for k, v in value.items()}
        extra = st.dictionaries(keys.filter(lambda k: k != "replicas"), json_values, max_size=2)
        some = st.tuples(st.fixed_dictionaries({}, optional=fields), extra).map(
            lambda pair: {**pair[1], **pair[0]})
        shapes = [json_values, some, st.fixed_dictionaries(fields)]
    elif isinstance(value, list):
        item = variants(value[0]) if value else json_values
        shapes = [json_values, st.lists(item, max_size=3), st.lists(item, min_size=1,
                                                                    max_size=2)]
    else:
        kept = dns_names if key == "name" else st.just(value)  # new names: creates succeed
        shapes = [scalars, st.just(value), kept]
    return st.sampled_from([0, 1, 2, 2, 2, 2]).flatmap(lambda n: shapes[n])


shaped = st.sampled_from(range(len(SEED_OBJECTS))).flatmap(lambda i: variants(SEED_OBJECTS[i]))
documents = shaped | k8s_objects | json_values
bodies = (documents.map(_dump)
          | documents.map(lambda v: yaml.safe_dump(v).encode())
          | st.binary(max_size=300)
          | st.text(max_size=100).map(str.encode))
pointers = st.lists(st.sampled_from(WORDS) | st.integers(-1, 3).map(str) | st.text(max_size=5),
                    max_size=5).map(lambda parts: "".join(f"/{p}" for p in parts))
json_patches = st.lists(
    st.fixed_dictionaries(
        {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "bogus"])},
        optional={"path": pointers | scalars, "from": pointers, "value": json_values}),
    max_size=4) | json_values
directives = st.fixed_dictionaries({}, optional={
    "$patch": st.sampled_from(["replace", "delete", "merge", "bogus"]) | scalars,
    "$retainKeys": st.lists(keys, max_size=3) | scalars,
    "$setElementOrder/containers": json_values,
    "$deleteFromPrimitiveList/finalizers": json_values,
    "$setElementOrder/ports": json_values})
strategic_patches = shaped | st.recursive(
    directives | json_values,
    lambda inner: st.dictionaries(keys, inner, max_size=4).flatmap(
        lambda d: directives.map(lambda extra: {**d, **extra})),
    max_leaves=15)


@dataclass
class Target:
    """The fuzzed namespace and an authenticated HTTPS session to the cluster."""

    session: requests.Session
    server: str
    namespace: str
    cluster: ClusterRef

    def request(self, method: str, path: str, *, query: str = "", body: bytes | None = None,
                content_type: str | None = None, accept: str | None = None,
                stream: bool = False) -> None:
        """Send one request and check the answer; a successful stream (a watch) is only checked
        for its status, then closed."""
        headers = {}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if accept is not None:
            headers["Accept"] = accept
        url = f"{self.server}{path}" + (f"?{query}" if query else "")
        with self.session.request(method, url, data=body, headers=headers,
                                  timeout=REQUEST_TIMEOUT_S, stream=stream) as response:
            if stream and response.status_code < 400:
                assert response.status_code == 200, f"GET {path}?{query}: {response.status_code}"
                return
            check(response, f"{method} {path}?{query} ({content_type}, {body!r:.300})")

    def collections(self) -> list[str]:
        ns = f"namespaces/{self.namespace}"
        return [f"/api/v1/{ns}/configmaps", f"/api/v1/{ns}/services", f"/api/v1/{ns}/secrets",
                f"/api/v1/{ns}/pods", f"/api/v1/{ns}/events", f"/api/v1/{ns}/serviceaccounts",
                f"/api/v1/{ns}/endpoints", f"/apis/apps/v1/{ns}/deployments",
                f"/apis/apps/v1/{ns}/replicasets",
                f"/apis/networking.istio.io/v1/{ns}/virtualservices",
                f"/apis/networking.istio.io/v1/{ns}/destinationrules",
                f"/apis/security.istio.io/v1/{ns}/authorizationpolicies",
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"]

    def seeds(self) -> list[str]:
        """The objects the patch fuzzing works on (recreated by `reseed` when a fuzzed request
        removed or broke one)."""
        ns = f"namespaces/{self.namespace}"
        return [f"/api/v1/{ns}/configmaps/seed", f"/api/v1/{ns}/services/seed",
                f"/apis/apps/v1/{ns}/deployments/seed",
                f"/apis/networking.istio.io/v1/{ns}/virtualservices/seed"]

    def reseed(self) -> None:
        for path, obj in zip(self.seeds(), SEED_OBJECTS, strict=True):
            got = self.session.get(f"{self.server}{path}", timeout=REQUEST_TIMEOUT_S)
            if got.status_code == 404:
                collection = path.rsplit("/", 1)[0]
                created = self.session.post(f"{self.server}{collection}", json=obj,
                                            timeout=REQUEST_TIMEOUT_S)
                assert created.status_code == 201, created.text




def check(response: requests.Response, what: str) -> None:
    """Never a server error; an error is a Status with a non-empty message."""
    assert response.status_code < 500, f"{what} -> {response.status_code}: {response.text:.800}"
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            pytest.fail(f"{what} -> {response.status_code} with a non-JSON body: "
                        f"{response.text:.300}")
        assert isinstance(body, dict) and body.get("kind") == "Status", f"{what} -> {body}"
        assert body.get("code") == response.status_code, f"{what} -> {body}"
        assert isinstance(body.get("message"), str) and body["message"].strip(), (
            f"{what} -> {body}")


@pytest.fixture(scope="module")
def target(cluster: ClusterRef, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    server = config["clusters"][0]["cluster"]["server"]
    token = config["users"][0]["user"]["token"]
    ca_file = tmp_path_factory.mktemp("fuzz") / "ca.crt"
    ca_file.write_bytes(base64.b64decode(
        config["clusters"][0]["cluster"]["certificate-authority-data"]))
    name = f"fuzz-{uuid.uuid4().hex[:6]}"
    assert cluster.kubectl("create", "namespace", name).returncode == 0
    with requests.Session() as session:
        session.trust_env = False  # loopback only: no proxies, no REQUESTS_CA_BUNDLE override
        session.verify = str(ca_file)
        session.headers["Authorization"] = f"Bearer {token}"
        fuzz = Target(session, server, name, cluster)
        fuzz.reseed()
        yield fuzz
    cluster.kubectl("delete", "namespace", name, "--wait=false")


queries = st.lists(st.tuples(st.sampled_from(QUERY_KEYS) | st.text(max_size=6),
                             st.sampled_from(["", "0", "1", "-1", "All", "true", "x=y", "a in (b",
                                              "metadata.name=seed", "9" * 30])
                             | st.text(max_size=15)),
                   max_size=4).map(lambda pairs: urlencode(pairs))


@FUZZ
@given(data=st.data(), method=st.sampled_from(["POST", "PUT"]), body=bodies,
       content_type=st.sampled_from(CONTENT_TYPES), query=queries)
def test_random_bodies(target: Target, data: st.DataObject, method: str, body: bytes,
                       content_type: str, query: str) -> None:
    """Are random JSON/YAML/garbage bodies POSTed or PUT to resource URLs answered without a
    server error?"""
    collection = data.draw(st.sampled_from(target.collections()))
    if method == "POST" and data.draw(st.booleans()):
        # a near-valid object of the collection's own kind, sent as JSON with no query, so
        # most get past decoding (no Deployments: each would start pods)
        seed = data.draw(st.sampled_from([0, 1, 3]))
        collection = target.seeds()[seed].rsplit("/", 1)[0]
        body, content_type, query = (_dump(data.draw(variants(SEED_OBJECTS[seed]))),
                                     "application/json", "")
    if method == "PUT":
        name = data.draw(st.sampled_from(["seed", "fuzzed"]) | names.filter(bool))
        sub = data.draw(st.sampled_from(["", "/status", "/scale"]))
        path = f"{collection}/{quote(name, safe='')}{sub}"
    else:
        path = collection
    target.request(method, path, query=query, body=body, content_type=content_type)


@FUZZ
@given(segments=st.lists(st.sampled_from(SEGMENTS) | st.text(max_size=10), max_size=7),
       root=st.sampled_from(["/api", "/apis"]), query=queries,
       accept=st.sampled_from([None, "application/json;as=Table;v=v1;g=meta.k8s.io",
                               "application/vnd.kubernetes.protobuf", "*/*", "text/html"]))
def test_random_paths(target: Target, segments: list[str], root: str, query: str,
                      accept: str | None) -> None:
    """Are GETs of random paths under /api and /apis, with random query strings, answered
    without a server error?"""
    path = root + "".join(f"/{quote(s, safe='%')}" for s in segments)
    if "watch" in query or "follow" in query:
        return  # streams by design; their parameters are fuzzed in test_random_list_queries
    target.request("GET", path, query=query, accept=accept)


@FUZZ
@given(data=st.data(), query=queries,
       accept=st.sampled_from([None, "application/json;as=Table;v=v1;g=meta.k8s.io"]))
def test_random_list_queries(target: Target, data: st.DataObject, query: str,
                             accept: str | None) -> None:
    """Do list and short watch requests with random selectors, limits, continue tokens and
    resource versions answer without a server error?"""
    collection = data.draw(st.sampled_from(target.collections()))
    watching = data.draw(st.booleans())
    if watching:
        query = f"{query}&watch=true&timeoutSeconds=1" if query else "watch=true&timeoutSeconds=1"
    target.request("GET", collection, query=query, accept=accept, stream=watching)


@FUZZ
@given(data=st.data(), kind=st.sampled_from(["json", "merge", "strategic", "apply"]))
def test_random_patches(target: Target, data: st.DataObject, kind: str) -> None:
    """Are random JSON, merge, strategic-merge and apply patches of existing objects answered
    without a server error?"""
    target.reseed()
    path = data.draw(st.sampled_from(target.seeds()))
    query = data.draw(st.sampled_from(["", "dryRun=All", "fieldValidation=Warn",
                                       "fieldValidation=Ignore"]))
    if kind == "json":
        body, ctype = _dump(data.draw(json_patches)), "application/json-patch+json"
    elif kind == "merge":
        body, ctype = _dump(data.draw(documents)), "application/merge-patch+json"
    elif kind == "strategic":
        body, ctype = _dump(data.draw(strategic_patches)), "application/strategic-merge-patch+json"
    else:
        document = data.draw(documents)
        body, ctype = yaml.safe_dump(document).encode(), "application/apply-patch+yaml"
        manager = data.draw(st.sampled_from(["fuzz", "kubectl", ""]))
        force = data.draw(st.booleans())
        query = "&".join(q for q in (query, f"fieldManager={manager}" if manager else "",
                                     "force=true" if force else "") if q)
    sub = data.draw(st.sampled_from(["", "", "", "/status", "/scale"]))
    target.request("PATCH", path + sub, query=query, body=body, content_type=ctype)


def test_cluster_healthy_after_fuzzing(target: Target) -> None:
    """After all that, is the API server still ready, and does kubectl still list namespaces
    and read the fuzzed objects?"""
    ready = target.session.get(f"{target.server}/readyz", timeout=REQUEST_TIMEOUT_S)
    assert (ready.status_code, ready.text) == (200, "ok")
    result = target.cluster.kubectl("get", "ns", target.namespace, "default", "-o", "name")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [f"namespace/{target.namespace}", "namespace/default"]
    result = target.cluster.kubectl("get", "all,cm,vs", "-n", target.namespace, "-o", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["kind"] == "List"
