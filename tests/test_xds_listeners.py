"""Sidecar listeners, PeerAuthentication and the node forwarder, checked on real Envoys.

The PeerAuthentication table runs without processes. The traffic tests start a server sidecar
(inbound STRICT / PERMISSIVE / DISABLE by port, health listener) in front of the echo twin, a
client sidecar whose outbound listener talks Istio mTLS to it (auto-mTLS clusters from the
outbound builders), the node forwarder, and a Zipkin-compatible collector, all on 127.0.0.1
with certificates made here.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from labs.embedded.loopback import free_port
from labs.embedded.mesh.envoy import bootstrap, envoy_binary, envoy_command, write_bootstrap
from labs.embedded.mesh.istio.meshconfig import default_mesh_config
from labs.embedded.mesh.istio.state import MeshState
from labs.embedded.mesh.istio.xds.clusters import build_outbound
from labs.embedded.mesh.istio.xds.forwarder_config import build_forwarder, build_forwarder_routes
from labs.embedded.mesh.istio.xds.listeners import build_inbound_clusters, build_sidecar_listeners
from labs.embedded.mesh.istio.xds.observability import telemetry_clusters
from labs.embedded.mesh.istio.xds.peer_authentication import mtls_mode, pa_unsupported_fields
from labs.embedded.mesh.kube_state import Obj, spiffe_id
from labs.embedded.mesh.proxyfiles import ProxyFiles

TYPE = "type.googleapis.com/envoy.config."
LISTENER, CLUSTER, ROUTES = (f"{TYPE}listener.v3.Listener", f"{TYPE}cluster.v3.Cluster",
                             f"{TYPE}route.v3.RouteConfiguration")
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
SERVER_FQDN = "server.default.svc.cluster.local"
SERVER_ID = spiffe_id("default", "server-sa")
CLIENT_ID = spiffe_id("default", "client-sa")
STRICT_PORT, PERMISSIVE_PORT, DISABLE_PORT = 8001, 8002, 8003


# --- PeerAuthentication resolution (no processes) ---------------------------------------------

def pa(name: str, namespace: str, mode: str | None = None, selector: dict | None = None,
       ports: dict | None = None, created: str = "2024-01-01T00:00:00Z") -> Obj:
    spec: Obj = {}
    if mode:
        spec["mtls"] = {"mode": mode}
    if selector:
        spec["selector"] = {"matchLabels": selector}
    if ports:
        spec["portLevelMtls"] = {str(p): {"mode": m} for p, m in ports.items()}
    return {"metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
            "spec": spec}


def pod(name: str, namespace: str = "default", labels: dict | None = None,
        sa: str = "default", annotations: dict | None = None) -> Obj:
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels or {"app": name},
                         "annotations": {k: json.dumps(v) for k, v in (annotations or {}).items()}},
            "spec": {"serviceAccountName": sa,
                     "containers": [{"name": "app"}, {"name": "istio-proxy"}]}}


MESH_STRICT = pa("mesh", "istio-system", "STRICT")
NS_DISABLE = pa("ns", "default", "DISABLE")
WL_PERMISSIVE = pa("wl", "default", "PERMISSIVE", {"app": "web"})


@pytest.mark.parametrize(("policies", "port", "expected"), [
    ([], 80, "PERMISSIVE"),
    ([MESH_STRICT], 80, "STRICT"),
    ([pa("other-root", "istio-system", "STRICT", {"app": "web"})], 80, "PERMISSIVE"),
    ([MESH_STRICT, NS_DISABLE], 80, "DISABLE"),
    ([MESH_STRICT, pa("other-ns", "prod", "DISABLE")], 80, "STRICT"),
    ([MESH_STRICT, NS_DISABLE, WL_PERMISSIVE], 80, "PERMISSIVE"),
    ([MESH_STRICT, pa("wl-other", "default", "DISABLE", {"app": "api"})], 80, "STRICT"),
    ([MESH_STRICT, pa("ns-unset", "default", "UNSET")], 80, "STRICT"),
    ([NS_DISABLE, pa("wl-unset", "default", None, {"app": "web"})], 80, "DISABLE"),
    ([pa("wl", "default", "STRICT", {"app": "web"}, {8080: "DISABLE"})], 8080, "DISABLE"),
    ([pa("wl", "default", "STRICT", {"app": "web"}, {8080: "DISABLE"})], 9090, "STRICT"),
    ([NS_DISABLE, pa("wl", "default", "UNSET", {"app": "web"}, {8080: "UNSET"})], 8080,
     "DISABLE"),
    ([MESH_STRICT, pa("wl", "default", None, {"app": "web"}, {8080: "PERMISSIVE"})], 8080,
     "PERMISSIVE"),
    ([MESH_STRICT, pa("ns-ports", "default", None, None, {8080: "DISABLE"})], 8080, "STRICT"),
    ([pa("young", "default", "STRICT", created="2024-05-01T00:00:00Z"),
      pa("old", "default", "DISABLE", created="2024-01-01T00:00:00Z")], 80, "DISABLE"),
    ([pa("young", "default", "DISABLE", {"app": "web"}, created="2024-05-01T00:00:00Z"),
      pa("old", "default", "STRICT", {"app": "web"}, created="2024-01-01T00:00:00Z")], 80,
     "STRICT"),
    ([pa("b", "default", "DISABLE"), pa("a", "default", "STRICT")], 80, "STRICT"),
], ids=["default", "mesh", "root-selector-ignored", "namespace-over-mesh", "other-namespace",
        "workload-over-namespace", "workload-not-selected", "namespace-unset-inherits",
        "workload-unset-inherits", "port-level", "port-level-other-port", "port-unset-inherits",
        "port-over-inherited", "port-level-needs-selector", "oldest-namespace-wins",
        "oldest-workload-wins", "name-breaks-ties"])
def test_peer_authentication_resolution(policies: list[Obj], port: int, expected: str) -> None:
    state = MeshState(peer_authentications=policies)
    assert mtls_mode(state, pod("web"), port) == expected


def test_workload_in_root_namespace_uses_mesh_policy_only() -> None:
    state = MeshState(peer_authentications=[
        pa("mesh", "istio-system", "DISABLE"),
        pa("wl", "istio-system", "STRICT", {"app": "gw"})])
    assert mtls_mode(state, pod("gw", namespace="istio-system"), 80) == "DISABLE"


def test_unsupported_peer_authentication_fields() -> None:
    assert pa_unsupported_fields(pa("ok", "default", "STRICT", {"app": "web"}, {80: "DISABLE"})) \
        == []
    assert pa_unsupported_fields(pa("no-selector", "default", "STRICT", None, {80: "DISABLE"})) \
        == ["spec.portLevelMtls"]
    odd = pa("odd", "default", "STRICT")
    odd["spec"]["targetRefs"] = [{"kind": "Service", "name": "web"}]
    assert pa_unsupported_fields(odd) == ["spec.targetRefs"]


# --- Envoy configuration and real traffic ---------------------------------------------------

def pem(obj: x509.Certificate | ec.EllipticCurvePrivateKey) -> str:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM).decode()
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


class MeshCA:
    """A root and SPIFFE leaves shaped like Istio's: empty subject, critical URI SAN."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()),
                           critical=False)
            .sign(self.key, hashes.SHA256()))

    def write_sds(self, files: ProxyFiles, identity: str) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        leaf = (
            x509.CertificateBuilder().subject_name(x509.Name([]))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]),
                           critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False,
                                         False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256()))
        files.cert_sds.parent.mkdir(parents=True, exist_ok=True)
        write_resources(files.cert_sds, SECRET, [{"name": "default", "tls_certificate": {
            "certificate_chain": {"inline_string": pem(leaf)},
            "private_key": {"inline_string": pem(key)}}}])
        write_resources(files.root_sds, SECRET, [{"name": "ROOTCA", "validation_context": {
            "trusted_ca": {"inline_string": pem(self.cert)}}}])


