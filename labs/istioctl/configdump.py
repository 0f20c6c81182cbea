"""The tables of `istioctl proxy-config`, built from a sidecar Envoy's `/config_dump` (and
`/clusters?format=json` for endpoints); shared by the `istioctl` command and `labs.proxy`.

Each builder follows the upstream writer named in its docstring (istio/istio release-1.30,
`istioctl/pkg/writer/...`): same columns, cell texts, filters and row order. Rows are dicts keyed
by column name; a row may carry more keys than the table prints (`labs.proxy` shows the listener
NAME and the route DESTINATION in notebooks, which `istioctl` leaves out).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any

import yaml
from cryptography import x509

from labs.istioctl.tabwriter import render

Obj = dict[str, Any]
HTTP_FILTER = "envoy.filters.network.http_connection_manager"
TCP_FILTER = "envoy.filters.network.tcp_proxy"
BLACK_HOLE = "BlackHoleCluster"
PASSTHROUGH = "PassthroughCluster"
_RFC3339 = "%Y-%m-%dT%H:%M:%SZ"


class ConfigTable(list[Obj]):
    """Rows that print as istioctl's table (Go tabwriter layout, header first)."""

    def __init__(self, columns: Iterable[str], rows: Iterable[Obj] = (), padding: int = 5
                 ) -> None:
        super().__init__(rows)
        self.columns = tuple(columns)
        self.padding = padding

    def column(self, name: str) -> list[str]:
        return [row[name] for row in self]

    def select(self, columns: Iterable[str]) -> ConfigTable:
        """The same rows shown with other columns (e.g. with the extra keys a row carries)."""
        return ConfigTable(columns, self, self.padding)

    def text(self) -> str:
        """Exactly what istioctl prints, trailing newline included."""
        lines = [list(self.columns)] + [[str(row[c]) for c in self.columns] for row in self]
        return render(lines, self.padding)

    def __str__(self) -> str:
        return self.text().rstrip("\n")

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{escape(str(row[c]))}</td>"
                                        for c in self.columns) + "</tr>" for row in self)
        return f"<table><tr>{head}</tr>{body}</table>"


def section(dump: Obj, kind: str) -> Obj:
    """One `configs[]` entry of a config_dump by type, e.g. "ClustersConfigDump"."""
    for config in dump.get("configs", []):
        if str(config.get("@type", "")).endswith(f".{kind}"):
            return dict(config)
    return {}


def istio_config(resource: Obj) -> str:
    """`name.namespace` of the Istio object a resource came from: `describeManagement` and
    `renderConfig` in upstream's `configdump/route.go` (metadata filter_metadata.istio.config,
    `/apis/networking.istio.io/<v>/namespaces/<ns>/<kind>/<name>`)."""
    path = str(resource.get("metadata", {}).get("filter_metadata", {}).get("istio", {})
               .get("config", ""))
    if not path:
        return ""
    if not path.startswith("/apis/networking.istio.io/"):
        return "<unknown>"
    pieces = path.split("/")
    return f"{pieces[7]}.{pieces[5]}" if len(pieces) == 8 else ""


# --- clusters -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClusterFilter:
    """`--fqdn`, `--port`, `--subset`, `--direction`: substring tests on the cluster name, as
    `ClusterFilter.Verify` in upstream's `configdump/cluster.go`."""

    fqdn: str = ""
    port: int = 0
    subset: str = ""
    direction: str = ""

    def verify(self, name: str) -> bool:
        return ((not self.fqdn or self.fqdn in name)
                and (not self.direction or self.direction in name)
                and (not self.subset or self.subset in name)
                and (not self.port or f"|{self.port}|" in name))


def clusters(dump: Obj) -> list[Obj]:
    """Dynamic then static clusters, sorted as `retrieveSortedClusterSlice` (upstream
    `configdump/cluster.go`): by FQDN, subset, port, direction."""
    found = section(dump, "ClustersConfigDump")
    items = [c.get("cluster", {}) for c in found.get("dynamic_active_clusters", [])]
    items += [c.get("cluster", {}) for c in found.get("static_clusters", [])]

    def key(cluster: Obj) -> tuple[str, str, int, str]:
        direction, port, subset, fqdn = _subset_key(str(cluster.get("name", "")))
        return fqdn, subset, int(port) if port.isdigit() else 0, direction

    return sorted(items, key=key)


