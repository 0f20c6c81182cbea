"""Do Gateway API Gateways and HTTPRoutes work in the embedded cluster with Istio as the
implementation, status included?

Two echo workloads (`echo-v1`, `echo-v2`, the generic echo twin, which reports the pod that
answered and the headers it got) run in a meshed namespace. A Gateway of class `istio` gets its
own deployment `<gateway>-istio` (a real Envoy) and LoadBalancer Service, as Istio's automated
deployment does; the test process sends requests to that Service's node port.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from conftest import Kubectl, poll
from mesh_support import MeshNamespace, http_get, mesh_namespace_fixture, node_port, yaml_stream

from labs.cluster import ClusterRef

HOST = "echo.example.com"
GATEWAY = "echo-gateway"


def _echo(version: str) -> str:
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo-{version}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: echo, version: {version}}}
  template:
    metadata:
      labels: {{app: echo, version: {version}}}
    spec:
      containers:
      - name: echo
        image: registry.example.com/echo:1
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: echo-{version}
spec:
  selector: {{app: echo, version: {version}}}
  ports:
  - name: http
    port: 80
    targetPort: 8080
---
"""


echo = mesh_namespace_fixture(prefix="gwapi", extra_yaml=_echo("v1") + _echo("v2"))


def gateway() -> dict[str, object]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": GATEWAY},
            "spec": {"gatewayClassName": "istio", "listeners": [
                {"name": "http", "port": 80, "protocol": "HTTP",
                 "allowedRoutes": {"namespaces": {"from": "Same"}}}]}}


def backend(name: str, weight: int | None = None) -> dict[str, object]:
    return {"name": name, "port": 80, **({} if weight is None else {"weight": weight})}


def http_route(name: str, *rules: dict[str, object], parent: str = GATEWAY) -> dict[str, object]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name},
            "spec": {"parentRefs": [{"name": parent}], "hostnames": [HOST],
                     "rules": list(rules)}}


ECHO_ROUTE = http_route(
    "echo",
    {"matches": [{"headers": [{"name": "x-version", "value": "v2"}]}],
     "filters": [{"type": "RequestHeaderModifier",
                  "requestHeaderModifier": {"set": [{"name": "x-added-by", "value": "gateway"}]}}],
     "backendRefs": [backend("echo-v2")]},
    {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
     "backendRefs": [backend("echo-v1", 80), backend("echo-v2", 20)]})


@pytest.fixture(scope="module")
def gateway_url(cluster: ClusterRef, echo: MeshNamespace) -> Iterator[str]:
    """The Gateway and the echo HTTPRoute applied, programmed, and its node-port URL."""
    echo.apply(yaml_stream(gateway(), ECHO_ROUTE))
    echo.kubectl("wait", "--for=condition=programmed", f"gateway/{GATEWAY}", "--timeout=60s",
                 timeout=90)
    url = f"http://127.0.0.1:{node_port(cluster, echo.name, f'{GATEWAY}-istio', 'http')}"
    poll(lambda: http_get(f"{url}/", {"Host": HOST})[0] == 200,
         "the echo route through the Gateway's own deployment", timeout=60)
    yield url


def _get_json(kubectl: Kubectl, *args: str) -> dict[str, object]:
    return json.loads(kubectl("get", *args, "-o", "json"))  # type: ignore[no-any-return]


def _conditions(entries: object) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in entries}  # type: ignore[attr-defined]


def test_gateway_class_istio_is_accepted(cluster: ClusterRef) -> None:
    cls = _get_json(Kubectl(cluster, "default"), "gatewayclass", "istio")
    assert cls["spec"]["controllerName"] == "istio.io/gateway-controller"  # type: ignore[index]
    accepted = cls["status"]["conditions"][0]  # type: ignore[index]
    assert (accepted["type"], accepted["status"], accepted["message"]) == (
        "Accepted", "True", "Handled by Istio controller")


