"""Does Istio's ingress gateway work in the embedded cluster the way Istio's docs use it?

The daemon installs `istio-ingressgateway` in istio-system at start (like `istioctl install`);
bookinfo runs in one meshed namespace with Istio's own `bookinfo-gateway.yaml`, and the test
process opens the page through the Service's http2 node port, as the docs' INGRESS_PORT does.
"""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path

from conftest import poll
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mesh_support import MeshNamespace, mesh_namespace_fixture

from labs.cluster import ClusterRef

# istio/istio samples/bookinfo/networking/bookinfo-gateway.yaml, API v1
BOOKINFO_GATEWAY = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bookinfo-gateway
spec:
  # The selector matches the ingress gateway pod labels.
  selector:
    istio: ingressgateway # use istio default controller
  servers:
  - port:
      number: 8080
      name: http
      protocol: HTTP
    hosts:
    - "*"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bookinfo
spec:
  hosts:
  - "*"
  gateways:
  - bookinfo-gateway
  http:
  - match:
    - uri:
        exact: /productpage
    - uri:
        prefix: /static
    - uri:
        exact: /login
    - uri:
        exact: /logout
    - uri:
        prefix: /api/v1/products
    route:
    - destination:
        host: productpage
        port:
          number: 9080
"""

STRICT = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
spec:
  mtls:
    mode: STRICT
"""

HOST = "bookinfo.example.com"
# Istio's secure-ingress task, for bookinfo: TLS SIMPLE with a certificate from a Secret.
TLS_GATEWAY = f"""\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bookinfo-tls
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 443
      name: https
      protocol: HTTPS
    tls:
      mode: SIMPLE
      credentialName: bookinfo-credential
    hosts:
    - {HOST}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bookinfo-tls
spec:
  hosts:
  - {HOST}
  gateways:
  - bookinfo-tls
  http:
  - match:
    - uri:
        exact: /productpage
    route:
    - destination:
        host: productpage
        port:
          number: 9080
"""

bookinfo = mesh_namespace_fixture("bookinfo", prefix="ingress")


def _kubectl(cluster: ClusterRef, *args: str, timeout: float = 60) -> str:
    done = cluster.kubectl(*args, timeout=timeout)
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done.stdout


def _get(url: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
    except OSError as err:
        return 0, str(err)


def _logged(cluster: ClusterRef, text: str) -> str:
    """The gateway's first access log line containing `text` ("" while there is none)."""
    log = _kubectl(cluster, "-n", "istio-system", "logs", "deploy/istio-ingressgateway")
    return next((line for line in log.splitlines() if text in line), "")


def _ingress_port(cluster: ClusterRef) -> int:
    """The docs' INGRESS_PORT: the http2 port's nodePort."""
    return int(_kubectl(
        cluster, "-n", "istio-system", "get", "service", "istio-ingressgateway",
        "-o", 'jsonpath={.spec.ports[?(@.name=="http2")].nodePort}'))


def test_bookinfo_through_the_ingress_gateway(cluster: ClusterRef,
                                              bookinfo: MeshNamespace) -> None:
    _kubectl(cluster, "-n", "istio-system", "rollout", "status", "deploy/istio-ingressgateway",
             "--timeout=60s", timeout=90)
    bookinfo.apply(BOOKINFO_GATEWAY)
    port = _ingress_port(cluster)
    assert 30000 <= port <= 32767
    url = f"http://127.0.0.1:{port}"

    def page() -> str:
        status, body = _get(f"{url}/productpage")
        return body if status == 200 else ""

    body = poll(page, "productpage through the ingress gateway's node port", timeout=30)
    assert "Simple Bookstore App" in body and "The Comedy of Errors" in body
    status, _ = _get(f"{url}/not-in-the-virtualservice")
    assert status == 404
    # The gateway calls productpage with mTLS as its own identity: STRICT changes nothing.
    pod = json.loads(_kubectl(cluster, "-n", bookinfo.name, "get", "pod",
                              bookinfo.pod("productpage"), "-o", "json"))
    sidecar_port = json.loads(pod["metadata"]["annotations"]["meshlab.dev/host-ports"])["9080"]
    assert _get(f"http://127.0.0.1:{sidecar_port}/productpage")[0] == 200  # PERMISSIVE
    bookinfo.apply(STRICT)

    def plaintext_refused() -> bool:
        return _get(f"http://127.0.0.1:{sidecar_port}/productpage")[0] == 0

    poll(plaintext_refused, "productpage's sidecar to refuse plaintext (STRICT)", timeout=30)
    assert page()
    log = poll(lambda: _logged(cluster, f"outbound|9080||productpage.{bookinfo.name}"),
               "the gateway's access log line for productpage")
    assert '"GET /productpage HTTP/1.1" 200' in log
    pods = json.loads(_kubectl(cluster, "-n", "istio-system", "get", "pods", "-l",
                               "istio=ingressgateway", "-o", "json"))["items"]
    assert [c["name"] for c in pods[0]["spec"]["containers"]] == ["istio-proxy"]


def test_gateway_service_shows_its_external_ip(cluster: ClusterRef) -> None:
    table = _kubectl(cluster, "get", "svc", "-n", "istio-system", "istio-ingressgateway")
    header, row = table.splitlines()[:2]
    assert "EXTERNAL-IP" in header
    assert "LoadBalancer" in row and "127.0.0.1" in row
    assert "80:3" in row and "443:3" in row  # node ports of http2 and https


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    moment = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(moment - datetime.timedelta(minutes=5))
            .not_valid_after(moment + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _https_get(port: int, ca: Path, path: str) -> int:
    """GET over TLS with SNI and Host `HOST` (curl --resolve in Istio's task); 0 on failure."""
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname=HOST) as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
                        .encode())
            head = tls.recv(64).decode(errors="replace")
    except OSError:
        return 0
    parts = head.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def test_tls_simple_with_a_credential_secret(cluster: ClusterRef, bookinfo: MeshNamespace,
                                             tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    _kubectl(cluster, "-n", "istio-system", "create", "secret", "tls", "bookinfo-credential",
             f"--cert={cert}", f"--key={key}")
    try:
        bookinfo.apply(TLS_GATEWAY)
        port = int(_kubectl(cluster, "-n", "istio-system", "get", "service",
                            "istio-ingressgateway", "-o",
                            'jsonpath={.spec.ports[?(@.name=="https")].nodePort}'))
        poll(lambda: _https_get(port, cert, "/productpage") == 200,
             "productpage over HTTPS through the gateway", timeout=30)
        assert _https_get(port, cert, "/elsewhere") == 404
    finally:
        cluster.kubectl("-n", "istio-system", "delete", "secret", "bookinfo-credential")