def _subset_key(name: str) -> tuple[str, str, str, str]:
    """direction, port, subset, fqdn of `outbound|9080|v1|reviews...` (`model.ParseSubsetKey`);
    a name that is not one is all FQDN."""
    parts = name.split("|")
    if len(parts) > 3:
        return parts[0], parts[1], parts[2], parts[3]
    return "", "", "", name


def cluster_table(dump: Obj, where: ClusterFilter = ClusterFilter(), *,
                  with_names: bool = False) -> ConfigTable:
    """`istioctl proxy-config cluster` (`PrintClusterSummary`, upstream
    `configdump/cluster.go`); `with_names` adds the `cluster/<name>` column of `pc all`."""
    columns = ["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION RULE"]
    table = ConfigTable(["NAME", *columns] if with_names else columns)
    for cluster in clusters(dump):
        name = str(cluster.get("name", ""))
        if not where.verify(name):
            continue
        ctype = str(cluster.get("type", "STATIC"))
        row: Obj = {"TYPE": ctype, "DESTINATION RULE": istio_config(cluster)}
        if with_names:
            row["NAME"] = f"cluster/{name}"
        if len(name.split("|")) > 3:
            direction, port, subset, fqdn = _subset_key(name)
            row.update({"SERVICE FQDN": fqdn, "PORT": port, "SUBSET": subset or "-",
                        "DIRECTION": direction})
        else:
            row.update({"SERVICE FQDN": f"cluster/{name}" if with_names else name, "PORT": "-",
                        "SUBSET": "-", "DIRECTION": "-"})
        table.append(row)
    return table


# --- listeners ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ListenerFilter:
    """`--address`, `--port`, `--type` (`ListenerFilter.Verify`, upstream
    `configdump/listener.go`)."""

    address: str = ""
    port: int = 0
    type: str = ""

    def verify(self, listener: Obj) -> bool:
        if self.address and self.address.lower() not in (
                a.lower() for a in _addresses(listener)):
            return False
        if self.port and _port(listener) != self.port:
            return False
        return not self.type or self.type.lower() == _listener_type(listener).lower()


def listeners(dump: Obj) -> list[Obj]:
    found = section(dump, "ListenersConfigDump")
    items = [d.get("active_state", {}).get("listener", {})
             for d in found.get("dynamic_listeners", []) if d.get("active_state")]
    items += [s.get("listener", {}) for s in found.get("static_listeners", [])]
    return items


def _addresses(listener: Obj) -> list[str]:
    address = listener.get("address", {})
    first = address.get("socket_address", {}).get("address") or address.get("pipe", {}).get(
        "path", "")
    extra = [a.get("address", {}).get("socket_address", {}).get("address", "")
             for a in listener.get("additional_addresses", [])]
    return [first, *extra]


def _port(listener: Obj) -> int:
    return int(listener.get("address", {}).get("socket_address", {}).get("port_value", 0))


def _chains(listener: Obj) -> list[Obj]:
    chains = list(listener.get("filter_chains", []))
    if listener.get("default_filter_chain"):
        chains.append(listener["default_filter_chain"])
    return chains


def _listener_type(listener: Obj) -> str:
    """HTTP, TCP, HTTP+TCP or UNKNOWN (`retrieveListenerType`)."""
    http = tcp = 0
    for chain in _chains(listener):
        for network_filter in chain.get("filters", []):
            if network_filter.get("name") == HTTP_FILTER:
                http += 1
            elif network_filter.get("name") == TCP_FILTER and BLACK_HOLE not in json.dumps(
                    network_filter.get("typed_config", {})):
                tcp += 1
    if http:
        return "HTTP+TCP" if tcp else "HTTP"
    return "TCP" if tcp else "UNKNOWN"


def listener_table(dump: Obj, where: ListenerFilter = ListenerFilter(), *,
                   with_names: bool = False) -> ConfigTable:
    """`istioctl proxy-config listener` with its default `--verbose` (`PrintListenerSummary`,
    upstream `configdump/listener.go`): one row per filter chain, listeners by port, address,
    type; chains by destination, descending. Rows carry the listener NAME (`listener/<name>`
    in the `pc all` layout, `with_names`)."""
    columns = ["ADDRESSES", "PORT", "MATCH", "DESTINATION"]
    table = ConfigTable(["NAME", *columns] if with_names else columns)
    chosen = [item for item in listeners(dump) if where.verify(item)]
    chosen.sort(key=lambda item: (_port(item), _addresses(item)[0], _listener_type(item)))
    for listener in chosen:
        name = str(listener.get("name", ""))
        chains = [(_chain_match(c.get("filter_chain_match") or {}), _chain_destination(c))
                  for c in _chains(listener)]
        chains.sort(key=lambda pair: pair[1], reverse=True)
        for match, destination in chains:
            table.append({"NAME": f"listener/{name}" if with_names else name,
                          "ADDRESSES": ",".join(_addresses(listener)),
                          "PORT": str(_port(listener)), "MATCH": match,
                          "DESTINATION": destination})
    return table


