"""VirtualService → Envoy routes, following Istio's translation (pilot's route package).

Which VirtualService serves a host: those visible to the proxy (`exportTo`) that apply to
sidecars (`gateways` empty or containing `mesh`); an exact host beats a wildcard, a longer
wildcard a shorter one, and among equals the oldest wins. Its http routes are translated in
order; a match block that does not apply to this proxy (`sourceLabels`, `sourceNamespace`,
`gateways`, `port`) is dropped, several match blocks are alternatives, and nothing follows a
catch-all. Requests no route matches get Envoy's 404 (NR), as in Istio.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass

from ...kube_state import Obj
from .hosts import (
    MeshHost,
    cluster_name,
    creation_order,
    expand_host,
    host_matches,
    is_wildcard,
    specificity,
    visible_to,
)
from .values import (
    ConfigError,
    duration,
    fractional_percent,
    integer,
    istio_config_metadata,
    percent,
    regex,
)

MESH_GATEWAY = "mesh"
FAULT_FILTER = "envoy.filters.http.fault"
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
PREVIOUS_HOSTS = {"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3."
             "PreviousHostsPredicate"}}
REDIRECT_CODES = {301: "MOVED_PERMANENTLY", 302: "FOUND", 303: "SEE_OTHER",
                  307: "TEMPORARY_REDIRECT", 308: "PERMANENT_REDIRECT"}
OVERWRITE, APPEND = "OVERWRITE_IF_EXISTS_OR_ADD", "APPEND_IF_EXISTS_OR_ADD"

HashLookup = Callable[[str, int, str | None], Obj | None]


def applies_to_sidecars(vs: Obj) -> bool:
    gateways = (vs.get("spec") or {}).get("gateways") or []
    return not gateways or MESH_GATEWAY in gateways


def gateway_names(names: list[str], namespace: str) -> set[str]:
    """Gateway references as `<ns>/<name>` (a short name is in `namespace`, the VirtualService's);
    `mesh` stays `mesh`."""
    return {str(n) if n == MESH_GATEWAY or "/" in str(n) else f"{namespace}/{n}" for n in names}


def bound_gateways(vs: Obj) -> set[str]:
    """The gateways a VirtualService's `spec.gateways` names (empty: only the mesh)."""
    return gateway_names((vs.get("spec") or {}).get("gateways") or [],
                         vs["metadata"].get("namespace", ""))


def vs_hosts(vs: Obj) -> list[str]:
    namespace = vs["metadata"].get("namespace", "")
    return [expand_host(str(h), namespace) for h in (vs.get("spec") or {}).get("hosts") or []]


def select_virtual_services(virtual_services: list[Obj], hostnames: list[str],
                            proxy_namespace: str | None) -> dict[str, Obj]:
    """hostname → the VirtualService that routes it for this proxy (None: every namespace).
    An exact host is looked up, not compared with every hostname: each proxy of a pass asks."""
    best: dict[str, tuple[tuple[object, ...], Obj]] = {}
    known = set(hostnames)
    for vs in virtual_services:
        if not applies_to_sidecars(vs) or (
                proxy_namespace is not None and not visible_to(vs, proxy_namespace)):
            continue
        for pattern in vs_hosts(vs):
            rank = (*(-x for x in specificity(pattern)), *creation_order(vs))
            matched = ([h for h in hostnames if host_matches(pattern, h)]
                       if is_wildcard(pattern) else [pattern] if pattern in known else [])
            for hostname in matched:
                if hostname not in best or rank < best[hostname][0]:
                    best[hostname] = (rank, vs)
    return {hostname: entry[1] for hostname, entry in best.items()}


@dataclass
class RouteContext:
    """What translating one VirtualService for one virtual host (host, port) depends on."""

    vs: Obj
    port: int  # the port the request was sent to (Istio's listener port)
    proxy_labels: dict[str, str]
    proxy_namespace: str
    hosts: dict[str, MeshHost]  # hostname → host, to infer a destination's port
    hash_for: HashLookup  # (hostname, port, subset) → Envoy hash policy from the DestinationRule
    check_only: bool = False  # validate every match block regardless of the proxy
    # The gateways this proxy is (`<ns>/<name>`), for match blocks' `gateways`: the mesh for a
    # sidecar, the Gateway objects it serves for a gateway proxy.
    gateways: frozenset[str] = frozenset({MESH_GATEWAY})


def vs_routes(ctx: RouteContext) -> list[Obj]:
    """The Envoy routes of `ctx.vs` for one virtual host, in order (may be empty)."""
    out: list[Obj] = []
    for index, http in enumerate((ctx.vs.get("spec") or {}).get("http") or []):
        where = f"spec.http[{index}]"
        matches = http.get("match") or []
        if not matches:
            out.append(_route(ctx, http, None, where))
            break
        for m_index, match in enumerate(matches):
            if not ctx.check_only and not _applies(ctx, match):
                continue
            route = _route(ctx, http, match, f"{where}.match[{m_index}]")
            out.append(route)
            if _catch_all(route):
                return out
    return out


def _applies(ctx: RouteContext, match: Obj) -> bool:
    if match.get("port") and int(match["port"]) != ctx.port:
        return False
    gateways = match.get("gateways") or []
    if gateways:
        listed = gateway_names(gateways, ctx.vs["metadata"].get("namespace", ""))
        return not listed.isdisjoint(ctx.gateways)
    source = match.get("sourceLabels") or {}
    if any(ctx.proxy_labels.get(k) != v for k, v in source.items()):
        return False
    return match.get("sourceNamespace") in (None, "", ctx.proxy_namespace)


def _catch_all(route: Obj) -> bool:
    match = route["match"]
    return (match.get("prefix") == "/" or (match.get("safe_regex") or {}).get("regex") == ".*"
            ) and not any(match.get(k) for k in ("headers", "query_parameters"))


def _route(ctx: RouteContext, http: Obj, match: Obj | None, where: str) -> Obj:
    name = http.get("name", "")
    if match is not None and match.get("name"):
        name = f"{name}.{match['name']}"
    route: Obj = {"match": route_match(match, where)}
    if name:
        route["name"] = name
    authority = ""
    if http.get("headers"):
        ops = header_operations(http["headers"])
        authority = ops.pop("authority")
        route.update({k: v for k, v in ops.items() if v})
    if http.get("redirect") is not None:
        route["redirect"] = _redirect(http["redirect"], ctx.port, f"{where}.redirect")
    elif http.get("directResponse") is not None:
        route["direct_response"] = _direct_response(http["directResponse"])
    else:
        route["route"] = _action(ctx, http, route, authority, where)
    route["decorator"] = {"operation": _operation(ctx, route)}
    route["metadata"] = istio_config_metadata("virtual-service", ctx.vs)
    if http.get("fault"):
        fault = _fault(http["fault"], f"{where}.fault")
        if fault:
            route["typed_per_filter_config"] = {FAULT_FILTER: fault}
    return route


def string_match(value: Obj, where: str) -> Obj | None:
    """Istio StringMatch → Envoy StringMatcher; None means 'present' (empty or regex `*`)."""
    if "exact" in value:
        return {"exact": str(value["exact"])}
    if "prefix" in value:
        return {"prefix": str(value["prefix"])}
    if "regex" in value and value["regex"] != "*":
        return {"safe_regex": {"regex": regex(value["regex"], where)}}
    return None


def _header_matcher(name: str, value: Obj | None, where: str) -> Obj:
    matcher = string_match(value or {}, where)
    out: Obj = {"name": name}
    if matcher is None:
        out["present_match"] = True
    else:
        out["string_match"] = matcher
    return out


def route_match(match: Obj | None, where: str) -> Obj:
    out: Obj = {"prefix": "/"}
    if match is None:
        return {**out, "case_sensitive": True}
    headers = [_header_matcher(n, v, f"{where}.headers.{n}")
               for n, v in (match.get("headers") or {}).items()]
    for name, value in (match.get("withoutHeaders") or {}).items():
        matcher = _header_matcher(name, value, f"{where}.withoutHeaders.{name}")
        matcher["invert_match"] = True
        if "string_match" in matcher:
            matcher["treat_missing_header_as_empty"] = True
        headers.append(matcher)
    headers.sort(key=lambda h: h["name"])
    uri = match.get("uri")
    if uri:
        if "exact" in uri:
            out = {"path": str(uri["exact"])}
        elif "prefix" in uri:
            out = {"prefix": str(uri["prefix"])}
        elif "regex" in uri:
            out = {"safe_regex": {"regex": regex(uri["regex"], f"{where}.uri.regex")}}
    out["case_sensitive"] = not match.get("ignoreUriCase", False)
    for field, header in (("method", ":method"), ("authority", ":authority"),
                          ("scheme", ":scheme")):
        if match.get(field) is not None:
            headers.append(_header_matcher(header, match[field], f"{where}.{field}"))
    if headers:
        out["headers"] = headers
    params = []
    for name, value in (match.get("queryParams") or {}).items():
        matcher = string_match(value or {}, f"{where}.queryParams.{name}")
        params.append({"name": name, **({"present_match": True} if matcher is None
                                        else {"string_match": matcher})})
    if params:
        out["query_parameters"] = params
    return out


def header_operations(headers: Obj) -> Obj:
    """Istio Headers → Envoy header options; `:authority`/`host` become a host rewrite."""
    request, response = headers.get("request") or {}, headers.get("response") or {}

    def options(values: Obj | None, action: str) -> tuple[list[Obj], str]:
        authority, out = "", []
        for key in sorted(values or {}):
            if key.lower() in (":authority", "host"):
                authority = str(values[key])  # type: ignore[index]
            if key.startswith(":") or key.lower() == "host":
                continue
            out.append({"header": {"key": key, "value": str(values[key])},  # type: ignore[index]
                        "append_action": action})
        return out, authority

    set_req, set_authority = options(request.get("set"), OVERWRITE)
    add_req, add_authority = options(request.get("add"), APPEND)
    set_resp, _ = options(response.get("set"), OVERWRITE)
    add_resp, _ = options(response.get("add"), APPEND)

    def removable(keys: list[str] | None) -> list[str]:
        return [k for k in keys or [] if not k.startswith(":") and k.lower() != "host"]

    return {"request_headers_to_add": set_req + add_req,
            "request_headers_to_remove": removable(request.get("remove")),
            "response_headers_to_add": set_resp + add_resp,
            "response_headers_to_remove": removable(response.get("remove")),
            "authority": set_authority or add_authority}


def _redirect(redirect: Obj, port: int, where: str) -> Obj:
    out: Obj = {}
    if redirect.get("authority"):
        out["host_redirect"] = redirect["authority"]
    if redirect.get("uri"):
        out["path_redirect"] = redirect["uri"]
    scheme = redirect.get("scheme", "")
    if scheme:
        out["scheme_redirect"] = scheme
    new_port = None
    if redirect.get("derivePort") == "FROM_REQUEST_PORT":
        new_port = port
    elif redirect.get("port"):
        new_port = integer(redirect["port"], f"{where}.port", 1)
    if new_port is not None and not ((new_port == 80 and scheme in ("", "http")) or (
            new_port == 443 and scheme == "https")):
        out["port_redirect"] = new_port
    code = int(redirect.get("redirectCode") or 301)
    if code not in REDIRECT_CODES:
        raise ConfigError(f"{where}.redirectCode: {code} is not supported; use one of "
                          f"{', '.join(map(str, REDIRECT_CODES))}")
    out["response_code"] = REDIRECT_CODES[code]
    return out


def _direct_response(direct: Obj) -> Obj:
    out: Obj = {"status": int(direct.get("status", 200))}
    body = direct.get("body") or {}
    if "string" in body:
        out["body"] = {"inline_string": str(body["string"])}
    elif "bytes" in body:
        out["body"] = {"inline_bytes": base64.b64encode(
            base64.b64decode(str(body["bytes"]))).decode()}
    return out


def destination_cluster(ctx: RouteContext,
                        destination: Obj | None) -> tuple[str, str, int, str | None]:
    """Istio's GetDestinationCluster: explicit port, else the host's only port, else the port
    the request came in on. An unknown host or subset yields a cluster that does not exist,
    so Envoy answers 503 (NC) — what Istio does too."""
    namespace = ctx.vs["metadata"].get("namespace", "")
    destination = destination or {}
    if not destination.get("host"):
        raise ConfigError("a route destination needs a `host`, e.g. destination: {host: reviews}")
    hostname = expand_host(str(destination["host"]), namespace)
    subset = destination.get("subset") or None
    port = ctx.port
    if (destination.get("port") or {}).get("number"):
        port = int(destination["port"]["number"])
    elif hostname in ctx.hosts and len(ctx.hosts[hostname].ports) == 1:
        port = ctx.hosts[hostname].ports[0]
    return cluster_name(port, subset, hostname), hostname, port, subset


def _action(ctx: RouteContext, http: Obj, route: Obj, authority: str, where: str) -> Obj:
    action: Obj = {"timeout": duration(http["timeout"], f"{where}.timeout")
                   if http.get("timeout") is not None else "0s"}
    rewrite = http.get("rewrite") or {}
    if rewrite.get("uriRegexRewrite"):
        rule = rewrite["uriRegexRewrite"]
        action["regex_rewrite"] = {
            "pattern": {"regex": regex(rule.get("match", ""), f"{where}.rewrite.uriRegexRewrite")},
            "substitution": str(rule.get("rewrite", ""))}
    elif rewrite.get("uri"):
        action["prefix_rewrite"] = str(rewrite["uri"])
    if rewrite.get("authority"):
        authority = str(rewrite["authority"])
    if authority:
        action["host_rewrite_literal"] = authority
    mirrors = []
    if http.get("mirror"):
        fraction = _mirror_fraction(http, where)
        if fraction is not None:
            mirrors.append((http["mirror"], fraction))
    for m_index, mirror in enumerate(http.get("mirrors") or []):
        pct = mirror.get("percentage")
        value = 100.0 if pct is None else percent(pct.get("value", 0),
                                                  f"{where}.mirrors[{m_index}].percentage")
        if value > 0 and mirror.get("destination"):
            mirrors.append((mirror["destination"], value))
    if mirrors:
        action["request_mirror_policies"] = [
            {"cluster": destination_cluster(ctx, dest)[0],
             "runtime_fraction": {"default_value": fractional_percent(value)},
             "trace_sampled": False} for dest, value in mirrors]
    destinations = http.get("route") or []
    if not destinations:
        raise ConfigError(f"{where}: a route needs `route` destinations, a `redirect` or a "
                          f"`directResponse`")
    hashes = []
    if len(destinations) == 1:
        only = destinations[0]
        cluster, hostname, port, subset = destination_cluster(ctx, only.get("destination"))
        action["cluster"] = cluster
        _add_destination_headers(route, action, only)
        hashes.append(ctx.hash_for(hostname, port, subset))
    else:
        weighted = []
        for d_index, dest in enumerate(destinations):
            weight = integer(dest.get("weight", 0), f"{where}.route[{d_index}].weight")
            if weight == 0:
                continue  # Istio drops zero-weight destinations of a split
            cluster, hostname, port, subset = destination_cluster(ctx, dest.get("destination"))
            entry: Obj = {"name": cluster, "weight": weight}
            if dest.get("headers"):
                ops = header_operations(dest["headers"])
                if ops["authority"]:
                    entry["host_rewrite_literal"] = ops["authority"]
                entry.update({k: v for k, v in ops.items() if v and k != "authority"})
            weighted.append(entry)
            hashes.append(ctx.hash_for(hostname, port, subset))
        if not weighted:
            raise ConfigError(f"{where}.route: every destination has weight 0; give the "
                              f"destinations weights that add up to 100")
        action["weighted_clusters"] = {"clusters": weighted}
    hash_policies = [h for h in hashes if h]
    if hash_policies:
        action["hash_policy"] = hash_policies
    retry = retry_policy(http.get("retries"), bool(hash_policies), f"{where}.retries")
    if retry is not None:
        action["retry_policy"] = retry
    return action


def _add_destination_headers(route: Obj, action: Obj, destination: Obj) -> None:
    if not destination.get("headers"):
        return
    ops = header_operations(destination["headers"])
    if ops["authority"] and "host_rewrite_literal" not in action:
        action["host_rewrite_literal"] = ops["authority"]
    for key, value in ops.items():
        if key != "authority" and value:
            route[key] = route.get(key, []) + value


def _mirror_fraction(http: Obj, where: str) -> float | None:
    if http.get("mirrorPercentage") is not None:
        value = percent(http["mirrorPercentage"].get("value", 0), f"{where}.mirrorPercentage")
    elif http.get("mirrorPercent") is not None:
        value = percent(http["mirrorPercent"], f"{where}.mirrorPercent")
    else:
        value = 100.0
    return value if value > 0 else None


def retry_policy(retries: Obj | None, consistent_hash: bool, where: str) -> Obj | None:
    """Istio's retry policy (pilot/pkg/networking/core/route/retry/retry.go, 1.30): by default
    2 retries on connection failures, refused streams and gRPC `unavailable`/`cancelled`, but
    not on a 503 — since Istio 1.24 (istio/istio#52111) `retriable-status-codes` comes with no
    codes unless `retryOn` names some; `attempts: 0` turns retries off."""
    out: Obj = {"retry_on": DEFAULT_RETRY_ON, "num_retries": 2,
                "host_selection_retry_max_attempts": 5}
    if not consistent_hash:
        out["retry_host_predicate"] = [PREVIOUS_HOSTS]
    if retries is None:
        return out
    attempts = integer(retries.get("attempts", 0), f"{where}.attempts")
    if attempts <= 0:
        return None
    out["num_retries"] = attempts
    if retries.get("retryOn"):
        conditions, codes = [], []
        for part in str(retries["retryOn"]).split(","):
            part = part.strip()
            if part.isdigit() and 100 <= int(part) <= 599:
                codes.append(int(part))
            elif part:
                conditions.append(part)
        if codes and "retriable-status-codes" not in conditions:
            conditions.append("retriable-status-codes")
        out["retry_on"] = ",".join(conditions)
        if codes:
            out["retriable_status_codes"] = codes
    if retries.get("perTryTimeout") is not None:
        out["per_try_timeout"] = duration(retries["perTryTimeout"], f"{where}.perTryTimeout")
    if retries.get("retryIgnorePreviousHosts") is not None:
        if retries["retryIgnorePreviousHosts"]:
            out["retry_host_predicate"] = [PREVIOUS_HOSTS]
        else:
            out.pop("retry_host_predicate", None)
    if retries.get("backoff") is not None:
        out["retry_back_off"] = {"base_interval": duration(retries["backoff"],
                                                           f"{where}.backoff")}
    return out


def _fault(fault: Obj, where: str) -> Obj | None:
    """Istio HTTPFaultInjection → Envoy HTTPFault. A missing percentage means Envoy's 0 %,
    as in Istio; exponential delays and gRPC aborts are not emulated (reported elsewhere)."""
    out: Obj = {"@type": FAULT_TYPE}
    delay = fault.get("delay")
    if delay and delay.get("fixedDelay") is not None:
        out["delay"] = {"fixed_delay": duration(delay["fixedDelay"], f"{where}.delay.fixedDelay")}
        if delay.get("percentage") is not None:
            out["delay"]["percentage"] = fractional_percent(percent(
                delay["percentage"].get("value", 0), f"{where}.delay.percentage"))
        else:
            out["delay"]["percentage"] = {"numerator": integer(
                delay.get("percent", 0), f"{where}.delay.percent"), "denominator": "HUNDRED"}
    abort = fault.get("abort")
    if abort and abort.get("httpStatus") is not None:
        out["abort"] = {"http_status": integer(abort["httpStatus"], f"{where}.abort.httpStatus",
                                               200)}
        if abort.get("percentage") is not None:
            out["abort"]["percentage"] = fractional_percent(percent(
                abort["percentage"].get("value", 0), f"{where}.abort.percentage"))
    return out if len(out) > 1 else None


def _operation(ctx: RouteContext, route: Obj) -> str:
    match = route["match"]
    path = (f"{match['prefix']}*" if "prefix" in match else match.get("path")
            or match.get("safe_regex", {}).get("regex", "/*"))
    cluster = (route.get("route") or {}).get("cluster")
    if cluster:
        _, port, _, hostname = cluster.split("|", 3)
        return f"{hostname}:{port}{path}"
    return f"{ctx.vs['metadata']['name']}:{ctx.port}{path}"
