"""Does Istio's ingress gateway work in the embedded cluster the way Istio's docs use it?

The daemon installs `istio-ingressgateway` in istio-system at start (like `istioctl install`);
bookinfo runs in one meshed namespace with Istio's own `bookinfo-gateway.yaml`, and the test
process opens the page through the Service's http2 node port, as the docs' INGRESS_PORT does.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from conftest import poll
from mesh_support import (
    MeshNamespace,
    http_get,
    https_get,
    mesh_namespace_fixture,
    self_signed_cert,
)

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
        status, body = http_get(f"{url}/productpage")
        return body if status == 200 else ""

    body = poll(page, "productpage through the ingress gateway's node port", timeout=30)
    assert "Simple Bookstore App" in body and "The Comedy of Errors" in body
    status, _ = http_get(f"{url}/not-in-the-virtualservice")
    assert status == 404
    # The gateway calls productpage with mTLS as its own identity: STRICT changes nothing.
    pod = json.loads(_kubectl(cluster, "-n", bookinfo.name, "get", "pod",
                              bookinfo.pod("productpage"), "-o", "json"))
    sidecar_port = json.loads(pod["metadata"]["annotations"]["meshlab.dev/host-ports"])["9080"]
    assert http_get(f"http://127.0.0.1:{sidecar_port}/productpage")[0] == 200  # PERMISSIVE
    bookinfo.apply(STRICT)

    def plaintext_refused() -> bool:
        return http_get(f"http://127.0.0.1:{sidecar_port}/productpage")[0] == 0

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


def test_tls_simple_with_a_credential_secret(cluster: ClusterRef, bookinfo: MeshNamespace,
                                             tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path, HOST)
    _kubectl(cluster, "-n", "istio-system", "create", "secret", "tls", "bookinfo-credential",
             f"--cert={cert}", f"--key={key}")
    try:
        bookinfo.apply(TLS_GATEWAY)
        port = int(_kubectl(cluster, "-n", "istio-system", "get", "service",
                            "istio-ingressgateway", "-o",
                            'jsonpath={.spec.ports[?(@.name=="https")].nodePort}'))
        poll(lambda: https_get(port, cert, HOST, "/productpage") == 200,
             "productpage over HTTPS through the gateway", timeout=30)
        assert https_get(port, cert, HOST, "/elsewhere") == 404
    finally:
        cluster.kubectl("-n", "istio-system", "delete", "secret", "bookinfo-credential")


ISTIO_GATEWAY = "gateways.networking.istio.io"  # `gateway` alone is Gateway API's kind


def _reconciled(cluster: ClusterRef, namespace: str, gateway: str) -> dict[str, str]:
    """The Gateway's `Reconciled` condition as `kubectl get gateway -o yaml` shows it."""
    obj = yaml.safe_load(_kubectl(cluster, "-n", namespace, "get", ISTIO_GATEWAY, gateway, "-o",
                                  "yaml"))
    return next((c for c in (obj.get("status") or {}).get("conditions") or []
                 if c["type"] == "Reconciled"), {})


def test_a_missing_credential_secret_is_reported_on_the_gateway(
        cluster: ClusterRef, bookinfo: MeshNamespace, tmp_path: Path) -> None:
    """Does a Gateway whose credentialName has no Secret say so on itself (status condition
    and a Warning event in `kubectl describe`, as istiod's analysis reports IST0101), and stop
    saying so once the Secret exists?"""
    host = "missing.example.com"
    manifest = (TLS_GATEWAY.replace("bookinfo-tls", "missing-tls").replace(HOST, host)
                .replace("bookinfo-credential", "missing-credential"))
    problem = "credentialName missing-credential has no usable Secret in istio-system"
    bookinfo.apply(manifest)
    try:
        poll(lambda: _reconciled(cluster, bookinfo.name, "missing-tls").get("status") == "False",
             "the Gateway's Reconciled condition to report the problem", timeout=30)
        condition = _reconciled(cluster, bookinfo.name, "missing-tls")
        assert condition["reason"] == "NotApplied" and problem in condition["message"]
        described = _kubectl(cluster, "-n", bookinfo.name, "describe", ISTIO_GATEWAY,
                             "missing-tls")
        assert "Warning" in described and "NotApplied" in described
        assert "missing-credential has no usable Secret" in described
        cert, key = self_signed_cert(tmp_path, host)
        _kubectl(cluster, "-n", "istio-system", "create", "secret", "tls", "missing-credential",
                 f"--cert={cert}", f"--key={key}")
        poll(lambda: _reconciled(cluster, bookinfo.name, "missing-tls").get("status") == "True",
             "the condition to clear once the Secret exists", timeout=30)
    finally:
        cluster.kubectl("-n", "istio-system", "delete", "secret", "missing-credential",
                        "--ignore-not-found")
        cluster.kubectl("-n", bookinfo.name, "delete", f"{ISTIO_GATEWAY},virtualservice",
                        "missing-tls", "--ignore-not-found")