def test_gateway_status_and_automated_deployment(echo: MeshNamespace, gateway_url: str) -> None:
    gw = _get_json(echo.kubectl, "gateway", GATEWAY)
    status: dict = gw["status"]  # type: ignore[assignment]
    assert _conditions(status["conditions"]) == {"Accepted": ("True", "Accepted"),
                                                 "Programmed": ("True", "Programmed")}
    assert status["addresses"] == [{"type": "IPAddress", "value": "127.0.0.1"}]
    listener = status["listeners"][0]
    assert listener["attachedRoutes"] == 1
    assert _conditions(listener["conditions"]) == {
        "Accepted": ("True", "Accepted"), "Conflicted": ("False", "NoConflicts"),
        "Programmed": ("True", "Programmed"), "ResolvedRefs": ("True", "ResolvedRefs")}
    route = _get_json(echo.kubectl, "httproute", "echo")
    parent = route["status"]["parents"][0]  # type: ignore[index]
    assert parent["controllerName"] == "istio.io/gateway-controller"
    assert _conditions(parent["conditions"]) == {"Accepted": ("True", "Accepted"),
                                                 "ResolvedRefs": ("True", "ResolvedRefs")}
    deployment = _get_json(echo.kubectl, "deployment", f"{GATEWAY}-istio")
    assert deployment["metadata"]["ownerReferences"][0]["name"] == GATEWAY  # type: ignore[index]


def _answer(url: str, headers: dict[str, str]) -> dict[str, object]:
    status, body = http_get(url, {"Host": HOST, **headers})
    assert status == 200, body
    return json.loads(body)  # type: ignore[no-any-return]


def test_header_match_and_request_header_modifier(gateway_url: str) -> None:
    answer = _answer(f"{gateway_url}/anything", {"x-version": "v2"})
    assert str(answer["hostname"]).startswith("echo-v2-")
    headers = {k.lower(): v for k, v in answer["headers"].items()}  # type: ignore[attr-defined]
    assert headers["x-added-by"] == "gateway"
    plain = _answer(f"{gateway_url}/anything", {})
    assert "x-added-by" not in {k.lower() for k in plain["headers"]}  # type: ignore[attr-defined]


def test_weighted_backend_refs_split_traffic(gateway_url: str) -> None:
    answers = [str(_answer(f"{gateway_url}/split", {})["hostname"]) for _ in range(200)]
    v2 = sum(1 for name in answers if name.startswith("echo-v2-")) / len(answers)
    assert all(name.startswith(("echo-v1-", "echo-v2-")) for name in answers)
    assert 0.08 <= v2 <= 0.35, f"echo-v2 got {v2:.0%} of the traffic, expected about 20%"


def test_missing_backend_and_missing_parent(echo: MeshNamespace, gateway_url: str) -> None:
    echo.apply(yaml_stream(
        http_route("missing-backend", {"matches": [{"path": {"type": "PathPrefix",
                                                             "value": "/missing"}}],
                                       "backendRefs": [backend("no-such-service")]}),
        http_route("missing-parent", {"backendRefs": [backend("echo-v1")]},
                   parent="no-such-gateway")))

    def parent_conditions(route: str) -> dict[str, tuple[str, str]]:
        status = _get_json(echo.kubectl, "httproute", route).get("status") or {}
        parents = status.get("parents") or []  # type: ignore[union-attr]
        return _conditions(parents[0]["conditions"]) if parents else {}

    conditions = poll(lambda: parent_conditions("missing-backend"),
                      "the status of HTTPRoute missing-backend", timeout=30)
    assert conditions == {"Accepted": ("True", "Accepted"),
                          "ResolvedRefs": ("False", "BackendNotFound")}
    poll(lambda: http_get(f"{gateway_url}/missing", {"Host": HOST})[0] == 500,
         "500 for the route whose backend does not exist", timeout=30)
    # Istio writes no `parents` entry for a parentRef to a Gateway that does not exist
    # (extractParentReferenceInfo only sees the Gateways it manages): `parents: []`.
    poll(lambda: (_get_json(echo.kubectl, "httproute", "missing-parent").get("status") or {}
                  ).get("parents") == [], "an empty status.parents on HTTPRoute missing-parent",
         timeout=30)
    gw = _get_json(echo.kubectl, "gateway", GATEWAY)
    assert gw["status"]["listeners"][0]["attachedRoutes"] == 2  # type: ignore[index]


