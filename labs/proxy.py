"""What a sidecar's Envoy really runs — the views of `istioctl proxy-config`, from Python.

    >>> from labs import proxy
    >>> proxy.routes("deploy/productpage-v1", "default")      # a table in a notebook
    >>> proxy.wait_for_config("deploy/productpage-v1", "default",
    ...                       proxy.mentions("outbound|9080|v1|reviews"))

`pod` is a pod name or `deploy/<name>` (the Deployment's first running pod). The Envoy admin API
is reached the way the backend allows: on the embedded cluster the sidecar's admin port (pod
annotation `meshlab.dev/proxy-ports`) is on 127.0.0.1; on kind or an existing cluster through
`kubectl exec <pod> -c istio-proxy -- pilot-agent request GET <path>`, like istioctl does.
"""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from html import escape
from typing import Any

from cryptography import x509

from labs.cluster import ClusterRef, current_cluster
from labs.embedded.mesh.state import PROXY_PORTS, SIDECAR_CONTAINER

Obj = dict[str, Any]
ADMIN_TIMEOUT_S = 5.0
_TIME = "%Y-%m-%dT%H:%M:%SZ"


class ProxyError(RuntimeError):
    """The proxy could not be asked; the message says what to fix."""


class ConfigTable(list[dict[str, str]]):
    """Rows (dicts keyed by istioctl's column names) that print as istioctl's table."""

    def __init__(self, columns: Iterable[str], rows: Iterable[dict[str, str]] = ()) -> None:
        super().__init__(rows)
        self.columns = tuple(columns)

    def column(self, name: str) -> list[str]:
        return [row[name] for row in self]

    def __str__(self) -> str:
        widths = [max([len(c), *(len(row[c]) for row in self)]) for c in self.columns]
        lines = [(" " * 5).join(f"{c:<{w}}" for c, w in zip(self.columns, widths, strict=True))]
        lines += [(" " * 5).join(f"{row[c]:<{w}}" for c, w in
                                 zip(self.columns, widths, strict=True)).rstrip()
                  for row in self]
        return "\n".join(line.rstrip() for line in lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{escape(row[c])}</td>" for c in self.columns)
                       + "</tr>" for row in self)
        return f"<table><tr>{head}</tr>{body}</table>"


# --- reaching the Envoy admin API -------------------------------------------------------------

def admin(pod: str, namespace: str = "default", path: str = "config_dump", *,
          cluster: ClusterRef | None = None) -> str:
    """GET `path` (e.g. "stats", "clusters", "config_dump?include_eds") from the pod's sidecar
    Envoy admin API; returns the body."""
    ref = cluster or current_cluster()
    obj = _pod(ref, pod, namespace)
    name = obj["metadata"]["name"]
    path = path.lstrip("/")
    if ref.embedded is not None:
        return _http_admin(_admin_port(obj), path, f"pod {name} in namespace {namespace}")
    result = ref.kubectl(f"--namespace={namespace}", "exec", name, "-c", SIDECAR_CONTAINER,
                         "--", "pilot-agent", "request", "GET", path, timeout=30)
    if result.returncode != 0:
        raise ProxyError(f"asking the sidecar of pod {name} in namespace {namespace} for "
                         f"/{path} failed: {result.stderr.strip()}")
    return result.stdout


def config_dump(pod: str, namespace: str = "default", *,
                cluster: ClusterRef | None = None) -> Obj:
    """The sidecar Envoy's whole `/config_dump` (bootstrap, listeners, clusters, routes,
    secrets), as a dict."""
    text = admin(pod, namespace, "config_dump", cluster=cluster)
    try:
        dump: Obj = json.loads(text)
    except ValueError:
        raise ProxyError(f"the sidecar of {pod} in namespace {namespace} answered /config_dump "
                         f"with something that is not JSON: {text[:200]!r}") from None
    return dump


def stats(pod: str, namespace: str = "default", *,
          cluster: ClusterRef | None = None) -> dict[str, int]:
    """Counters and gauges of the sidecar Envoy (`/stats`), e.g.
    `cluster.outbound|8000||httpbin.default.svc.cluster.local.upstream_rq_200`."""
    out: dict[str, int] = {}
    for line in admin(pod, namespace, "stats", cluster=cluster).splitlines():
        name, sep, value = line.rpartition(": ")
        if sep and value.strip().isdigit():
            out[name] = int(value)
    return out


