"""Fields of VirtualService, DestinationRule and ServiceEntry the embedded mesh does not emulate.

The control plane reports each path as a warning event and a status condition, so a learner
never mistakes an ignored field for one that had no effect.
"""

from __future__ import annotations

from ...kube_state import Obj
from .hosts import is_loopback

HTTP_PROTOCOLS = {"", "HTTP", "HTTP2", "GRPC"}
HTTP_ROUTE_FIELDS = ("delegate", "corsPolicy")
CONNECTION_POOL_FIELDS = {"http": ("h2UpgradePolicy", "useClientProtocol",
                                   "maxConcurrentStreams")}
OUTLIER_FIELDS = ("consecutiveErrors", "splitExternalLocalOriginErrors",
                  "consecutiveLocalOriginFailures")


def unsupported_fields(obj: Obj) -> list[str]:
    """JSON paths of set fields that have no effect here, e.g. `spec.tcp`,
    `spec.http[0].corsPolicy`, `spec.trafficPolicy.tls.mode=SIMPLE`."""
    spec = obj.get("spec") or {}
    kind = obj.get("kind")
    if kind == "VirtualService":
        return _virtual_service(spec)
    if kind == "DestinationRule":
        return _destination_rule(spec)
    if kind == "ServiceEntry":
        return _service_entry(spec)
    return []


def _virtual_service(spec: Obj) -> list[str]:
    out = [f"spec.{key}" for key in ("tcp", "tls") if spec.get(key)]
    out += [f"spec.gateways={g}" for g in spec.get("gateways") or [] if g != "mesh"]
    for i, http in enumerate(spec.get("http") or []):
        where = f"spec.http[{i}]"
        out += [f"{where}.{key}" for key in HTTP_ROUTE_FIELDS if http.get(key)]
        for j, match in enumerate(http.get("match") or []):
            out += [f"{where}.match[{j}].gateways={g}" for g in match.get("gateways") or []
                    if g != "mesh"]
            out += [f"{where}.match[{j}].headers.{name}" for name in match.get("headers") or {}
                    if name.startswith("@")]
        fault = http.get("fault") or {}
        if (fault.get("delay") or {}).get("exponentialDelay"):
            out.append(f"{where}.fault.delay.exponentialDelay")
        for key in ("grpcStatus", "http2Error"):
            if (fault.get("abort") or {}).get(key):
                out.append(f"{where}.fault.abort.{key}")
        if (http.get("retries") or {}).get("retryRemoteLocalities"):
            out.append(f"{where}.retries.retryRemoteLocalities")
    return out


def _destination_rule(spec: Obj) -> list[str]:
    out = _traffic_policy(spec.get("trafficPolicy"), "spec.trafficPolicy")
    for i, subset in enumerate(spec.get("subsets") or []):
        out += _traffic_policy(subset.get("trafficPolicy"), f"spec.subsets[{i}].trafficPolicy")
    return out


def _traffic_policy(policy: Obj | None, where: str) -> list[str]:
    if not policy:
        return []
    out = _policy_parts(policy, where)
    out += [f"{where}.{key}" for key in ("proxyProtocol", "tunnel") if policy.get(key)]
    for i, setting in enumerate(policy.get("portLevelSettings") or []):
        out += _policy_parts(setting, f"{where}.portLevelSettings[{i}]")
    return out


def _policy_parts(policy: Obj, where: str) -> list[str]:
    out = []
    mode = (policy.get("tls") or {}).get("mode")
    if mode in ("SIMPLE", "MUTUAL"):
        out.append(f"{where}.tls.mode={mode}")
    lb = policy.get("loadBalancer") or {}
    if lb.get("simple") == "PASSTHROUGH":
        out.append(f"{where}.loadBalancer.simple=PASSTHROUGH")
    if lb.get("localityLbSetting"):
        out.append(f"{where}.loadBalancer.localityLbSetting")
    pool = policy.get("connectionPool") or {}
    for part, keys in CONNECTION_POOL_FIELDS.items():
        out += [f"{where}.connectionPool.{part}.{key}" for key in keys
                if (pool.get(part) or {}).get(key)]
    outlier = policy.get("outlierDetection") or {}
    out += [f"{where}.outlierDetection.{key}" for key in OUTLIER_FIELDS if outlier.get(key)]
    return out


def _service_entry(spec: Obj) -> list[str]:
    out = [f"spec.{key}" for key in ("workloadSelector", "subjectAltNames") if spec.get(key)]
    if spec.get("resolution", "NONE") == "NONE":
        out.append("spec.resolution=NONE")
    for i, endpoint in enumerate(spec.get("endpoints") or []):
        address = str(endpoint.get("address", ""))
        if not is_loopback(address):
            out.append(f"spec.endpoints[{i}].address={address}")
    if spec.get("resolution") == "DNS" and not spec.get("endpoints"):
        out += [f"spec.hosts={h}" for h in spec.get("hosts") or [] if not is_loopback(str(h))]
    for i, port in enumerate(spec.get("ports") or []):
        protocol = str(port.get("protocol", "")).upper()
        if protocol not in HTTP_PROTOCOLS:
            out.append(f"spec.ports[{i}].protocol={protocol}")
    return out
