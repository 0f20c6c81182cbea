"""AuthorizationPolicy → RBAC and RequestAuthentication → jwt_authn: the generated filters, then
the same filters in a real Envoy in front of an echo server (plaintext; peer identities are
covered end to end in test_mesh_authorization.py)."""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml

from labs.embedded.loopback import free_port
from labs.embedded.mesh.envoy import envoy_binary
from labs.embedded.mesh.istio.state import MeshState
from labs.embedded.mesh.istio.xds.authorization import (
    authz_unsupported_fields,
    build_rbac_filters,
    selected,
)
from labs.embedded.mesh.istio.xds.jwt import build_jwt_filter, ra_unsupported_fields
from labs.embedded.mesh.kube_state import Obj
from labs.tokens import Signer

__all__ = ["ISSUER", "Signer"]  # other test modules import these from here

ISSUER = "https://issuer.meshlab.test"


# --- objects ---------------------------------------------------------------------------------

def policy(name: str, namespace: str = "default", **spec: Any) -> Obj:
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def request_authentication(name: str, namespace: str = "default", **spec: Any) -> Obj:
    return {"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def pod(name: str = "httpbin", namespace: str = "default", labels: dict | None = None,
        host_port: int = 18000) -> Obj:
    return {"metadata": {"name": name, "namespace": namespace, "uid": name,
                         "labels": labels or {"app": name},
                         "annotations": {"meshlab.dev/host-ports": json.dumps(
                             {"8000": host_port})}},
            "spec": {"containers": [{"name": "httpbin"}, {"name": "istio-proxy"}]}}


def rules_of(filters: list[Obj]) -> list[tuple[str, list[str]]]:
    return [(f["typed_config"]["rules"]["action"], sorted(f["typed_config"]["rules"]["policies"]))
            for f in filters]


# --- unit tests ------------------------------------------------------------------------------

def test_selection_mesh_namespace_and_workload() -> None:
    mesh_wide = policy("mesh", "istio-system")
    root_selector = policy("root-sel", "istio-system", selector={"matchLabels": {"app": "x"}})
    spaced = policy("ns", "default")
    other_ns = policy("other", "other")
    workload = policy("wl", "default", selector={"matchLabels": {"app": "httpbin"}})
    unmatched = policy("nope", "default", selector={"matchLabels": {"app": "reviews"}})
    state = MeshState(authorization_policies=[
        mesh_wide, root_selector, spaced, other_ns, workload, unmatched])
    names = [p["metadata"]["name"] for p in selected(state.authorization_policies, state, pod())]
    assert names == ["ns", "wl", "mesh"]
    names = [p["metadata"]["name"] for p in selected(
        state.authorization_policies, state, pod("x", "elsewhere", {"app": "x"}))]
    assert names == ["mesh", "root-sel"]


def test_allow_nothing_denies_everything_and_no_policy_has_no_filter() -> None:
    assert build_rbac_filters(MeshState(), pod()) == []
    filters = build_rbac_filters(MeshState(authorization_policies=[policy("allow-nothing")]),
                                 pod())
    assert rules_of(filters) == [("ALLOW", [])]
    assert filters[0]["name"] == "envoy.filters.http.rbac"


def test_deny_before_allow_audit_ignored_and_custom_apart() -> None:
    """CUSTOM policies are the ext_authz filters' (test_mesh_ext_authz.py), not these RBAC
    filters; they are no longer reported as not emulated."""
    state = MeshState(authorization_policies=[
        policy("allow", rules=[{}]),
        policy("deny", action="DENY", rules=[{"to": [{"operation": {"methods": ["DELETE"]}}]}]),
        policy("audit", action="AUDIT", rules=[{}]),
        policy("custom", action="CUSTOM", rules=[{}])])
    assert rules_of(build_rbac_filters(state, pod())) == [
        ("DENY", ["ns[default]-policy[deny]-rule[0]"]),
        ("ALLOW", ["ns[default]-policy[allow]-rule[0]"])]
    assert authz_unsupported_fields(state.authorization_policies[3]) == []
    assert authz_unsupported_fields(policy("p", provider={"name": "x"})) == [
        "spec.provider (only a CUSTOM policy has a provider)"]