def wait_for_config(pod: str, namespace: str, predicate: Callable[[Obj], bool],
                    timeout: float = 10, *, cluster: ClusterRef | None = None,
                    interval: float = 0.1) -> Obj:
    """Poll the sidecar's config_dump until `predicate(dump)` is true; returns that dump.
    Use it after `kubectl apply` so the next request already sees the new config."""
    ref = cluster or current_cluster()
    deadline = time.monotonic() + timeout
    while True:
        dump = config_dump(pod, namespace, cluster=ref)
        if predicate(dump):
            return dump
        if time.monotonic() > deadline:
            raise ProxyError(f"the sidecar of {pod} in namespace {namespace} did not get the "
                             f"expected config within {timeout:g}s; check the object's status "
                             f"(`kubectl get vs,dr -n {namespace} -o yaml`) and events")
        time.sleep(interval)


def mentions(text: str) -> Callable[[Obj], bool]:
    """A predicate for `wait_for_config`: the dynamic config contains `text` anywhere, e.g. a
    subset cluster name `outbound|9080|v2|reviews.default.svc.cluster.local`."""
    def found(dump: Obj) -> bool:
        return text in json.dumps(dump)
    return found


def _pod(ref: ClusterRef, pod: str, namespace: str) -> Obj:
    if pod.startswith(("deploy/", "deployment/")):
        deployment = pod.split("/", 1)[1]
        got = ref.kubectl(f"--namespace={namespace}", "get", "deployment", deployment, "-o",
                          "json")
        if got.returncode != 0:
            raise ProxyError(f"no Deployment {deployment!r} in namespace {namespace}: "
                             f"{got.stderr.strip()}")
        labels = json.loads(got.stdout)["spec"]["selector"].get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        listed = ref.kubectl(f"--namespace={namespace}", "get", "pods", "-l", selector,
                             "--field-selector=status.phase=Running", "-o", "json")
        items = json.loads(listed.stdout).get("items", []) if listed.returncode == 0 else []
        if not items:
            raise ProxyError(f"deploy/{deployment} in namespace {namespace} has no running "
                             f"pod; see `kubectl get pods -n {namespace} -l {selector}`")
        obj: Obj = items[0]
    else:
        got = ref.kubectl(f"--namespace={namespace}", "get", "pod", pod, "-o", "json")
        if got.returncode != 0:
            raise ProxyError(f"no pod {pod!r} in namespace {namespace}: {got.stderr.strip()} "
                             f"(pass a pod name from `kubectl get pods -n {namespace}` or "
                             f"deploy/<name>)")
        obj = json.loads(got.stdout)
    containers = [c["name"] for c in obj["spec"].get("containers", [])]
    if SIDECAR_CONTAINER not in containers:
        raise ProxyError(f"pod {obj['metadata']['name']} in namespace {namespace} has no "
                         f"{SIDECAR_CONTAINER} sidecar (containers: {', '.join(containers)}); "
                         f"label the namespace istio-injection=enabled and restart the "
                         f"workload with `kubectl rollout restart`")
    return obj


def _admin_port(pod: Obj) -> int:
    raw = (pod["metadata"].get("annotations") or {}).get(PROXY_PORTS)
    try:
        return int(json.loads(raw)["admin"])
    except (TypeError, ValueError, KeyError):
        raise ProxyError(f"pod {pod['metadata']['name']} has no sidecar admin port yet "
                         f"(annotation {PROXY_PORTS} is {raw!r}); wait until the pod is "
                         f"Running: `kubectl wait --for=condition=Ready pod/"
                         f"{pod['metadata']['name']}`") from None


def _http_admin(port: int, path: str, what: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}",
                                    timeout=ADMIN_TIMEOUT_S) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as exc:
        raise ProxyError(f"the sidecar of {what} answered /{path} with {exc.code}: "
                         f"{exc.read().decode(errors='replace')[:200]}") from None
    except OSError as exc:
        raise ProxyError(f"the sidecar of {what} does not answer on its admin port {port} "
                         f"({exc}); is the pod Running 2/2? `kubectl get pods`") from None


# --- the istioctl views ------------------------------------------------------------------------

def listeners(pod: str, namespace: str = "default", *,
              cluster: ClusterRef | None = None) -> ConfigTable:
    """`istioctl proxy-config listeners`: one row per filter chain."""
    return listener_table(config_dump(pod, namespace, cluster=cluster))


def routes(pod: str, namespace: str = "default", *,
           cluster: ClusterRef | None = None) -> ConfigTable:
    """`istioctl proxy-config routes`: one row per route of each virtual host, plus the
    DESTINATION it sends to (cluster, or weighted clusters)."""
    return route_table(config_dump(pod, namespace, cluster=cluster))


