"""Does AuthorizationPolicy `action: CUSTOM` work like Istio's: an ext-authz provider declared in
the mesh config (ConfigMap istio-system/istio), only requests matched by the CUSTOM rules sent to
the external authorizer, CUSTOM checked before DENY and ALLOW, and an unknown provider rejected
with a status condition, a warning event and every request denied?

The generated filters are compared with istiod's (its testdata `custom-http-provider-out*`), a
gRPC provider is checked by a real Envoy (`--mode validate`), and the rest runs real traffic:
httpbin, curl and Istio's sample ext-authz server (its twin) in one injected namespace, plus an
ext-authz server on 127.0.0.1 started here.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from conftest import poll
from mesh_support import MeshNamespace, mesh_namespace_fixture, yaml_stream
from test_mesh_authorization import authorization_policy, expect

from labs.cluster import ClusterRef
from labs.embedded.apps.extauthz import DENY_BODY, ExtAuthzHandler
from labs.embedded.mesh.envoy import envoy_binary
from labs.embedded.mesh.istio.meshconfig import DEFAULT_MESH
from labs.embedded.mesh.istio.state import MeshState
from labs.embedded.mesh.istio.xds.ext_authz import build_ext_authz, custom_warnings
from labs.embedded.mesh.kube_state import Obj

HTTPBIN = "http://httpbin:8000"
POLICY_KINDS = "authorizationpolicies.security.istio.io"
ALLOW_HEADER = ("-H", "x-ext-authz: allow")

meshed = mesh_namespace_fixture("httpbin", "curl", "ext-authz", prefix="extauthz")


def mesh_configmap(providers: list[Obj]) -> str:
    """ConfigMap istio-system/istio: Istio's default mesh config plus `providers`."""
    mesh = {**yaml.safe_load(DEFAULT_MESH), "extensionProviders": providers}
    return yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "istio", "namespace": "istio-system"},
                           "data": {"mesh": yaml.safe_dump(mesh)}})


@pytest.fixture(scope="module")
def set_providers(cluster: ClusterRef) -> Iterator[Callable[[list[Obj]], None]]:
    """Replace the mesh config's extensionProviders; restore the mesh config afterwards."""
    def get() -> str:
        result = cluster.kubectl("-n", "istio-system", "get", "configmap", "istio", "-o", "json")
        return result.stdout if result.returncode == 0 else ""
    original = poll(get, "ConfigMap istio-system/istio (created by the mesh)", 30)

    def apply(providers: list[Obj]) -> None:
        result = cluster.kubectl("apply", "-f", "-", input=mesh_configmap(providers))
        assert result.returncode == 0, result.stderr
    yield apply
    restored = json.loads(original)
    restored["metadata"] = {"name": "istio", "namespace": "istio-system"}
    cluster.kubectl("replace", "-f", "-", input=json.dumps(restored))


@pytest.fixture
def reset_policies(meshed: MeshNamespace) -> Iterator[None]:
    meshed.kubectl("delete", POLICY_KINDS, "--all", "--ignore-not-found", "--wait=false")
    yield
    meshed.kubectl("delete", POLICY_KINDS, "--all", "--ignore-not-found", "--wait=false")


def http_provider(name: str, service: str, port: int, **extra: Any) -> Obj:
    return {"name": name, "envoyExtAuthzHttp": {"service": service, "port": port, **extra}}


def custom_policy(name: str, provider: str, paths: list[str]) -> Obj:
    return authorization_policy(name, action="CUSTOM", provider={"name": provider},
                                rules=[{"to": [{"operation": {"paths": paths}}]}])


# --- the filters, against istiod's ----------------------------------------------------------

def pod() -> Obj:
    return {"metadata": {"name": "httpbin-1", "namespace": "foo", "uid": "u",
                         "labels": {"app": "httpbin"}}, "spec": {}}