_APP_PROTOCOLS = {
    "App: HTTP TLS": ["http/1.0", "http/1.1", "h2c", "istio-http/1.0", "istio-http/1.1",
                      "istio-h2"],
    "App: Istio HTTP Plain": ["istio", "istio-http/1.0", "istio-http/1.1", "istio-h2"],
    "App: TCP TLS": ["istio-peer-exchange", "istio"],
    "App: HTTP": ["http/1.0", "http/1.1", "h2c"],
}


def _chain_match(match: Obj) -> str:
    """`getMatches`: SNI, transport, application protocols, address/port, or ALL."""
    parts = []
    if match.get("server_names"):
        parts.append(f"SNI: {','.join(match['server_names'])}")
    if match.get("transport_protocol"):
        parts.append(f"Trans: {match['transport_protocol']}")
    protocols = match.get("application_protocols") or []
    if protocols:
        named = [label for label, known in _APP_PROTOCOLS.items() if known == protocols]
        parts.append(named[0] if named else f"App: {','.join(protocols)}")
    port = f":{match['destination_port']}" if match.get("destination_port") else ""
    if match.get("prefix_ranges"):
        ranges = ",".join(f"{r.get('address_prefix', '')}/{r.get('prefix_len', 0)}"
                          for r in match["prefix_ranges"])
        parts.append(f"Addr: {ranges}{port}")
    elif port:
        parts.append(f"Addr: *{port}")
    return "; ".join(parts) or "ALL"


def _chain_destination(chain: Obj) -> str:
    """`getFilterType`: the route (RDS name or inline) or the TCP cluster."""
    for network_filter in chain.get("filters", []):
        config = network_filter.get("typed_config", {})
        if network_filter.get("name") == HTTP_FILTER:
            if "route_config" in config:
                return _inline_route(config["route_config"])
            name = config.get("rds", {}).get("route_config_name", "")
            return f"Route: {name}" if name else "HTTP"
        if network_filter.get("name") == TCP_FILTER and BLACK_HOLE not in json.dumps(config):
            cluster = str(config.get("cluster", ""))
            return cluster if "Cluster" in cluster else f"Cluster: {cluster}"
    return "Non-HTTP/Non-TCP"


def _inline_route(route_config: Obj) -> str:
    """`describeRouteConfig`: a single catch-all route shows its cluster, else the vhosts."""
    vhosts = route_config.get("virtual_hosts", [])
    if len(vhosts) == 1 and vhosts[0].get("domains") == ["*"] and len(
            vhosts[0].get("routes", [])) == 1:
        only = vhosts[0]["routes"][0]
        cluster = only.get("route", {}).get("cluster")
        if only.get("match", {}).get("prefix") == "/" and cluster:
            return cluster if "Cluster" in cluster else f"Cluster: {cluster}"
    described = []
    for vhost in vhosts:
        matches = ", ".join(_route_match(r.get("match", {})) for r in vhost.get("routes", []))
        domains = vhost.get("domains", [])
        described.append(matches if domains == ["*"] else f"{'/'.join(domains)} {matches}")
    return f"Inline Route: {'; '.join(described)}"


# --- routes ---------------------------------------------------------------------------------

def route_configs(dump: Obj) -> list[Obj]:
    """Dynamic then static route configurations (`retrieveSortedRouteSlice`: numeric names
    sort numerically, others keep their order)."""
    found = section(dump, "RoutesConfigDump")
    items = [c.get("route_config", {}) for c in found.get("dynamic_route_configs", [])]
    items += [c.get("route_config", {}) for c in found.get("static_route_configs", [])]
    if all(str(item.get("name", "")).isdigit() for item in items):
        items.sort(key=lambda item: int(item["name"]))
    return items


