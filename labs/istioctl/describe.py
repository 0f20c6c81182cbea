"""`istioctl x describe pod POD[.NS]`: the pod, the Services selecting it, the
DestinationRules and VirtualServices for those Services, and the effective PeerAuthentication,
with the lines and layout of upstream's `istioctl/pkg/describe/describe.go` (release-1.30:
`printPod`, `describePodServices`, `printDestinationRule`, `printVirtualService`,
`printConfigs`, `printPeerAuthentication`)."""

from __future__ import annotations

import json
from typing import Any

from labs.cluster import ClusterRef
from labs.istio_names import SIDECAR_CONTAINER

Obj = dict[str, Any]
RULER = "--------------------\n"
MODES = ("UNSET", "DISABLE", "PERMISSIVE", "STRICT")


class DescribeError(RuntimeError):
    """The pod or its configuration could not be read; the message says what to fix."""


def _get(ref: ClusterRef, *args: str) -> Obj:
    got = ref.kubectl("get", *args, "-o", "json")
    if got.returncode != 0:
        raise DescribeError(got.stderr.strip().removeprefix("Error from server (NotFound): "))
    result: Obj = json.loads(got.stdout)
    return result


def _kname(meta: Obj, namespace: str) -> str:
    return meta["name"] if meta.get("namespace") == namespace else (
        f"{meta['name']}.{meta.get('namespace')}")


def _selects(selector: Obj, labels: Obj) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def describe_pod(ref: ClusterRef, name: str, namespace: str, istio_namespace: str) -> str:
    pod = _get(ref, f"--namespace={namespace}", "pod", name)
    labels = pod["metadata"].get("labels") or {}
    out = [_pod_lines(pod, namespace)]
    containers = [c["name"] for c in pod["spec"].get("containers", [])]
    if SIDECAR_CONTAINER not in containers:
        out.append(f"WARNING: {_kname(pod['metadata'], namespace)} is not part of mesh; "
                   "no Istio sidecar\n")
        return "".join(out)
    services = [s for s in _get(ref, f"--namespace={namespace}", "services")["items"]
                if _selects(s["spec"].get("selector") or {}, labels)]
    rules = _get(ref, "destinationrules.networking.istio.io", "--all-namespaces")["items"]
    routes = _get(ref, "virtualservices.networking.istio.io", "--all-namespaces")["items"]
    for service in services:
        out.append(RULER)
        out.append(_service_lines(service, pod, namespace))
        hosts = _hosts(service)
        for rule in rules:
            if _fqdn(rule["spec"].get("host", ""), rule["metadata"]["namespace"]) in hosts:
                out.append(_rule_lines(rule, labels, namespace))
        for route in routes:
            spec = route["spec"]
            if "mesh" in (spec.get("gateways") or ["mesh"]) and any(
                    _fqdn(h, route["metadata"]["namespace"]) in hosts
                    for h in spec.get("hosts") or []):
                out.append(_route_lines(route, namespace))
    out.append(RULER)
    out.append(_peer_authentication(ref, pod, namespace, istio_namespace))
    return "".join(out)


def _pod_lines(pod: Obj, namespace: str) -> str:
    ports = [f"{p['containerPort']}{_protocol_suffix(p)} ({c['name']})"
             for c in pod["spec"].get("containers", []) for p in c.get("ports") or []]
    revision = (pod["metadata"].get("labels") or {}).get("istio.io/rev") or (
        pod["metadata"].get("annotations") or {}).get("istio.io/rev", "default")
    text = f"Pod: {_kname(pod['metadata'], namespace)}\n   Pod Revision: {revision}\n"
    text += (f"   Pod Ports: {', '.join(ports)}\n" if ports else
             "   Pod does not expose ports\n")
    phase = pod.get("status", {}).get("phase")
    if phase != "Running":
        text += f"   Pod is not Running ({phase})\n"
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if not status.get("ready"):
            text += (f"WARNING: Pod {_kname(pod['metadata'], namespace)} Container "
                     f"{status['name']} NOT READY\n")
    return text