def ext_authz_service() -> Obj:
    return {"kind": "Service", "metadata": {"name": "my-custom-ext-authz", "namespace": "foo"},
            "spec": {"ports": [{"name": "http", "port": 9000}]}}


def test_filters_match_istiod_testdata() -> None:
    """Is the HTTP provider programmed field for field as istiod's custom-http-provider-out*?"""
    provider = http_provider(
        "default", "foo/my-custom-ext-authz.foo.svc.cluster.local", 9000, pathPrefix="/check",
        timeout="10s", failOpen=True, statusOnError="403",
        includeRequestHeadersInCheck=["x-custom-id", "x-prefix-*", "*-suffix"],
        includeAdditionalHeadersInCheck={"x-header-2": "value-2", "x-header-1": "value-1"},
        headersToUpstreamOnAllow=["Authorization"], headersToDownstreamOnDeny=["Set-cookie"],
        includeRequestBodyInCheck={"maxRequestBytes": 2048, "allowPartialMessage": True,
                                   "packAsBytes": True})
    policies = [{**custom_policy(n, "default", [f"/{n}"]),
                 "metadata": {"name": n, "namespace": "foo"}} for n in ("httpbin-1", "httpbin-2")]
    state = MeshState(authorization_policies=policies, services=[ext_authz_service()],
                      mesh_config={"extensionProviders": [provider]})
    (shadow, ext_authz), clusters = build_ext_authz(state, pod())
    assert clusters == []  # the Service's own outbound cluster is used
    rules = shadow["typed_config"]["shadow_rules"]
    assert rules["action"] == "DENY"
    assert sorted(rules["policies"]) == ["istio-ext-authz-ns[foo]-policy[httpbin-1]-rule[0]",
                                         "istio-ext-authz-ns[foo]-policy[httpbin-2]-rule[0]"]
    assert shadow["typed_config"]["shadow_rules_stat_prefix"] == "istio_ext_authz_"
    config = ext_authz["typed_config"]
    assert config["filter_enabled_metadata"] == {
        "filter": "envoy.filters.http.rbac",
        "path": [{"key": "istio_ext_authz_shadow_effective_policy_id"}],
        "value": {"string_match": {"prefix": "istio-ext-authz"}}}
    assert (config["failure_mode_allow"], config["status_on_error"]) == (True, {"code": 403})
    service = config["http_service"]
    assert service["server_uri"] == {
        "uri": "http://my-custom-ext-authz.foo.svc.cluster.local",
        "cluster": "outbound|9000||my-custom-ext-authz.foo.svc.cluster.local", "timeout": "10s"}
    assert service["path_prefix"] == "/check"
    assert service["authorization_request"]["headers_to_add"] == [
        {"key": "x-header-1", "value": "value-1"}, {"key": "x-header-2", "value": "value-2"}]
    assert config["allowed_headers"]["patterns"] == [
        {"exact": "x-custom-id", "ignore_case": True},
        {"prefix": "x-prefix-", "ignore_case": True}, {"suffix": "-suffix", "ignore_case": True}]
    assert service["authorization_response"] == {
        "allowed_upstream_headers": {"patterns": [{"exact": "Authorization",
                                                   "ignore_case": True}]},
        "allowed_client_headers": {"patterns": [{"exact": "Set-cookie", "ignore_case": True}]}}
    assert config["with_request_body"] == {"max_request_bytes": 2048,
                                           "allow_partial_message": True, "pack_as_bytes": True}


def test_bad_provider_denies_all_and_is_reported() -> None:
    """Does a CUSTOM policy naming an undeclared provider deny everything, as istiod's
    default-deny-all-due-to-bad-CUSTOM-action, and say how to fix it?"""
    policy = {**custom_policy("ext", "nope", ["/x"]),
              "metadata": {"name": "ext", "namespace": "foo"}}
    state = MeshState(authorization_policies=[policy],
                      mesh_config={"extensionProviders": [http_provider("p", "127.0.0.1", 1)]})
    [deny], _ = build_ext_authz(state, pod())
    assert deny["typed_config"]["rules"] == {"action": "DENY", "policies": {
        "default-deny-all-due-to-bad-CUSTOM-action": {"permissions": [{"any": True}],
                                                      "principals": [{"any": True}]}}}
    [(obj, message)] = custom_warnings(state)
    assert obj is policy
    assert "'nope' is not declared in the mesh config (declared: p)" in message
    assert "kubectl edit configmap istio -n istio-system" in message