def write_resources(path: Path, type_url: str, resources: list[Obj]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"resources": [{"@type": type_url, **r} for r in resources]}))


def write_xds(files: ProxyFiles, listeners: list[Obj], clusters: list[Obj],
              routes: list[Obj]) -> None:
    write_resources(files.lds, LISTENER, listeners)
    write_resources(files.cds, CLUSTER, clusters)
    write_resources(files.rds, ROUTES, routes)


class SpanCollector(ThreadingHTTPServer):
    """The Zipkin v2 endpoint the sidecars report to; keeps every span it receives."""

    def __init__(self) -> None:
        self.spans: list[Obj] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                    return self.rfile.read(int(self.headers.get("Content-Length") or 0))
                data = b""
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    data += self.rfile.read(size)
                    self.rfile.readline()
                self.rfile.readline()
                return data

            def do_POST(self) -> None:
                body = self.body()
                if self.path == "/api/v2/spans":
                    collector.spans.extend(json.loads(body))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.daemon_threads = True


@dataclass
class Mesh:
    tmp: Path
    server_files: ProxyFiles
    client_files: ProxyFiles
    ports: dict[str, int]
    spans: SpanCollector
    server_stdout: Path


def server_pod(ports: dict[str, int]) -> Obj:
    return pod("server-7d9f-abcde", labels={"app": "server"}, sa="server-sa", annotations={
        "meshlab.dev/host-ports": {str(STRICT_PORT): ports["strict"],
                                   str(PERMISSIVE_PORT): ports["permissive"],
                                   str(DISABLE_PORT): ports["disable"],
                                   "15021": ports["health"]},
        "meshlab.dev/app-ports": {str(STRICT_PORT): ports["app_strict"],
                                  str(PERMISSIVE_PORT): ports["app_permissive"],
                                  str(DISABLE_PORT): ports["app_disable"]},
        "meshlab.dev/proxy-ports": {"admin": ports["server_admin"],
                                    "outbound": ports["server_outbound"]}})