def clusters(pod: str, namespace: str = "default", *,
             cluster: ClusterRef | None = None) -> ConfigTable:
    """`istioctl proxy-config clusters`: one row per Envoy cluster."""
    return cluster_table(config_dump(pod, namespace, cluster=cluster))


def secrets(pod: str, namespace: str = "default", *,
            cluster: ClusterRef | None = None) -> ConfigTable:
    """`istioctl proxy-config secret`: the workload certificate and the root CA."""
    return secret_table(config_dump(pod, namespace, cluster=cluster))


def _section(dump: Obj, kind: str) -> Obj:
    for config in dump.get("configs", []):
        if config.get("@type", "").endswith(f".{kind}"):
            return dict(config)
    return {}


def listener_table(dump: Obj) -> ConfigTable:
    table = ConfigTable(("NAME", "ADDRESSES", "PORT", "MATCH", "DESTINATION"))
    section = _section(dump, "ListenersConfigDump")
    found = [s.get("listener", {}) for s in section.get("static_listeners", [])]
    found += [d.get("active_state", {}).get("listener", {})
              for d in section.get("dynamic_listeners", [])]
    for listener in found:
        socket = listener.get("address", {}).get("socket_address", {})
        for chain in listener.get("filter_chains", []):
            table.append({"NAME": listener.get("name", ""),
                          "ADDRESSES": socket.get("address", ""),
                          "PORT": str(socket.get("port_value", "")),
                          "MATCH": _chain_match(chain.get("filter_chain_match") or {}),
                          "DESTINATION": _chain_destination(chain)})
    return table


def _chain_match(match: Obj) -> str:
    parts = []
    if match.get("transport_protocol"):
        parts.append(f"Trans: {match['transport_protocol']}")
    if match.get("application_protocols"):
        parts.append(f"App: {','.join(match['application_protocols'])}")
    if match.get("server_names"):
        parts.append(f"SNI: {','.join(match['server_names'])}")
    if match.get("destination_port"):
        parts.append(f"Port: {match['destination_port']}")
    return "; ".join(parts) or "ALL"


def _chain_destination(chain: Obj) -> str:
    for network_filter in chain.get("filters", []):
        config = network_filter.get("typed_config", {})
        if "rds" in config:
            return f"Route: {config['rds'].get('route_config_name', '')}"
        if "route_config" in config:
            return f"Inline Route: {config['route_config'].get('name', '')}"
        if "cluster" in config:
            return f"Cluster: {config['cluster']}"
    return "-"


def route_table(dump: Obj) -> ConfigTable:
    table = ConfigTable(("NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE",
                         "DESTINATION"))
    section = _section(dump, "RoutesConfigDump")
    configs = [c.get("route_config", {}) for c in section.get("dynamic_route_configs", [])]
    seen = set()
    for static in section.get("static_route_configs", []):
        config = static.get("route_config", {})
        if config.get("name") not in seen:  # one per filter chain: show each config once
            seen.add(config.get("name"))
            configs.append(config)
    for config in configs:
        for vhost in config.get("virtual_hosts", []):
            for route in vhost.get("routes", []):
                table.append({"NAME": config.get("name", ""), "VHOST NAME": vhost.get("name", ""),
                              "DOMAINS": _domains(vhost.get("domains", [])),
                              "MATCH": _route_match(route.get("match", {})),
                              "VIRTUAL SERVICE": _istio_config(route),
                              "DESTINATION": _route_destination(route)})
    return table


def _domains(domains: list[str]) -> str:
    """istioctl's short form: names without ports or IPs, shortest first, two shown."""
    names = []
    for domain in domains:
        host = re.sub(r":\d+$", "", domain)
        if host not in names and not re.fullmatch(r"[\d.]+|\[[0-9a-fA-F:]+\]", host):
            names.append(host)
    names.sort(key=len)
    shown = ", ".join(names[:2])
    return f"{shown} + {len(names) - 2} more..." if len(names) > 2 else shown


def _route_match(match: Obj) -> str:
    if "path" in match:
        text = match["path"]
    elif "prefix" in match:
        text = f"{match['prefix']}*"
    elif "safe_regex" in match:
        text = match["safe_regex"].get("regex", "")
    elif "connect_matcher" in match:
        text = "CONNECT"
    else:
        text = "*"
    conditions = [_header_condition(h) for h in match.get("headers", [])]
    conditions += [f"?{q.get('name', '')}" for q in match.get("query_parameters", [])]
    return f"{text} when {' and '.join(conditions)}" if conditions else text