# The embedded sidecar's one outbound route configuration (labs/embedded/mesh/istio/xds/routes.py):
# apps reach it through an HTTP proxy, so one listener sees every port, where Istio's sidecar
# has a listener and a route configuration per port (`9080`, ...).
EMBEDDED_OUTBOUND_ROUTES = "outbound"


def named_route_configs(dump: Obj, name: str = "") -> tuple[list[Obj], str]:
    """The route configurations `--name` selects, and a note when the embedded sidecar has none
    by that name but Istio's would: for a port name (`9080`) on a sidecar with the one
    `outbound` configuration, its virtual hosts for that port, said so."""
    configs = route_configs(dump)
    chosen = [c for c in configs if not name or str(c.get("name", "")) == name]
    outbound = next((c for c in configs if c.get("name") == EMBEDDED_OUTBOUND_ROUTES), None)
    if chosen or not name.isdigit() or outbound is None:
        return chosen, ""
    vhosts = [v for v in outbound.get("virtual_hosts", [])
              if str(v.get("name", "")).endswith(f":{name}")]
    note = (f"note: the embedded sidecar routes all outbound HTTP through one route "
            f"configuration, {EMBEDDED_OUTBOUND_ROUTES!r}, where Istio has one per port "
            f"({name!r}); showing its virtual hosts for port {name}")
    return [{**outbound, "virtual_hosts": vhosts}], note


def route_table(configs: list[Obj], *, with_names: bool = False) -> ConfigTable:
    """`istioctl proxy-config route` with its default `--verbose` (`PrintRouteSummary`,
    upstream `configdump/route.go`): a row per route of each virtual host, passthrough routes
    left out, an empty virtual host as `/*` `404`. Rows also carry the DESTINATION cluster(s),
    which `labs.proxy.routes` shows."""
    table = ConfigTable(["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"])
    for config in configs:
        config_name = str(config.get("name", ""))
        shown = f"route/{config_name}" if with_names else config_name
        for vhost in config.get("virtual_hosts", []):
            base = {"NAME": shown, "VHOST NAME": vhost.get("name", ""),
                    "DOMAINS": route_domains(vhost.get("domains", []))}
            for route in vhost.get("routes", []):
                if route.get("route", {}).get("cluster") == PASSTHROUGH:
                    continue
                table.append({**base, "MATCH": _route_match(route.get("match", {})),
                              "VIRTUAL SERVICE": istio_config(route),
                              "DESTINATION": _route_destination(route)})
            if not vhost.get("routes"):
                table.append({**base, "MATCH": "/*", "VIRTUAL SERVICE": "404",
                              "DESTINATION": "-"})
    return table


def route_domains(domains: list[str]) -> str:
    """`describeRouteDomains` + `unexpandDomains`: one domain as is; else the domains without
    a port, `X.svc.cluster.local` / `X.svc` dropped when `X` is listed, two shown.

    Istio's sidecars ignore the port in host matching and list port-less domains, short name
    first; the embedded mesh lists `host:port` ones, longest first, so ports are stripped and
    names ordered by length (addresses last) to show what istioctl shows for the same Service
    (`reviews, reviews.bookinfo + 1 more...`)."""
    if len(domains) <= 1:
        return domains[0] if domains else ""
    names: list[str] = []
    for domain in domains:
        host = domain if domain.endswith("]") else re.sub(r":\d+$", "", domain)
        if host not in names:
            names.append(host)
    unique = set(names)
    kept = sorted((h for h in names
                   if not any(h.endswith(s) and h.removesuffix(s) in unique
                              for s in (".svc.cluster.local", ".svc"))),
                  key=lambda h: (bool(re.fullmatch(r"[\d.]+|\[.*\]", h)), len(h)))
    if len(kept) > 2:
        return f"{', '.join(kept[:2])} + {len(kept) - 2} more..."
    return ", ".join(kept)


def _route_match(match: Obj) -> str:
    """`describeMatch`: prefix `X*`, `PathPrefix:X`, exact path, `regex X` (headers and query
    parameters are not shown, as upstream)."""
    conditions = []
    if match.get("prefix"):
        conditions.append(f"{match['prefix']}*")
    if match.get("path_separated_prefix"):
        conditions.append(f"PathPrefix:{match['path_separated_prefix']}")
    if match.get("path"):
        conditions.append(match["path"])
    if match.get("safe_regex"):
        conditions.append(f"regex {match['safe_regex'].get('regex', '')}")
    return " ".join(conditions)