def _protocol_suffix(port: Obj) -> str:
    """`/UDP` etc.; TCP is not printed."""
    protocol = port.get("protocol", "TCP")
    return "" if protocol == "TCP" else f"/{protocol}"


def _service_lines(service: Obj, pod: Obj, namespace: str) -> str:
    text = f"Service: {_kname(service['metadata'], namespace)}\n"
    named = {p.get("name"): p["containerPort"] for c in pod["spec"].get("containers", [])
             for p in c.get("ports") or []}
    for port in service["spec"].get("ports") or []:
        target = port.get("targetPort", port["port"])
        number = named.get(target, 0) if isinstance(target, str) else int(target)
        protocol = (port.get("appProtocol") or port.get("name", "").split("-")[0]).upper() \
            or "TCP"
        if protocol not in ("HTTP", "HTTP2", "HTTPS", "GRPC", "TCP", "TLS", "UDP"):
            protocol = "Unsupported"
        text += (f"   Port: {port.get('name', '')} {port['port']}/{protocol} targets pod port "
                 f"{number}\n")
    return text


def _fqdn(host: str, namespace: str) -> str:
    return host if "." in host else f"{host}.{namespace}.svc.cluster.local"


def _hosts(service: Obj) -> set[str]:
    meta = service["metadata"]
    return {f"{meta['name']}.{meta['namespace']}.svc.cluster.local"}


def _rule_lines(rule: Obj, labels: Obj, namespace: str) -> str:
    spec = rule["spec"]
    text = (f"DestinationRule: {_kname(rule['metadata'], namespace)} for "
            f"{json.dumps(spec['host'])}\n")
    subsets = spec.get("subsets") or []
    matching = [s["name"] for s in subsets if all(labels.get(k) == v for k, v in
                                                  (s.get("labels") or {}).items())]
    other = [s["name"] for s in subsets if s["name"] not in matching]
    if subsets:
        if not matching:
            text += ("   WARNING POD DOES NOT MATCH ANY SUBSETS.  (Non matching subsets "
                     f"{','.join(other)})\n")
        text += f"   Matching subsets: {','.join(matching)}\n"
        if other:
            text += f"      (Non-matching subsets {','.join(other)})\n"
    mode = (spec.get("trafficPolicy") or {}).get("tls", {}).get("mode")
    if not spec.get("trafficPolicy"):
        text += "   No Traffic Policy\n"
    elif mode:
        text += f"   Traffic Policy TLS Mode: {mode}\n"
    return text


def _route_lines(route: Obj, namespace: str) -> str:
    spec = route["spec"]
    text = f"VirtualService: {_kname(route['metadata'], namespace)}\n"
    if spec.get("http"):
        text += f"   {len(spec['http'])} HTTP route(s)\n"
    if spec.get("tcp"):
        text += f"   {len(spec['tcp'])} TCP route(s)\n"
    return text


def _peer_authentication(ref: ClusterRef, pod: Obj, namespace: str, root: str) -> str:
    """Workload > namespace > root namespace policy, as Istio merges them (mode only)."""
    policies = _get(ref, "peerauthentications.security.istio.io", "--all-namespaces")["items"]
    labels = pod["metadata"].get("labels") or {}
    applied = []
    mode = "PERMISSIVE"
    for scope in (root, namespace, "workload"):
        for policy in policies:
            meta, spec = policy["metadata"], policy.get("spec") or {}
            selector = (spec.get("selector") or {}).get("matchLabels")
            here = (scope == "workload" and meta["namespace"] == namespace and selector
                    and _selects(selector, labels)) or (
                scope != "workload" and meta["namespace"] == scope and not selector)
            if here:
                applied.append(f"{meta['name']}.{meta['namespace']}")
                wanted = (spec.get("mtls") or {}).get("mode", "UNSET")
                if wanted in MODES[1:]:
                    mode = wanted
    text = f"Effective PeerAuthentication:\n   Workload mTLS mode: {mode}\n"
    if applied:
        text += f"Applied PeerAuthentication:\n   {', '.join(applied)}\n"
    return text