def client_pod(ports: dict[str, int]) -> Obj:
    return pod("client", sa="client-sa", annotations={"meshlab.dev/proxy-ports": {
        "admin": ports["client_admin"], "outbound": ports["client_outbound"]}})


def mesh_state(ports: dict[str, int]) -> MeshState:
    """Service `server` (ports 8001-8003) backed by the server pod; namespace policy STRICT,
    the workload's port-level policy PERMISSIVE on 8002 and DISABLE on 8003."""
    mode_ports = ((STRICT_PORT, "strict"), (PERMISSIVE_PORT, "permissive"),
                  (DISABLE_PORT, "disable"))
    server = server_pod(ports)
    service = {"metadata": {"name": "server", "namespace": "default"},
               "spec": {"clusterIP": "10.96.0.20", "ports": [
                   {"name": f"http-{p}", "port": p, "targetPort": p} for p, _ in mode_ports]}}
    endpoints = {"metadata": {"name": "server", "namespace": "default"}, "subsets": [{
        "addresses": [{"ip": "127.0.0.1", "targetRef": {
            "kind": "Pod", "namespace": "default", "name": server["metadata"]["name"]}}],
        "ports": [{"name": f"http-{p}", "port": ports[mode]} for p, mode in mode_ports]}]}
    policies = [pa("default", "default", "STRICT"),
                pa("server", "default", None, {"app": "server"},
                   {PERMISSIVE_PORT: "PERMISSIVE", DISABLE_PORT: "DISABLE"})]
    # every request traced (Istio's default is 1 %), set as Istio's tasks do: in the mesh config
    mesh_config = {**default_mesh_config(), "defaultConfig": {"tracing": {"sampling": 100}}}
    return MeshState(services=[service], endpoints=[endpoints],
                     pods=[server, client_pod(ports)], peer_authentications=policies,
                     mesh_config=mesh_config)


def start_envoy(tmp: Path, name: str, files: ProxyFiles, admin_port: int,
                procs: list[subprocess.Popen[bytes]]) -> Path:
    config = bootstrap(name, name, admin_port, files)
    write_bootstrap(tmp / f"{name}.yaml", config)
    stdout = tmp / f"{name}.out"
    with stdout.open("wb") as out:
        procs.append(subprocess.Popen(
            envoy_command(tmp / f"{name}.yaml"),
            stdout=out, stderr=subprocess.STDOUT))
    return stdout


def wait_listening(port: int, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"{what} never listened on 127.0.0.1:{port}")
            time.sleep(0.02)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    envoy_binary()
    tmp = tmp_path_factory.mktemp("listeners")
    names = ["strict", "permissive", "disable", "health", "app_strict", "app_permissive",
             "app_disable", "server_admin", "server_outbound", "client_admin", "client_outbound",
             "forwarder", "forwarder_admin"]
    ports = {name: free_port() for name in names}
    state = mesh_state(ports)
    server, client = state.pods
    spans = SpanCollector()
    threading.Thread(target=spans.serve_forever, daemon=True).start()
    telemetry_port = spans.server_address[1]

    ca = MeshCA()
    server_files = ProxyFiles(tmp / "server" / "istio-proxy" / "xds")
    client_files = ProxyFiles(tmp / "client" / "istio-proxy" / "xds")
    forwarder_files = ProxyFiles(tmp / "forwarder" / "xds")
    ca.write_sds(server_files, SERVER_ID)
    ca.write_sds(client_files, CLIENT_ID)

    # As the control plane combines them: these listeners, the outbound clusters and routes.
    for proxy, files in ((server, server_files), (client, client_files)):
        clusters, routes = build_outbound(state, proxy, files)
        write_xds(files, build_sidecar_listeners(state, proxy, files, telemetry_port),
                  clusters + build_inbound_clusters(state, proxy)
                  + telemetry_clusters(telemetry_port), routes)
    clusters, _ = build_outbound(state, None, None)
    write_xds(forwarder_files, build_forwarder(state, ports["forwarder"], forwarder_files),
              clusters, build_forwarder_routes(state))

    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "labs.embedded.apps.echo", "--port", str(ports["app_strict"]),
             "--port", str(ports["app_permissive"]), "--port", str(ports["app_disable"])],
            stdout=subprocess.DEVNULL))
        server_stdout = start_envoy(tmp, "server", server_files, ports["server_admin"], procs)
        start_envoy(tmp, "client", client_files, ports["client_admin"], procs)
        start_envoy(tmp, "forwarder", forwarder_files, ports["forwarder_admin"], procs)
        for name in ("strict", "permissive", "disable", "health", "app_strict",
                     "client_outbound", "forwarder"):
            wait_listening(ports[name], name)
        yield Mesh(tmp, server_files, client_files, ports, spans, server_stdout)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        spans.shutdown()
        spans.server_close()