def _route_destination(route: Obj) -> str:
    action = route.get("route")
    if action is None:
        if "direct_response" in route:
            return f"direct response {route['direct_response'].get('status', '')}"
        return "redirect" if "redirect" in route else "-"
    if "weighted_clusters" in action:
        return ", ".join(f"{c.get('name', '')} {c.get('weight', 0)}"
                         for c in action["weighted_clusters"].get("clusters", []))
    return str(action.get("cluster", "-"))


# --- secrets --------------------------------------------------------------------------------

def secret_table(dump: Obj, *, with_names: bool = False) -> ConfigTable:
    """`istioctl proxy-config secret` (`printSecretItemsTabular` in upstream
    `istioctl/pkg/writer/compare/sds/writer.go`, items from `sds/util.go`): serials as
    `%032x`, times RFC 3339, TYPE `CA` for a CA certificate; a TRUST DOMAIN column only when
    every item has one."""
    columns = ["RESOURCE NAME", "TYPE", "STATUS", "VALID CERT", "SERIAL NUMBER", "NOT AFTER",
               "NOT BEFORE"]
    found = section(dump, "SecretsConfigDump")
    entries = [(s, "WARMING") for s in found.get("dynamic_warming_secrets", [])]
    entries += [(s, "ACTIVE") for s in found.get("dynamic_active_secrets", [])]
    rows = []
    for entry, state in entries:
        name = str(entry.get("name", ""))
        row: Obj = {"RESOURCE NAME": f"secret/{name}" if with_names else name, "TYPE": "",
                    "STATUS": state, "VALID CERT": "false", "SERIAL NUMBER": "",
                    "NOT AFTER": "", "NOT BEFORE": "", "TRUST DOMAIN": ""}
        cert = _certificate(entry.get("secret", {}))
        if cert is not None:
            now = datetime.now(UTC)
            row.update({
                "TYPE": "CA" if _is_ca(cert) else "Cert Chain",
                "VALID CERT": str(cert.not_valid_before_utc < now < cert.not_valid_after_utc
                                  ).lower(),
                "SERIAL NUMBER": f"{cert.serial_number:032x}",
                "NOT AFTER": cert.not_valid_after_utc.strftime(_RFC3339),
                "NOT BEFORE": cert.not_valid_before_utc.strftime(_RFC3339),
                "TRUST DOMAIN": _trust_domain(cert)})
        rows.append(row)
    if rows and all(row["TRUST DOMAIN"] for row in rows):
        columns.append("TRUST DOMAIN")
    return ConfigTable(columns, rows)


def _certificate(secret: Obj) -> x509.Certificate | None:
    source = (secret.get("tls_certificate", {}).get("certificate_chain")
              or secret.get("validation_context", {}).get("trusted_ca") or {})
    if "inline_bytes" in source:
        pem = base64.b64decode(source["inline_bytes"])
    elif "inline_string" in source:
        pem = str(source["inline_string"]).encode()
    else:
        return None
    try:
        return x509.load_pem_x509_certificates(pem)[0]
    except ValueError:
        return None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _trust_domain(cert: x509.Certificate) -> str:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ""
    spiffe = [u for u in names.get_values_for_type(x509.UniformResourceIdentifier)
              if u.startswith("spiffe://")]
    return spiffe[-1].removeprefix("spiffe://").split("/")[0] if spiffe else ""


# --- endpoints ------------------------------------------------------------------------------

@dataclass(frozen=True)
class EndpointFilter:
    """`--address`, `--port`, `--cluster`, `--status` (`EndpointFilter.Verify`, upstream
    `istioctl/pkg/writer/envoy/clusters/clusters.go`)."""

    address: str = ""
    port: int = 0
    cluster: str = ""
    status: str = ""

    def verify(self, host: Obj, cluster: str) -> bool:
        return ((not self.address or self.address.lower() == _host_address(host).lower())
                and (not self.port or _host_port(host) == self.port)
                and (not self.cluster or self.cluster.lower() == cluster.lower())
                and (not self.status or self.status.lower() == _host_status(host).lower()))


def _host_address(host: Obj) -> str:
    address = host.get("address", {})
    if "socket_address" in address:
        return str(address["socket_address"].get("address", ""))
    if "pipe" in address:
        return f"unix://{address['pipe'].get('path', '')}"
    internal = address.get("envoy_internal_address")
    if internal and "server_listener_name" in internal:
        return f"envoy://{internal['server_listener_name']}/{internal.get('endpoint_id', '')}"
    return "unknown"


