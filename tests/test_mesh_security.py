"""Does the embedded mesh secure traffic like Istio: PeerAuthentication STRICT rejecting a
plaintext client while a meshed one gets through, PERMISSIVE serving both, the mesh-wide policy in
`istio-system`, workload-selector and port-level overrides, SPIFFE identities on the certificate a
sidecar really serves, and certificate rotation without a single failed request?

Real daemon, real Envoys: httpbin and a meshed `curl` run in one injected namespace (deployed once
for the module), a plaintext `curl` in a namespace without injection (its curl tunnels through the
node forwarder, so it sees what a plaintext pod sees in a real mesh: `000`, exit 52 or 56). Every
assertion retries until the mesh has converged on the policy just applied.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import poll
from cryptography import x509
from mesh_support import (
    MeshNamespace,
    create_meshed_namespace,
    manifest,
    mesh_namespace_fixture,
    wait_available,
)

from labs.cluster import ClusterRef, EmbeddedCluster

ROOT_NAMESPACE = "istio-system"
HTTPBIN_PORT = 8000  # the Service port
HTTPBIN_CONTAINER_PORT = 8080  # what portLevelMtls is keyed by (the workload's port)
PLAINTEXT_FAILURES = (52, 56)  # curl: empty reply / connection reset — what a real mesh shows
ROTATION_TTL = "6s"
ROTATION_REQUESTS = 60
ROTATION_SECONDS = 8.0

meshed = mesh_namespace_fixture("httpbin", "curl", prefix="sec")


@pytest.fixture(scope="module")
def plain(cluster: ClusterRef) -> Iterator[MeshNamespace]:
    """A namespace WITHOUT sidecar injection running the `curl` client: a plaintext caller."""
    name = f"plain-{uuid.uuid4().hex[:6]}"
    created = cluster.kubectl("create", "namespace", name)
    assert created.returncode == 0, created.stderr
    space = MeshNamespace(cluster, name)
    try:
        space.deploy("curl")
        yield space
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(autouse=True)
def reset_policies(meshed: MeshNamespace) -> Iterator[None]:
    meshed.reset_routing()
    yield
    meshed.reset_routing()


def peer_authentication(name: str, mode: str | None = None, *, selector: str | None = None,
                        port_modes: dict[int, str] | None = None) -> str:
    spec: dict[str, object] = {}
    if selector:
        spec["selector"] = {"matchLabels": {"app": selector}}
    if mode:
        spec["mtls"] = {"mode": mode}
    if port_modes:
        spec["portLevelMtls"] = {str(port): {"mode": m} for port, m in port_modes.items()}
    return json.dumps({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                       "metadata": {"name": name}, "spec": spec})


def call_httpbin(caller: MeshNamespace, target: MeshNamespace) -> tuple[str, int]:
    """`kubectl exec deploy/curl -- curl http://httpbin.<ns>:8000/get` from `caller`:
    (the status curl printed, curl's exit code)."""
    result = caller.exec("curl", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                         "--max-time", "5",
                         f"http://httpbin.{target.name}:{HTTPBIN_PORT}/get")
    return result.stdout.strip(), result.returncode


def rejected(result: tuple[str, int]) -> bool:
    return result[0] == "000" and result[1] in PLAINTEXT_FAILURES


def served(result: tuple[str, int]) -> bool:
    return result == ("200", 0)


def expect(caller: MeshNamespace, target: MeshNamespace, outcome: str, what: str) -> None:
    """Wait until the call gives `outcome` ("served" or "rejected") twice in a row."""
    check = served if outcome == "served" else rejected
    streak = [0]

    def settled() -> bool:
        result = call_httpbin(caller, target)
        streak[0] = streak[0] + 1 if check(result) else 0
        return streak[0] >= 2
    poll(settled, what, timeout=30, interval=0.2)


# -- PeerAuthentication --------------------------------------------------------------------------
def test_strict_namespace_rejects_plaintext_and_serves_meshed(
        meshed: MeshNamespace, plain: MeshNamespace) -> None:
    """Does STRICT in the namespace close the plaintext client's connection (000, exit 52/56)
    while the meshed curl still gets 200 over mTLS?"""
    meshed.apply(peer_authentication("default", "STRICT"))
    expect(plain, meshed, "rejected", "the plaintext client to be refused under STRICT")
    expect(meshed, meshed, "served", "the meshed client to get 200 under STRICT")


def test_permissive_serves_both(meshed: MeshNamespace, plain: MeshNamespace) -> None:
    """Does PERMISSIVE serve the plaintext client and the meshed client alike?"""
    meshed.apply(peer_authentication("default", "STRICT"))
    expect(plain, meshed, "rejected", "STRICT to take effect first")
    meshed.apply(peer_authentication("default", "PERMISSIVE"))
    expect(plain, meshed, "served", "the plaintext client to get 200 under PERMISSIVE")
    expect(meshed, meshed, "served", "the meshed client to get 200 under PERMISSIVE")


def test_mesh_wide_strict_applies_to_other_namespaces(
        cluster: ClusterRef, meshed: MeshNamespace, plain: MeshNamespace) -> None:
    """Does STRICT in the root namespace `istio-system` apply to every namespace, and does a
    namespace policy still override it?"""
    created_root = cluster.kubectl("get", "namespace", ROOT_NAMESPACE).returncode != 0
    if created_root:
        result = cluster.kubectl("create", "namespace", ROOT_NAMESPACE)
        assert result.returncode == 0, result.stderr
    root = MeshNamespace(cluster, ROOT_NAMESPACE)
    try:
        root.apply(peer_authentication("mesh-wide-strict", "STRICT"))
        expect(plain, meshed, "rejected", "mesh-wide STRICT to reach httpbin's sidecar")
        expect(meshed, meshed, "served", "the meshed client to get 200 under mesh-wide STRICT")
        meshed.apply(peer_authentication("default", "PERMISSIVE"))
        expect(plain, meshed, "served", "the namespace's PERMISSIVE to override the mesh")
    finally:
        root.kubectl("delete", "peerauthentication", "mesh-wide-strict", "--ignore-not-found")
        if created_root:
            cluster.kubectl("delete", "namespace", ROOT_NAMESPACE, "--wait=false")
    expect(plain, meshed, "served", "the mesh-wide policy's removal to take effect")


def test_workload_selector_overrides_namespace(
        meshed: MeshNamespace, plain: MeshNamespace) -> None:
    """Does a policy selecting httpbin win over the namespace policy, both ways?"""
    meshed.apply(peer_authentication("default", "STRICT"))
    meshed.apply(peer_authentication("httpbin", "PERMISSIVE", selector="httpbin"))
    expect(plain, meshed, "served", "httpbin's PERMISSIVE to override the namespace's STRICT")
    meshed.apply(peer_authentication("default", "PERMISSIVE"))
    meshed.apply(peer_authentication("httpbin", "STRICT", selector="httpbin"))
    expect(plain, meshed, "rejected", "httpbin's STRICT to override the namespace's PERMISSIVE")
    expect(meshed, meshed, "served", "the meshed client to get 200 from the STRICT workload")


def test_port_level_mtls_overrides_workload_mode(
        meshed: MeshNamespace, plain: MeshNamespace) -> None:
    """Does portLevelMtls (keyed by the container port, 8080) override the workload's mode?"""
    meshed.apply(peer_authentication("httpbin", "STRICT", selector="httpbin",
                                     port_modes={HTTPBIN_CONTAINER_PORT: "PERMISSIVE"}))
    expect(plain, meshed, "served", "port 8080's PERMISSIVE to override the workload's STRICT")
    meshed.apply(peer_authentication("httpbin", "PERMISSIVE", selector="httpbin",
                                     port_modes={HTTPBIN_CONTAINER_PORT: "STRICT"}))
    expect(plain, meshed, "rejected", "port 8080's STRICT to override the workload's PERMISSIVE")
    expect(meshed, meshed, "served", "the meshed client to get 200 on the STRICT port")


# -- certificates --------------------------------------------------------------------------------
def pod_of(cluster: ClusterRef, namespace: str, app: str) -> dict[str, object]:
    result = cluster.kubectl(f"--namespace={namespace}", "get", "pods", "-l", f"app={app}",
                             "--field-selector", "status.phase=Running", "-o", "json")
    assert result.returncode == 0, result.stderr
    items = json.loads(result.stdout)["items"]
    assert items, f"no running pod with app={app} in {namespace}"
    return dict(items[0])


def sds_dir(cluster: EmbeddedCluster, pod: dict[str, object]) -> Path:
    """Where the pod's sidecar reads its certificate: <pod dir>/istio-proxy/xds/sds."""
    return cluster.paths.pod_dir(pod) / "istio-proxy" / "xds" / "sds"


def inline_secret(path: Path) -> dict[str, object]:
    resource = json.loads(path.read_text())["resources"][0]
    return dict(resource)


class ServedCertificate:
    """Handshakes with a sidecar's inbound listener like a meshed client (its certificate and
    key from the caller's own SDS file) and returns the certificate the sidecar served."""

    def __init__(self, cluster: EmbeddedCluster, namespace: str, client_app: str,
                 workdir: Path) -> None:
        self.cluster, self.namespace, self.client_app = cluster, namespace, client_app
        self.workdir = workdir

    def fetch(self, ref: ClusterRef, server_app: str) -> x509.Certificate:
        client_sds = sds_dir(self.cluster, pod_of(ref, self.namespace, self.client_app))
        server = pod_of(ref, self.namespace, server_app)
        chain = inline_secret(client_sds / "default.yaml")["tls_certificate"]
        root = inline_secret(client_sds / "rootca.yaml")["validation_context"]
        assert isinstance(chain, dict) and isinstance(root, dict)
        cert_file, key_file = self.workdir / "client.pem", self.workdir / "client.key"
        cert_file.write_bytes(base64.b64decode(chain["certificate_chain"]["inline_bytes"]))
        key_file.write_bytes(base64.b64decode(chain["private_key"]["inline_bytes"]))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False  # SPIFFE certificates carry no DNS name; SAN checked below
        context.load_verify_locations(
            cadata=base64.b64decode(root["trusted_ca"]["inline_bytes"]).decode())
        context.load_cert_chain(cert_file, key_file)
        annotations = server["metadata"]["annotations"]  # type: ignore[index]
        port = json.loads(annotations["meshlab.dev/host-ports"])[str(HTTPBIN_CONTAINER_PORT)]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
        assert der, "the sidecar served no certificate"
        return x509.load_der_x509_certificate(der)


def uri_sans(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return list(san.value.get_values_for_type(x509.UniformResourceIdentifier))


def test_served_certificate_carries_spiffe_identity(
        cluster: ClusterRef, meshed: MeshNamespace, tmp_path: Path) -> None:
    """Does httpbin's sidecar serve a certificate, signed by the mesh root, whose only identity
    is the URI SAN spiffe://cluster.local/ns/<ns>/sa/httpbin (critical, empty subject)?"""
    assert cluster.embedded is not None
    meshed.apply(peer_authentication("default", "STRICT"))  # the handshake must be mTLS itself
    cert = poll(lambda: _try_fetch(ServedCertificate(cluster.embedded, meshed.name, "curl",
                                                     tmp_path), cluster),
                "a TLS handshake with httpbin's sidecar", timeout=30)
    assert uri_sans(cert) == [f"spiffe://cluster.local/ns/{meshed.name}/sa/httpbin"]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical and len(cert.subject) == 0
    admin = json.loads(pod_of(cluster, meshed.name, "httpbin")["metadata"][  # type: ignore[index]
        "annotations"]["meshlab.dev/proxy-ports"])["admin"]
    served_by_admin = _admin_serials(admin)
    assert format(cert.serial_number, "x") in served_by_admin, (
        "Envoy's /certs does not list the certificate the listener served")


def _try_fetch(fetcher: ServedCertificate, ref: ClusterRef) -> x509.Certificate | None:
    try:
        return fetcher.fetch(ref, "httpbin")
    except (OSError, ssl.SSLError, KeyError):
        return None


def _admin_serials(admin_port: int) -> set[str]:
    """Serial numbers (lower-case hex) of the workload certificates an Envoy admin lists."""
    conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=5)
    try:
        conn.request("GET", "/certs")
        body = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    return {entry["serial_number"].lstrip("0").lower() for group in body["certificates"]
            for entry in group.get("cert_chain", [])}


# -- rotation ------------------------------------------------------------------------------------
def test_rotation_without_errors(monkeypatch: pytest.MonkeyPatch,
                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    """With a 6 s certificate lifetime (rotated every 3 s), do 60 requests over 8 s between two
    sidecars — a new client connection each — all succeed, across at least one rotation?"""
    monkeypatch.setenv("MESHLAB_CERT_TTL", ROTATION_TTL)
    embedded = EmbeddedCluster("rotation", tmp_path_factory.mktemp("rotation-state"))
    ref = ClusterRef(embedded.up(), embedded.name, embedded)
    try:
        space = MeshNamespace(ref, create_meshed_namespace(ref, "rot"))
        for name in ("httpbin", "curl"):
            space.apply(manifest(name))
        wait_available(ref, space.name)
        fetcher = ServedCertificate(embedded, space.name, "curl", tmp_path_factory.mktemp("tls"))
        first = poll(lambda: _try_fetch(fetcher, ref), "a handshake with httpbin", timeout=30)
        assert first.not_valid_after_utc - first.not_valid_before_utc == dt.timedelta(seconds=6)
        outbound = json.loads(pod_of(ref, space.name, "curl")["metadata"][  # type: ignore[index]
            "annotations"]["meshlab.dev/proxy-ports"])["outbound"]
        url = f"http://httpbin.{space.name}:{HTTPBIN_PORT}/get"
        poll(lambda: _get_through(outbound, url)[0] == 200, "curl's sidecar to reach httpbin",
             timeout=30)
        failures = []
        start = time.monotonic()
        for i in range(ROTATION_REQUESTS):
            status, detail = _get_through(outbound, url)
            if status != 200:
                failures.append(f"request {i} at {time.monotonic() - start:.2f}s: "
                                f"{status} {detail}")
            time.sleep(max(0.0, start + (i + 1) * ROTATION_SECONDS / ROTATION_REQUESTS
                           - time.monotonic()))
        last = poll(lambda: _try_fetch(fetcher, ref), "a handshake with httpbin", timeout=30)
    finally:
        embedded.down()
    assert not failures, f"{len(failures)} requests failed during rotation:\n" + "\n".join(
        failures)
    assert last.serial_number != first.serial_number, "httpbin's certificate was not rotated"
    assert last.not_valid_before_utc > first.not_valid_before_utc


def _get_through(outbound_port: int, url: str) -> tuple[int, str]:
    """One request through a sidecar's outbound HTTP proxy on a new connection (no keep-alive),
    as curl sends it: absolute-form URL."""
    conn = http.client.HTTPConnection("127.0.0.1", outbound_port, timeout=5)
    try:
        conn.request("GET", url, headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read()
        return response.status, body[:200].decode(errors="replace")
    except OSError as exc:
        return 0, repr(exc)
    finally:
        conn.close()