@dataclass
class Reply:
    exit_code: int
    status: str
    body: str

    def headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in json.loads(self.body)["headers"].items()}


def curl(mesh: Mesh, url: str, proxy: str, tunnel: bool = False,
         headers: dict[str, str] | None = None) -> Reply:
    """Real curl through an HTTP proxy; `tunnel` is what a pod's `.curlrc` `proxytunnel` does."""
    args = ["curl", "-q", "-sS", "--max-time", "5", "-w", "\n%{http_code}",
            "-x", f"http://127.0.0.1:{mesh.ports[proxy]}"]
    args += ["--proxytunnel"] if tunnel else []
    for key, value in (headers or {}).items():
        args += ["-H", f"{key}: {value}"]
    done = subprocess.run([*args, url], capture_output=True, text=True, timeout=10,
                          env={"PATH": os.environ["PATH"], "HOME": str(mesh.tmp)})
    body, _, status = done.stdout.rpartition("\n")
    return Reply(done.returncode, status, body)


def test_listeners_pass_envoy_validation(tmp_path: Path) -> None:
    ports = {name: 20000 + i for i, name in enumerate(
        ["strict", "permissive", "disable", "health", "app_strict", "app_permissive",
         "app_disable", "server_admin", "server_outbound", "client_admin", "client_outbound"])}
    state = mesh_state(ports)
    files = ProxyFiles(tmp_path / "xds")
    for path in (files.rds, files.cert_sds, files.root_sds):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("resources: []\n")
    rbac = {"name": "envoy.filters.http.rbac", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"}}
    listeners = [*build_sidecar_listeners(state, state.pods[0], files, 9411,
                                          inbound_http_filters=[rbac]),
                 *build_forwarder(state, 21000, files)]
    clusters = build_inbound_clusters(state, state.pods[0]) + telemetry_clusters(9411)
    config = {"node": {"id": "validate", "cluster": "validate"},
              "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
              "static_resources": {"listeners": listeners, "clusters": clusters}}
    (tmp_path / "bootstrap.yaml").write_text(yaml.safe_dump(config))
    done = subprocess.run([str(envoy_binary()), "--mode", "validate", "--disable-hot-restart",
                           "-c", str(tmp_path / "bootstrap.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [listener["name"] for listener in listeners] == [
        "outbound", "inbound|8001||", "inbound|8002||", "inbound|8003||", "health", "forwarder"]
    modes = {lst["name"]: [chain.get("name") for chain in lst["filter_chains"]]
             for lst in listeners}
    assert modes["inbound|8001||"] == ["mtls"]
    assert modes["inbound|8002||"] == ["mtls", "plaintext"]
    assert modes["inbound|8003||"] == ["plaintext"]

    def http_filters(listener: Obj) -> list[str]:
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        return [f["name"] for f in hcm["http_filters"]]

    assert http_filters(listeners[0]) == ["envoy.filters.http.fault", "envoy.filters.http.router"]
    assert http_filters(listeners[1]) == ["envoy.filters.http.rbac", "envoy.filters.http.router"]


def test_strict_rejects_plaintext_and_serves_mtls(mesh: Mesh) -> None:
    url = f"http://server.default:{STRICT_PORT}/hello"
    plain = curl(mesh, url, "forwarder", tunnel=True)
    assert plain.status == "000" and plain.exit_code in (52, 56), plain
    through_l7 = curl(mesh, url, "forwarder")
    assert through_l7.status == "503", through_l7

    reply = curl(mesh, f"http://server:{STRICT_PORT}/hello", "client_outbound")
    assert reply.status == "200", reply
    xfcc = reply.headers()["x-forwarded-client-cert"]
    assert f"URI={CLIENT_ID}" in xfcc and f"By={SERVER_ID}" in xfcc


def test_permissive_serves_both(mesh: Mesh) -> None:
    plain = curl(mesh, f"http://server.default.svc.cluster.local:{PERMISSIVE_PORT}/",
                 "forwarder", tunnel=True, headers={"x-forwarded-client-cert": "URI=forged"})
    assert plain.status == "200", plain
    assert "x-forwarded-client-cert" not in plain.headers()  # sanitized without mTLS
    assert curl(mesh, f"http://10.96.0.20:{PERMISSIVE_PORT}/", "forwarder").status == "200"
    mtls = curl(mesh, f"http://server:{PERMISSIVE_PORT}/", "client_outbound")
    assert mtls.status == "200", mtls
    assert f"URI={CLIENT_ID}" in mtls.headers()["x-forwarded-client-cert"]


def test_disable_serves_plaintext_only(mesh: Mesh) -> None:
    plain = curl(mesh, f"http://server:{DISABLE_PORT}/", "forwarder", tunnel=True)
    assert plain.status == "200", plain
    assert curl(mesh, f"http://server:{DISABLE_PORT}/", "client_outbound").status == "503"


def test_health_listener(mesh: Mesh) -> None:
    base = f"http://127.0.0.1:{mesh.ports['health']}"
    with urllib.request.urlopen(f"{base}/healthz/ready", timeout=5) as response:
        assert response.status == 200
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{base}/other", timeout=5)
    assert err.value.code == 404


def read_log(path: Path, request_id: str, timeout: float = 5) -> Obj:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text().splitlines():
                entry = json.loads(line)
                if entry["request_id"] == request_id:
                    return entry
        time.sleep(0.05)
    pytest.fail(f"no line for request {request_id} in {path}")


def test_access_logs_and_traces(mesh: Mesh) -> None:
    request_id = "4b2c7a0e-test-listeners"
    reply = curl(mesh, f"http://server:{STRICT_PORT}/logged?x=1", "client_outbound",
                 headers={"x-request-id": request_id})
    assert reply.status == "200", reply
    assert reply.headers()["x-request-id"] == request_id

    outbound = read_log(mesh.client_files.xds_dir.parent / "telemetry.log", request_id)
    assert outbound["direction"] == "outbound"
    assert outbound["upstream_cluster"] == f"outbound|{STRICT_PORT}||{SERVER_FQDN}"
    assert outbound["upstream_peer_uri_san"] == SERVER_ID
    assert outbound["principal"] == CLIENT_ID and outbound["workload"] == "client"
    assert outbound["authority"] == f"server:{STRICT_PORT}"

    inbound = read_log(mesh.server_files.xds_dir.parent / "telemetry.log", request_id)
    assert inbound["direction"] == "inbound"
    assert inbound["downstream_peer_uri_san"] == CLIENT_ID
    assert inbound["connection_security"].startswith("TLS")
    assert inbound["upstream_cluster"] == f"inbound|{STRICT_PORT}||"
    assert inbound["response_code"] == 200 and inbound["method"] == "GET"
    assert inbound["path"] == "/logged?x=1"
    assert inbound["namespace"] == "default" and inbound["pod"] == "server-7d9f-abcde"
    for field in ("start_time", "duration", "bytes_received", "bytes_sent", "response_flags"):
        assert field in inbound

    plain_id = "4b2c7a0e-test-plaintext"
    curl(mesh, f"http://server:{PERMISSIVE_PORT}/", "forwarder", tunnel=True,
         headers={"x-request-id": plain_id})
    plain = read_log(mesh.server_files.xds_dir.parent / "telemetry.log", plain_id)
    assert plain["connection_security"] in (None, "", "-")
    assert plain["downstream_peer_uri_san"] in (None, "", "-")

    text = mesh.server_stdout.read_text()
    assert '"GET /logged?x=1 HTTP/1.1" 200' in text and f"inbound|{STRICT_PORT}||" in text

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        kinds = {s.get("kind") for s in mesh.spans.spans
                 if s.get("tags", {}).get("guid:x-request-id") == request_id}
        if kinds >= {"CLIENT", "SERVER"}:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"spans of {request_id} did not reach the collector: {mesh.spans.spans}")