def _host_port(host: Obj) -> int:
    return int(host.get("address", {}).get("socket_address", {}).get("port_value", 0))


def _host_status(host: Obj) -> str:
    return str(host.get("health_status", {}).get("eds_health_status", "UNKNOWN"))


def endpoint_table(clusters_json: Obj, where: EndpointFilter = EndpointFilter()
                   ) -> ConfigTable:
    """`istioctl proxy-config endpoint` (`PrintEndpointsSummary`, upstream
    `writer/envoy/clusters/clusters.go`) from Envoy's `/clusters?format=json`: sorted by
    address, port, cluster."""
    found = []
    for cluster in clusters_json.get("cluster_statuses", []):
        name = str(cluster.get("name", ""))
        for host in cluster.get("host_statuses", []):
            if where.verify(host, name):
                failed = bool(host.get("health_status", {}).get("failed_outlier_check"))
                found.append((_host_address(host), _host_port(host), name, _host_status(host),
                              "FAILED" if failed else "OK"))
    found.sort(key=lambda item: (item[0], item[1], item[2]))
    table = ConfigTable(["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"])
    for address, port, name, status, outlier in found:
        table.append({"ENDPOINT": f"{address}:{port}" if port else address, "STATUS": status,
                      "OUTLIER CHECK": outlier, "CLUSTER": name})
    return table


def endpoint_dump(clusters_json: Obj, where: EndpointFilter = EndpointFilter()) -> list[Obj]:
    """The cluster statuses `-o json` prints: each cluster with a host passing the filter."""
    return [cluster for cluster in clusters_json.get("cluster_statuses", [])
            if any(where.verify(h, str(cluster.get("name", "")))
                   for h in cluster.get("host_statuses", []))]


# --- bootstrap and machine-readable output --------------------------------------------------

def bootstrap_summary(dump: Obj) -> str:
    """`PrintBootstrapSummary` (upstream `configdump/configdump.go`, a tabwriter with padding
    1): Istio version and proxy SHA from node metadata, Envoy's version from its build."""
    node = section(dump, "BootstrapConfigDump").get("bootstrap", {}).get("node", {})
    metadata = node.get("metadata", {})
    build = node.get("user_agent_build_version", {}).get("version", {})
    envoy = ".".join(str(build.get(k, 0)) for k in ("major_number", "minor_number", "patch"))
    lines = [["Istio Version:", str(metadata.get("ISTIO_VERSION", ""))],
             ["Istio Proxy Version:", str(metadata.get("ISTIO_PROXY_SHA", ""))],
             ["Envoy Version:", envoy if build else ""]]
    return render([line for line in lines if line[1]], padding=1)


# Proto fields holding data rather than messages: a Struct (kept as it is) or a map of
# typed messages (keys kept, values converted).
_STRUCT_FIELDS = {"filter_metadata", "fields", "labels", "annotations"}
_MESSAGE_MAPS = {"typed_filter_metadata", "typed_per_filter_config"}


def camel_case(value: Any) -> Any:
    """Envoy's admin API prints proto field names (`connect_timeout`); istioctl re-marshals
    with protojson, which prints JSON names (`connectTimeout`)."""
    if isinstance(value, list):
        return [camel_case(item) for item in value]
    if not isinstance(value, dict):
        return value
    out: Obj = {}
    for key, item in value.items():
        name = key if key.startswith("@") else re.sub(r"_([a-z0-9])",
                                                      lambda m: m.group(1).upper(), key)
        if key in _STRUCT_FIELDS or (key == "metadata" and "filter_metadata" not in item):
            out[name] = item
        elif key in _MESSAGE_MAPS and isinstance(item, dict):
            out[name] = {k: camel_case(v) for k, v in item.items()}
        else:
            out[name] = camel_case(item)
    return out


def dumps(value: Any, output: str) -> str:
    """`json.MarshalIndent(x, "", "    ")` or its YAML (`yaml.JSONToYAML`: sorted keys)."""
    if output == "yaml":
        return yaml.safe_dump(json.loads(json.dumps(value)), sort_keys=True,
                              default_flow_style=False, allow_unicode=True)
    return json.dumps(value, indent=4, ensure_ascii=False)
