"""In-cluster URLs (`http://flagger-loadtester.test/`, `http://prometheus.istio-system:9090`)
to where the embedded cluster really serves them.

Flagger runs in a pod and lets cluster DNS and kube-proxy take `svc.ns:port` to a pod. In the
embedded cluster every pod listens on 127.0.0.1 at host ports, which the Endpoints controller
lists (labs/embedded/controllers/endpoints.py); so a URL's host is looked up as a Service, its
port matched to a Service port, and that port's name to the Endpoints' port, as kube-proxy
does. Addresses that are not Service names (127.0.0.1, localhost) are used as written.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit, urlunsplit

from labs.embedded.apiserver.api import ObjectApi

# Flagger's own namespace (kustomize/istio installs it in istio-system): where a bare Service
# name in a URL is looked up, as the pod's DNS search path would.
FLAGGER_NAMESPACE = "istio-system"
CLUSTER_SUFFIXES = (".svc.cluster.local", ".svc")


class ResolveError(Exception):
    """What a Go HTTP client would have said when dialling the URL failed."""


def _service_and_namespace(host: str) -> tuple[str, str] | None:
    for suffix in CLUSTER_SUFFIXES:
        if host.endswith(suffix):
            host = host[: -len(suffix)]
            break
    parts = host.split(".")
    if len(parts) == 1:
        return parts[0], FLAGGER_NAMESPACE
    if len(parts) == 2:
        return parts[0], parts[1]
    return None


def _is_address(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def resolve_url(api: ObjectApi, url: str) -> str:
    """`url` with its host:port replaced by a ready endpoint's 127.0.0.1:hostPort.

    Raises ResolveError with Go's wording: `dial tcp: lookup <host>: no such host` for a name
    that is no Service, `connect: connection refused` when the Service has no ready endpoint."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ResolveError(f'unsupported protocol scheme "{parts.scheme}"' if parts.scheme
                           else f'parse "{url}": missing protocol scheme')
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if _is_address(host):
        return url
    named = _service_and_namespace(host)
    svc_rt = api.registry.lookup("", "v1", "services")
    ep_rt = api.registry.lookup("", "v1", "endpoints")
    assert svc_rt is not None and ep_rt is not None
    service = api.find(svc_rt, named[1], named[0]) if named else None
    if service is None or named is None:
        raise ResolveError(f"dial tcp: lookup {host}: no such host")
    spec_port = next((p for p in (service.get("spec") or {}).get("ports") or []
                      if int(p.get("port", 0)) == port), None)
    endpoints = api.find(ep_rt, named[1], named[0]) or {}
    if spec_port is not None:
        for subset in endpoints.get("subsets") or []:
            for ep_port in subset.get("ports") or []:
                if ep_port.get("name", "") == spec_port.get("name", "") and \
                        subset.get("addresses"):
                    address = subset["addresses"][0]["ip"]
                    netloc = f"{address}:{ep_port['port']}"
                    return urlunsplit((parts.scheme, netloc, parts.path, parts.query,
                                       parts.fragment))
    cluster_ip = (service.get("spec") or {}).get("clusterIP") or host
    raise ResolveError(f"dial tcp {cluster_ip}:{port}: connect: connection refused")
