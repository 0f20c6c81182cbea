"""TLS transport sockets for mesh mutual TLS (Istio's ISTIO_MUTUAL, Linkerd's meshed TLS),
reading certificates through file-based SDS.

The mesh CA rewrites the SDS files when it rotates a certificate; Envoy watches the directory and
swaps the secret without dropping connections, so nothing here embeds key material.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from .proxyfiles import ProxyFiles

Obj = dict[str, Any]
TLS_SOCKET = "envoy.transport_sockets.tls"
UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DOWNSTREAM_TLS = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext")
CERT_SECRET = "default"
ROOT_SECRET = "ROOTCA"


def pem_source(pem: str) -> Obj:
    """A DataSource for a certificate or key as istio-agent's SDS sends them: base64
    `inline_bytes` — what Istio's docs decode with `istioctl proxy-config secret POD -o json |
    jq -r '…certificateChain.inlineBytes' | base64 --decode`."""
    return {"inline_bytes": base64.b64encode(pem.encode()).decode()}


def file_config_source(path: Path) -> Obj:
    """A file Envoy watches for a resource (SDS secrets, LDS, CDS, RDS): replaced atomically."""
    return {"path_config_source": {"path": str(path),
                                   "watched_directory": {"path": str(path.parent)}},
            "resource_api_version": "V3"}


def _common_tls_context(files: ProxyFiles, peer_sans: list[str] | None,
                        san_type: str = "URI", alpn: list[str] | None = None) -> Obj:
    validation: Obj = {}
    if peer_sans:
        validation["match_typed_subject_alt_names"] = [
            {"san_type": san_type, "matcher": {"exact": san}} for san in peer_sans]
    return {
        **({"alpn_protocols": alpn} if alpn else {}),
        "tls_certificate_sds_secret_configs": [
            {"name": CERT_SECRET, "sds_config": file_config_source(files.cert_sds)}],
        "combined_validation_context": {
            "default_validation_context": validation,
            "validation_context_sds_secret_config": {
                "name": ROOT_SECRET, "sds_config": file_config_source(files.root_sds)},
        },
    }


def mutual_upstream(files: ProxyFiles, peer_sans: list[str], sni: str,
                    san_type: str = "URI", alpn: list[str] | None = None) -> Obj:
    """Client side of mesh mTLS: our workload cert, the mesh root, the peer's SANs (Istio's
    SPIFFE URIs; Linkerd's identity names, `san_type` "DNS"), offering `alpn`."""
    return {"name": TLS_SOCKET, "typed_config": {
        "@type": UPSTREAM_TLS,
        "common_tls_context": _common_tls_context(files, peer_sans, san_type, alpn),
        "sni": sni,
    }}


def mutual_downstream(files: ProxyFiles, alpn: list[str] | None = None) -> Obj:
    """Server side of mesh mTLS: a client certificate signed by the mesh root is required."""
    return {"name": TLS_SOCKET, "typed_config": {
        "@type": DOWNSTREAM_TLS,
        "require_client_certificate": True,
        "common_tls_context": _common_tls_context(files, None, alpn=alpn),
    }}


def outbound_sni(port: int, subset: str, fqdn: str) -> str:
    """Istio's SNI for a mesh destination, e.g. `outbound_.9080_.v1_.reviews.default.svc...`."""
    return f"outbound_.{port}_.{subset}_.{fqdn}"
