"""Does RequestAuthentication `jwksUri` work when it stays on the machine: Envoy fetching the keys
itself (`remote_jwks`) from a JWKS server on 127.0.0.1, a valid token 200, an invalid one 401,
and any other URI reported as not emulated with the hint to use inline `jwks`?

The JWKS server is started and stopped here; httpbin and curl run in one injected namespace.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from conftest import poll
from mesh_support import MeshNamespace, mesh_namespace_fixture, yaml_stream
from test_mesh_authorization import expect
from test_xds_authorization import ISSUER, Signer, pod, request_authentication

from labs import proxy
from labs.embedded.mesh.istio.state import MeshState
from labs.embedded.mesh.istio.xds.jwt import build_jwt_filter, fetchable_uri, jwks_clusters
from labs.embedded.mesh.istio.xds.jwt import ra_unsupported_fields as unsupported

meshed = mesh_namespace_fixture("httpbin", "curl", prefix="jwks")


class JwksHandler(BaseHTTPRequestHandler):
    jwks: ClassVar[str] = ""
    fetches: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.fetches.append(self.path)
        body = self.jwks.encode()
        self.send_response(200 if self.path == "/jwks.json" else 404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


@pytest.fixture
def jwks_server(signer: Signer) -> Iterator[int]:
    JwksHandler.jwks, JwksHandler.fetches = signer.jwks, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), JwksHandler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_which_uris_are_fetched() -> None:
    assert fetchable_uri("http://127.0.0.1:8080/jwks.json")
    assert fetchable_uri("http://localhost/keys")
    assert fetchable_uri("http://jwks.foo.svc.cluster.local:8000/jwks.json")
    assert not fetchable_uri("https://127.0.0.1/jwks.json")  # no TLS to loopback servers
    assert not fetchable_uri("https://www.googleapis.com/oauth2/v3/certs")
    assert not fetchable_uri("http://example.com/jwks.json")


def test_remote_jwks_shape() -> None:
    """A loopback jwksUri becomes remote_jwks through a cluster of its own; a Service one uses
    the Service's outbound cluster; an unknown Service is left out."""
    ra = request_authentication("jwt", jwtRules=[
        {"issuer": ISSUER, "jwksUri": "http://127.0.0.1:18081/jwks.json"},
        {"issuer": "svc", "jwksUri": "http://jwks.default.svc.cluster.local:8000/k"},
        {"issuer": "gone", "jwksUri": "http://missing:8000/k"}])
    service = {"kind": "Service", "metadata": {"name": "jwks", "namespace": "default"},
               "spec": {"ports": [{"port": 8000}]}}
    state = MeshState(request_authentications=[ra], services=[service])
    [jwt] = build_jwt_filter(state, pod())
    providers = jwt["typed_config"]["providers"]
    assert sorted(providers) == ["default/jwt/0", "default/jwt/1"]
    assert providers["default/jwt/0"]["remote_jwks"] == {
        "http_uri": {"uri": "http://127.0.0.1:18081/jwks.json",
                     "cluster": "outbound|18081||127.0.0.1", "timeout": "5s"},
        "cache_duration": "300s", "async_fetch": {}}
    assert providers["default/jwt/1"]["remote_jwks"]["http_uri"]["cluster"] == (
        "outbound|8000||jwks.default.svc.cluster.local")
    assert [c["name"] for c in jwks_clusters(state, pod())] == ["outbound|18081||127.0.0.1"]
    assert unsupported(ra) == []


@pytest.mark.usefixtures("jwks_server")
def test_jwks_uri_on_loopback(meshed: MeshNamespace, signer: Signer, jwks_server: int) -> None:
    meshed.apply(yaml_stream({
        "apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
        "metadata": {"name": "jwt"},
        "spec": {"selector": {"matchLabels": {"app": "httpbin"}}, "jwtRules": [{
            "issuer": ISSUER, "jwksUri": f"http://127.0.0.1:{jwks_server}/jwks.json"}]}}))

    def bearer(token: str) -> tuple[str, ...]:
        return ("-H", f"Authorization: Bearer {token}")

    expect(meshed, [
        ("curl", "/get", bearer(signer.token("alice")), 200),
        ("curl", "/get", bearer(Signer().token("alice")), 401),  # signed by an unknown key
        ("curl", "/get", (), 200),  # a missing token passes
    ], "tokens checked against the JWKS Envoy fetched from 127.0.0.1")
    assert "/jwks.json" in JwksHandler.fetches
    stats = poll(lambda: {k: v for k, v in proxy.stats(
        meshed.pod("httpbin"), meshed.name, cluster=meshed.cluster).items()
        if k.endswith("jwt_authn.jwks_fetch_success") and v}, "jwks_fetch_success", 10)
    assert sum(stats.values()) >= 1
    meshed.kubectl("delete", "requestauthentication", "jwt")