def test_grpc_provider_is_valid_envoy_config(tmp_path: Path) -> None:
    """Does Envoy accept the gRPC provider's filter and its HTTP/2 loopback cluster?"""
    policy = {**custom_policy("ext", "grpc", ["/x"]),
              "metadata": {"name": "ext", "namespace": "foo"}}
    state = MeshState(authorization_policies=[policy], mesh_config={"extensionProviders": [
        {"name": "grpc", "envoyExtAuthzGrpc": {"service": "127.0.0.1", "port": 9000,
                                               "timeout": "0.5s"}}]})
    filters, clusters = build_ext_authz(state, pod())
    grpc = filters[1]["typed_config"]["grpc_service"]
    assert grpc == {"envoy_grpc": {"cluster_name": "outbound|9000||127.0.0.1",
                                   "authority": "outbound_.9000_._.127.0.0.1"},
                    "timeout": "0.5s"}
    router = {"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
    hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
                 ".v3.HttpConnectionManager", "stat_prefix": "inbound",
        "http_filters": [*filters, router], "route_config": {"virtual_hosts": []}}}
    config = {"static_resources": {"clusters": clusters, "listeners": [{
        "name": "in", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
        "filter_chains": [{"filters": [hcm]}]}]}}
    (tmp_path / "envoy.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run([str(envoy_binary()), "--mode", "validate", "-c",
                             str(tmp_path / "envoy.yaml"), "--disable-hot-restart"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# --- real traffic -----------------------------------------------------------------------------

pytestmark_traffic = pytest.mark.usefixtures("reset_policies")


@pytestmark_traffic
def test_custom_with_the_sample_ext_authz_service(meshed: MeshNamespace,
                                                  set_providers: Callable[[list[Obj]], None]
                                                  ) -> None:
    """Istio's task: only the CUSTOM rules' paths go to ext-authz, which allows requests with
    `x-ext-authz: allow`; its headers reach the app on allow and the client on deny."""
    set_providers([http_provider(
        "sample-ext-authz-http", f"ext-authz.{meshed.name}.svc.cluster.local", 8000,
        includeRequestHeadersInCheck=["x-ext-authz"],
        headersToUpstreamOnAllow=["x-ext-authz-check-result"],
        headersToDownstreamOnDeny=["x-ext-authz-check-result"])])
    meshed.apply(yaml_stream(custom_policy("ext-authz", "sample-ext-authz-http", ["/headers"])))
    expect(meshed, [("curl", "/headers", (), 403), ("curl", "/headers", ALLOW_HEADER, 200),
                    ("curl", "/get", (), 200)],
           "/headers to need `x-ext-authz: allow`, /get to skip the ext-authz check")
    code, body = meshed.curl(f"{HTTPBIN}/headers", "-i")
    assert code == 403 and DENY_BODY in body
    assert "x-ext-authz-check-result: denied" in body.lower()
    code, body = meshed.curl(f"{HTTPBIN}/headers", *ALLOW_HEADER)
    headers = {k.lower(): v for k, v in json.loads(body)["headers"].items()}
    assert headers["x-ext-authz-check-result"] == ["allowed"]


@pytestmark_traffic
def test_custom_then_deny_then_allow(meshed: MeshNamespace,
                                     set_providers: Callable[[list[Obj]], None]) -> None:
    """Is CUSTOM checked before DENY, and DENY before ALLOW?"""
    set_providers([http_provider("sample", f"{meshed.name}/ext-authz.{meshed.name}.svc."
                                 "cluster.local", 8000,
                                 includeRequestHeadersInCheck=["x-ext-authz"])])
    meshed.apply(yaml_stream(
        custom_policy("ext-authz", "sample", ["/status/*", "/headers"]),
        authorization_policy("no-teapots", action="DENY",
                             rules=[{"to": [{"operation": {"paths": ["/status/418"]}}]}]),
        authorization_policy("allow-some", rules=[
            {"to": [{"operation": {"paths": ["/status/*", "/headers"]}}]}])))
    expect(meshed, [
        ("curl", "/headers", ALLOW_HEADER, 200),  # CUSTOM allows, no DENY, ALLOW matches
        ("curl", "/status/418", ALLOW_HEADER, 403),  # CUSTOM allows, DENY denies
        ("curl", "/get", (), 403),  # no CUSTOM rule, no ALLOW rule
    ], "CUSTOM, then DENY, then ALLOW")
    code, body = meshed.curl(f"{HTTPBIN}/status/418")
    assert (code, body) == (403, DENY_BODY)  # ext-authz answered before the DENY policy
    code, body = meshed.curl(f"{HTTPBIN}/status/418", *ALLOW_HEADER)
    assert (code, body) == (403, "RBAC: access denied")


class RecordingExtAuthz(ExtAuthzHandler):
    seen: ClassVar[list[str]] = []

    def _check(self) -> None:
        self.seen.append(self.path)
        super()._check()

    do_GET = do_POST = _check


@pytest.fixture
def loopback_ext_authz() -> Iterator[tuple[int, list[str]]]:
    RecordingExtAuthz.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), RecordingExtAuthz)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1], RecordingExtAuthz.seen
    finally:
        server.shutdown()
        server.server_close()


