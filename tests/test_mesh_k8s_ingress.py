"""Does a Kubernetes Ingress of class `istio` work in the embedded cluster as Istio serves it?

httpbin runs in a meshed namespace; the Ingresses are served by the `istio-ingressgateway` the
daemon installs, and the test process sends requests to its http2/https node ports with the
Ingress host in the Host header (SNI for TLS), as Istio's Kubernetes Ingress task does.
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Kubectl, poll
from mesh_support import (
    MeshNamespace,
    http_get,
    https_get,
    mesh_namespace_fixture,
    node_port,
    self_signed_cert,
)

from labs.cluster import ClusterRef

HOST = "httpbin.example.com"
SECURE_HOST = "secure.example.com"
INGRESS = f"""\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: httpbin
spec:
  ingressClassName: istio
  rules:
  - host: {HOST}
    http:
      paths:
      - path: /headers
        pathType: Exact
        backend:
          service:
            name: httpbin
            port:
              number: 8000
      - path: /status
        pathType: Prefix
        backend:
          service:
            name: httpbin
            port:
              name: http
  - host: segments.example.com
    http:
      paths:
      - path: /stat
        pathType: Prefix
        backend:
          service:
            name: httpbin
            port:
              number: 8000
      - path: /headers/
        pathType: Prefix
        backend:
          service:
            name: httpbin
            port:
              number: 8000
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: other-class
spec:
  ingressClassName: nginx
  rules:
  - host: other.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: httpbin
            port:
              number: 8000
"""

httpbin = mesh_namespace_fixture("httpbin", prefix="k8s-ingress")


def _gateway_port(cluster: ClusterRef, name: str) -> int:
    return node_port(cluster, "istio-system", "istio-ingressgateway", name)


def test_istio_ingress_class_is_installed(cluster: ClusterRef) -> None:
    ingress_class = json.loads(Kubectl(cluster, "default")("get", "ingressclass", "istio",
                                                          "-o", "json"))
    assert ingress_class["spec"]["controller"] == "istio.io/ingress-controller"


def test_ingress_routes_by_host_and_path(cluster: ClusterRef, httpbin: MeshNamespace) -> None:
    httpbin.apply(INGRESS)
    url = f"http://127.0.0.1:{_gateway_port(cluster, 'http2')}"
    host = {"Host": HOST}
    poll(lambda: http_get(f"{url}/headers", host)[0] == 200, "/headers through the Ingress",
         timeout=30)
    _, body = http_get(f"{url}/headers", host)
    assert json.loads(body)["headers"]["Host"] == [HOST]
    assert http_get(f"{url}/status/418", host)[0] == 418  # Prefix, port by name
    # Prefix matches whole path segments: /stat does not cover /status/418, /headers/ covers
    # /headers (Istio's path-separated prefix).
    segments = {"Host": "segments.example.com"}
    assert http_get(f"{url}/status/418", segments)[0] == 404
    assert http_get(f"{url}/headers", segments)[0] == 200
    assert http_get(f"{url}/headers/more", host)[0] == 404  # Exact
    assert http_get(f"{url}/headers", {"Host": "unknown.example.com"})[0] == 404
    assert http_get(f"{url}/status/200", {"Host": "other.example.com"})[0] == 404  # nginx class

    def address() -> str:
        out = httpbin.kubectl("get", "ingress", "httpbin", "-o",
                              "jsonpath={.status.loadBalancer.ingress[0].ip}")
        return out
    assert poll(address, "the Ingress's load balancer address", timeout=15) == "127.0.0.1"
    other = httpbin.kubectl("get", "ingress", "other-class", "-o", "jsonpath={.status}")
    assert "127.0.0.1" not in other


def test_tls_ingress_with_a_generated_certificate(cluster: ClusterRef, httpbin: MeshNamespace,
                                                  tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path, SECURE_HOST)
    system = Kubectl(cluster, "istio-system")
    system("create", "secret", "tls", "secure-credential", f"--cert={cert}", f"--key={key}")
    try:
        httpbin.apply(f"""\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: secure
spec:
  ingressClassName: istio
  tls:
  - hosts: [{SECURE_HOST}]
    secretName: secure-credential
  rules:
  - host: {SECURE_HOST}
    http:
      paths:
      - path: /status
        pathType: Prefix
        backend:
          service:
            name: httpbin
            port:
              number: 8000
""")
        port = _gateway_port(cluster, "https")
        poll(lambda: https_get(port, cert, SECURE_HOST, "/status/200") == 200,
             "httpbin over HTTPS through the Ingress", timeout=30)
        assert https_get(port, cert, SECURE_HOST, "/elsewhere") == 404
    finally:
        system.run("delete", "secret", "secure-credential")
        httpbin.kubectl("delete", "ingress", "secure", "--ignore-not-found")