def test_service_parent_is_reported_not_emulated(echo: MeshNamespace, gateway_url: str) -> None:
    route = http_route("mesh-route", {"backendRefs": [backend("echo-v2")]})
    route["spec"]["parentRefs"] = [{"group": "", "kind": "Service",  # type: ignore[index]
                                    "name": "echo-v1", "port": 80}]
    echo.apply(yaml_stream(route))

    def warning() -> str:
        return echo.kubectl("get", "events", "--field-selector",
                            "involvedObject.name=mesh-route,type=Warning",
                            "-o", "jsonpath={.items[*].message}")
    assert "GAMMA" in poll(warning, "a Warning event about the Service parent", timeout=30)
    # Linkerd's policy controller (also running in the embedded cluster) writes its own entry
    # for a Service parent; each controller owns the entries with its controllerName.
    parents = _get_json(echo.kubectl, "httproute", "mesh-route")["status"]["parents"]  # type: ignore[index]
    istio = [p for p in parents if p["controllerName"] == "istio.io/gateway-controller"]
    assert len(istio) == 1, parents
    assert _conditions(istio[0]["conditions"])["Accepted"] == ("False", "NotEmulated")


FEATURES_ROUTE = http_route(
    "features",
    {"matches": [{"path": {"type": "PathPrefix", "value": "/moved"}}],
     "filters": [{"type": "RequestRedirect", "requestRedirect": {
         "hostname": "www.example.com", "statusCode": 302}}]},
    {"matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
     "filters": [{"type": "RequestRedirect", "requestRedirect": {
         "statusCode": 301,
         "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"}}}]},
    {"matches": [{"path": {"type": "PathPrefix", "value": "/app"}}],
     "filters": [{"type": "URLRewrite", "urlRewrite": {
         "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2"}}}],
     "backendRefs": [backend("echo-v1")]},
    {"matches": [{"queryParams": [{"name": "version", "value": "v2"}]}],
     "backendRefs": [backend("echo-v2")]})


def _no_redirect_get(url: str) -> tuple[int, str]:
    """(status, Location) of one GET, without following a redirect."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        conn.request("GET", parts.path, headers={"Host": HOST})
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("Location") or ""
    finally:
        conn.close()


@pytest.fixture(scope="module")
def features_url(echo: MeshNamespace, gateway_url: str) -> str:
    """The gateway with a second HTTPRoute (redirects, a rewrite, a query match) merged in."""
    echo.apply(yaml_stream(FEATURES_ROUTE))
    poll(lambda: _no_redirect_get(f"{gateway_url}/moved")[0] == 302,
         "the features HTTPRoute programmed", timeout=30)
    return gateway_url


def test_request_redirect(features_url: str) -> None:
    assert _no_redirect_get(f"{features_url}/moved/here") == (
        302, "http://www.example.com/moved/here")
    # ReplacePrefixMatch: only whole path segments match (/older is not /old)
    assert _no_redirect_get(f"{features_url}/old/page") == (301, f"http://{HOST}/new/page")
    assert _no_redirect_get(f"{features_url}/older")[0] == 200


def test_url_rewrite_is_the_path_the_backend_sees(features_url: str) -> None:
    answer = _answer(f"{features_url}/app/items", {})
    assert (answer["path"], str(answer["hostname"])[:8]) == ("/v2/items", "echo-v1-")


def test_query_param_match(features_url: str) -> None:
    chosen = {str(_answer(f"{features_url}/anything?version=v2", {})["hostname"])[:8]
              for _ in range(20)}
    assert chosen == {"echo-v2-"}
    other = {str(_answer(f"{features_url}/anything?version=v1", {})["hostname"])[:8]
             for _ in range(40)}
    assert "echo-v1-" in other, "without the query parameter the 80/20 split applies"