@pytestmark_traffic
def test_provider_on_loopback(meshed: MeshNamespace,
                              set_providers: Callable[[list[Obj]], None],
                              loopback_ext_authz: tuple[int, list[str]]) -> None:
    """Does a provider on 127.0.0.1 get the checks, under its pathPrefix?"""
    port, seen = loopback_ext_authz
    set_providers([http_provider("local", "127.0.0.1", port, pathPrefix="/check",
                                 includeRequestHeadersInCheck=["x-ext-authz"])])
    meshed.apply(yaml_stream(custom_policy("local-authz", "local", ["/anything/*"])))
    expect(meshed, [("curl", "/anything/x", (), 403), ("curl", "/anything/y", ALLOW_HEADER, 200),
                    ("curl", "/get", (), 200)], "checks by the loopback ext-authz server")
    assert "/check/anything/y" in seen and not any("/get" in p for p in seen)


@pytestmark_traffic
def test_unknown_provider_is_rejected(meshed: MeshNamespace,
                                      set_providers: Callable[[list[Obj]], None]) -> None:
    """Does a CUSTOM policy naming no declared provider get NotApplied, a Warning event, and
    deny every request to the workload, as Istio does?"""
    set_providers([])
    meshed.apply(yaml_stream(custom_policy("typo", "sample-ext-authz-htp", ["/headers"])))

    def condition() -> dict[str, Any] | None:
        obj = json.loads(meshed.kubectl("get", "authorizationpolicy", "typo", "-o", "json"))
        return next((c for c in (obj.get("status") or {}).get("conditions") or []
                     if c["type"] == "Reconciled"), None)
    found = poll(condition, "a Reconciled condition on the CUSTOM policy", 15)
    assert found["status"] == "False" and found["reason"] == "NotApplied"
    assert "'sample-ext-authz-htp' is not declared" in found["message"]
    events = meshed.kubectl("get", "events", "--field-selector",
                            "involvedObject.name=typo,type=Warning", "-o", "json")
    assert any("sample-ext-authz-htp" in e["message"] for e in json.loads(events)["items"])
    expect(meshed, [("curl", "/get", (), 403)], "every request to be denied")