def test_rule_translation() -> None:
    rule = {"from": [{"source": {"principals": ["cluster.local/ns/default/sa/curl"]}},
                     {"source": {"namespaces": ["foo"], "notRequestPrincipals": ["*"]}}],
            "to": [{"operation": {"methods": ["GET"], "paths": ["/status/*", "*.json"],
                                  "ports": ["8000"]}}],
            "when": [{"key": "request.headers[X-Token]", "values": ["admin"]},
                     {"key": "request.auth.claims[groups]", "notValues": ["guest"]}]}
    [rbac] = build_rbac_filters(MeshState(authorization_policies=[policy("p", rules=[rule])]),
                                pod(host_port=18123))
    compiled = next(iter(rbac["typed_config"]["rules"]["policies"].values()))
    [permission] = compiled["permissions"]
    assert permission == {"and_rules": {"rules": [
        {"header": {"name": ":method", "string_match": {"exact": "GET"}}},
        {"or_rules": {"rules": [{"url_path": {"path": {"prefix": "/status/"}}},
                                {"url_path": {"path": {"suffix": ".json"}}}]}},
        {"destination_port": 18123}]}}
    [principal] = compiled["principals"]
    sources, header, claim = principal["and_ids"]["ids"]
    assert sources["or_ids"]["ids"][0] == {"authenticated": {"principal_name": {
        "exact": "spiffe://cluster.local/ns/default/sa/curl"}}}
    namespace, not_jwt = sources["or_ids"]["ids"][1]["and_ids"]["ids"]
    assert namespace == {"authenticated": {"principal_name": {
        "safe_regex": {"regex": ".*/ns/foo/.*"}}}}
    assert not_jwt["not_id"]["metadata"]["path"] == [{"key": "payload"}, {"key": "iss"}]
    assert header == {"header": {"name": "x-token", "string_match": {"exact": "admin"}}}
    assert "not_id" in claim


def test_unsupported_authorization_fields() -> None:
    obj = policy("p", targetRef={"kind": "Gateway"}, rules=[{
        "from": [{"source": {"ipBlocks": ["10.0.0.0/8"], "principals": ["x"]}}],
        "to": [{"operation": {"methods": ["GET"], "unknown": 1}}],
        "when": [{"key": "source.ip", "values": ["1.2.3.4"]},
                 {"key": "request.headers[x]", "values": ["y"]}]}])
    assert authz_unsupported_fields(obj) == [
        "spec.targetRef (the policy applies to no sidecar)",
        "spec.rules[0].from[0].source.ipBlocks",
        "spec.rules[0].to[0].operation.unknown",
        "spec.rules[0].when[0].key source.ip (so spec.rules[0] never matches, as in Istio)"]
    assert build_rbac_filters(MeshState(authorization_policies=[obj]), pod()) == []
    del obj["spec"]["targetRef"]
    assert build_rbac_filters(MeshState(authorization_policies=[obj]), pod()) == [
        {"name": "envoy.filters.http.rbac", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "ALLOW", "policies": {}}}}]
    denied = policy("d", action="DENY", rules=obj["spec"]["rules"])
    [deny] = build_rbac_filters(MeshState(authorization_policies=[denied]), pod())
    assert list(deny["typed_config"]["rules"]["policies"]) == ["ns[default]-policy[d]-rule[0]"]


def test_jwt_filter_shape_and_unsupported() -> None:
    signer = Signer()
    ra = request_authentication("jwt", selector={"matchLabels": {"app": "httpbin"}}, jwtRules=[
        {"issuer": ISSUER, "jwks": signer.jwks, "audiences": ["a"], "forwardOriginalToken": True,
         "outputPayloadToHeader": "x-jwt", "fromHeaders": [{"name": "x-auth", "prefix": "T "}]},
        {"issuer": "remote", "jwksUri": "https://example.com/jwks"}])
    [jwt] = build_jwt_filter(MeshState(request_authentications=[ra]), pod())
    config = jwt["typed_config"]
    assert list(config["providers"]) == ["default/jwt/0"]
    assert config["providers"]["default/jwt/0"] == {
        "issuer": ISSUER, "local_jwks": {"inline_string": signer.jwks}, "forward": True,
        "payload_in_metadata": "payload", "audiences": ["a"], "forward_payload_header": "x-jwt",
        "from_headers": [{"name": "x-auth", "value_prefix": "T "}]}
    assert config["rules"][0]["requires"]["requires_any"]["requirements"] == [
        {"provider_name": "default/jwt/0"}, {"allow_missing": {}}]
    assert ra_unsupported_fields(ra) == [
        "spec.jwtRules[1].jwksUri (keys are fetched only over http:// from a loopback address, "
        "localhost or a Service of the mesh: put the JWKS inline in `jwks`; the rule is left "
        "out)"]
    other = pod(labels={"app": "other"})
    assert build_jwt_filter(MeshState(request_authentications=[ra]), other) == []


# --- a real Envoy ----------------------------------------------------------------------------

@dataclass
class Proxy:
    port: int
    signer: Signer

    def request(self, path: str, method: str = "GET", token: str | None = None,
                **headers: str) -> tuple[int, str]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        for name, value in headers.items():
            req.add_header(name.replace("_", "-"), value)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()