def _header_condition(header: Obj) -> str:
    name = header.get("name", "")
    matcher = header.get("string_match", {})
    negate = "!" if header.get("invert_match") else ""
    if "exact" in matcher:
        return f"{negate}{name}={matcher['exact']}"
    if "prefix" in matcher:
        return f"{negate}{name}={matcher['prefix']}*"
    if "safe_regex" in matcher:
        return f"{negate}{name}~{matcher['safe_regex'].get('regex', '')}"
    return f"{negate}{name}"


def _route_destination(route: Obj) -> str:
    action = route.get("route")
    if action is None:
        if "direct_response" in route:
            return f"direct response {route['direct_response'].get('status', '')}"
        if "redirect" in route:
            return "redirect"
        return "-"
    if "weighted_clusters" in action:
        return ", ".join(f"{c.get('name', '')} {c.get('weight', 0)}"
                         for c in action["weighted_clusters"].get("clusters", []))
    return str(action.get("cluster", "-"))


def _istio_config(resource: Obj) -> str:
    """`name.namespace` of the Istio object a resource came from, when the control plane
    recorded it in metadata (as istiod does: filter_metadata.istio.config)."""
    path = (resource.get("metadata", {}).get("filter_metadata", {}).get("istio", {})
            .get("config", ""))
    found = re.match(r".*/namespaces/([^/]+)/[^/]+/([^/]+)$", str(path))
    return f"{found.group(2)}.{found.group(1)}" if found else ""


def cluster_table(dump: Obj) -> ConfigTable:
    table = ConfigTable(("SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE",
                         "DESTINATION RULE"))
    section = _section(dump, "ClustersConfigDump")
    found = [s.get("cluster", {}) for s in section.get("static_clusters", [])]
    found += [d.get("cluster", {}) for d in section.get("dynamic_active_clusters", [])]
    for cluster in found:
        name = str(cluster.get("name", ""))
        parts = name.split("|")
        if len(parts) == 4 and parts[0] in ("inbound", "outbound"):
            direction, port, subset, fqdn = parts
        else:
            direction, port, subset, fqdn = "-", "-", "-", name
        ctype = cluster.get("type") or ("EDS" if "eds_cluster_config" in cluster else "STATIC")
        table.append({"SERVICE FQDN": fqdn, "PORT": port, "SUBSET": subset or "-",
                      "DIRECTION": direction, "TYPE": str(ctype),
                      "DESTINATION RULE": _istio_config(cluster)})
    return table


def secret_table(dump: Obj) -> ConfigTable:
    table = ConfigTable(("RESOURCE NAME", "TYPE", "STATUS", "VALID CERT", "SERIAL NUMBER",
                         "NOT AFTER", "NOT BEFORE"))
    section = _section(dump, "SecretsConfigDump")
    entries = [(s, "ACTIVE") for s in section.get("dynamic_active_secrets", [])]
    entries += [(s, "WARMING") for s in section.get("dynamic_warming_secrets", [])]
    for entry, status in entries:
        secret = entry.get("secret", {})
        if "tls_certificate" in secret:
            kind, source = "Cert Chain", secret["tls_certificate"].get("certificate_chain", {})
        elif "validation_context" in secret:
            kind, source = "CA", secret["validation_context"].get("trusted_ca", {})
        else:
            kind, source = "", {}
        row = {"RESOURCE NAME": str(entry.get("name", "")), "TYPE": kind, "STATUS": status,
               "VALID CERT": "false", "SERIAL NUMBER": "", "NOT AFTER": "", "NOT BEFORE": ""}
        cert = _first_certificate(source)
        if cert is not None:
            now = datetime.now(UTC)
            row.update({
                "VALID CERT": str(cert.not_valid_before_utc <= now <= cert.not_valid_after_utc
                                  ).lower(),
                "SERIAL NUMBER": format(cert.serial_number, "x"),
                "NOT AFTER": cert.not_valid_after_utc.strftime(_TIME),
                "NOT BEFORE": cert.not_valid_before_utc.strftime(_TIME)})
        table.append(row)
    return table


def _first_certificate(source: Obj) -> x509.Certificate | None:
    if "inline_string" in source:
        pem = str(source["inline_string"]).encode()
    elif "inline_bytes" in source:
        pem = base64.b64decode(source["inline_bytes"])
    else:
        return None
    try:
        return x509.load_pem_x509_certificates(pem)[0]
    except ValueError:
        return None