class Echo(BaseHTTPRequestHandler):
    def _reply(self) -> None:
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _reply

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("authz")
    signer = Signer()
    listen = free_port()
    state = MeshState(
        request_authentications=[request_authentication("jwt", jwtRules=[
            {"issuer": ISSUER, "jwks": signer.jwks, "outputPayloadToHeader": "x-jwt-payload",
             "outputClaimToHeaders": [{"header": "x-jwt-sub", "claim": "sub"}]}])],
        authorization_policies=[
            policy("deny-admin", action="DENY", rules=[{"to": [{"operation": {
                "paths": ["/admin*"]}}]}]),
            policy("allow", rules=[
                {"to": [{"operation": {"methods": ["GET"], "paths": ["/get", "/status/*"],
                                       "ports": ["8000"]}}]},
                {"when": [{"key": "request.headers[x-token]", "values": ["admin"]}]},
                {"from": [{"source": {"requestPrincipals": [f"{ISSUER}/alice"]}}],
                 "to": [{"operation": {"paths": ["/alice"]}}]},
                {"to": [{"operation": {"paths": ["/dev"]}}],
                 "when": [{"key": "request.auth.claims[groups]", "values": ["dev"]}]},
                {"to": [{"operation": {"paths": ["/team"]}}],
                 "when": [{"key": "request.auth.claims[org][team]", "values": ["mesh"]}]},
                {"to": [{"operation": {"paths": ["/from-ip"]}}],
                 "when": [{"key": "source.ip", "values": ["127.0.0.1"]}]},
                {"to": [{"operation": {"paths": ["/by-host"],
                                       "hosts": ["Example.COM", "*.mesh.test"]}}]}])])
    target = pod(host_port=listen)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    filters = [*build_jwt_filter(state, target), *build_rbac_filters(state, target)]
    router = {"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
    hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
                 ".v3.HttpConnectionManager",
        "stat_prefix": "inbound", "http_filters": [*filters, router],
        "route_config": {"virtual_hosts": [{"name": "app", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]}}}
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [{"name": "inbound", "address": {"socket_address": {
                "address": "127.0.0.1", "port_value": listen}},
                "filter_chains": [{"filters": [hcm]}]}],
            "clusters": [{"name": "app", "type": "STATIC", "connect_timeout": "5s",
                          "load_assignment": {"cluster_name": "app", "endpoints": [{
                              "lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                                  "address": "127.0.0.1",
                                  "port_value": server.server_address[1]}}}}]}]}}]}}
    (tmp / "envoy.yaml").write_text(yaml.safe_dump(config))
    log = (tmp / "envoy.log").open("wb")
    proc = subprocess.Popen([str(envoy_binary()), "-c", str(tmp / "envoy.yaml"),
                             "--concurrency", "1", "--disable-hot-restart",
                             "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT)
    try:
        reply = Proxy(listen, signer)
        deadline = time.monotonic() + 15
        while True:
            try:
                reply.request("/get")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("envoy did not start: " + (tmp / "envoy.log").read_text())
                time.sleep(0.05)
        yield reply
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        server.shutdown()
        server.server_close()


def test_rbac_paths_methods_and_headers(proxy: Proxy) -> None:
    assert proxy.request("/get")[0] == 200
    assert proxy.request("/status/418")[0] == 200
    assert proxy.request("/get", method="POST") == (403, "RBAC: access denied")
    assert proxy.request("/anything", method="POST", x_token="admin")[0] == 200
    assert proxy.request("/admin", x_token="admin") == (403, "RBAC: access denied")


def test_jwt_validation_and_request_principals(proxy: Proxy) -> None:
    alice, bob = proxy.signer.token("alice"), proxy.signer.token("bob")
    assert proxy.request("/alice")[0] == 403  # missing token passes jwt_authn, RBAC wants one
    assert proxy.request("/alice", token=alice)[0] == 200
    assert proxy.request("/alice", token=bob)[0] == 403
    assert proxy.request("/get", token="not.a.jwt")[0] == 401
    assert proxy.request("/get", token=Signer().token("alice"))[0] == 401  # unknown key
    assert proxy.request("/get", token=proxy.signer.token(iss="https://other"))[0] == 401
    assert proxy.request("/dev", token=proxy.signer.token(groups=["dev", "ops"]))[0] == 200
    assert proxy.request("/dev", token=proxy.signer.token(groups=["ops"]))[0] == 403
    assert proxy.request("/team", token=proxy.signer.token(org={"team": "mesh"}))[0] == 200
    assert proxy.request("/team", token=proxy.signer.token(org={"team": "web"}))[0] == 403
    assert proxy.request("/from-ip")[0] == 403  # a rule with a field not emulated fails closed
    _, body = proxy.request("/get", token=alice)
    payload = json.loads(body)["x-jwt-payload"]
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert decoded["sub"] == "alice"
    assert json.loads(body)["x-jwt-sub"] == "alice"
    assert "authorization" not in json.loads(body)  # forwardOriginalToken defaults to false


def test_hosts_match_the_authority_ignoring_case_but_not_its_port(proxy: Proxy) -> None:
    """Istio matches `to.operation.hosts` against the whole :authority, case-insensitively; a
    port in the Host header must be listed too (istio/istio#44080, closed as documented)."""
    assert proxy.request("/by-host", host="example.com")[0] == 200
    assert proxy.request("/by-host", host="EXAMPLE.com")[0] == 200
    assert proxy.request("/by-host", host="api.MESH.test")[0] == 200
    assert proxy.request("/by-host", host="example.com:8000")[0] == 403
    assert proxy.request("/by-host", host="other.test")[0] == 403
