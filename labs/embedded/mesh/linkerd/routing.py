"""Linkerd's client-side HTTP routing of a Service port, as Envoy routes of the `outbound`
virtual host (what the controllers write back about it: routing_status.py).

What the client proxy does with a request for a Service (linkerd/website 2-edge
`features/httproute.md`, `reference/httproute.md`, `reference/service-profiles.md`,
`reference/retries.md`, `reference/timeouts.md`):
- A ServiceProfile `<svc>.<ns>.svc.cluster.local` in the Service's namespace wins over
  HTTPRoutes ("proxies will use the ServiceProfile configuration, rather than the HTTPRoute
  configuration, as long as the ServiceProfile exists") and over retry/timeout annotations.
  Its routes (`condition`: pathRegex, anchored as the proxy anchors it, method, all/any/not)
  are tried in order; each gets its `timeout` (none by default, retries included: linkerd2
  `controller/api/destination/profile_translator.go`) and, when `isRetryable`, retries of the
  responses its `responseClasses` call failures (5xx by default) within the profile's
  `retryBudget` (Envoy's cluster retry budget; default retryRatio 0.2, minRetriesPerSecond 10,
  `defaultRetryBudget`). Every request, on a route or not, goes to the `dstOverrides` by
  weight (an authority without a port means the Service's port), or else to the Service.
- Otherwise HTTPRoutes (`policy.linkerd.io` and `gateway.networking.k8s.io`) whose parentRef is
  the Service (kind Service, group `core` or "", optional port): producer routes (in the
  Service's namespace) for every client, consumer routes (in another namespace) only for
  clients in that namespace, which then ignore the producer routes. Rules are ordered by the
  Gateway API's precedence; their matches (path, headers, query params, method), filters
  (RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect), weighted backendRefs (a
  rule without backends goes to the parent; all weights 0: 500; a backend naming no Service:
  Envoy's 503, no cluster) and `timeouts.request`/`backendRequest` become Envoy routes; a
  request no rule matches gets Linkerd's 404. Retry annotations
  (`retry.linkerd.io/http|limit|timeout`) and timeout annotations
  (`timeout.linkerd.io/request|response|idle`) come from the route when it has any, else from
  the Service.
- With neither, the Service's own annotations apply to one route to its endpoints.
A timeout answers 504 with `l5d-proxy-error` (linkerd2-proxy `errors/respond.rs`
`gateway_timeout`; the header names no duration here, unlike linkerd2-proxy's "HTTP response
timeout after 1s"). Not emulated: gRPC retries (`retry.linkerd.io/grpc`), GRPCRoutes, backend-
level filters, URLRewrite/RequestMirror, HTTPRoute `hostnames`, route conflicts
(RouteReasonConflicted), per-request `l5d-*` policy headers, route metrics
(`outbound_http_route_*`), consumer-namespace ServiceProfiles.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from ....duration import DurationError, go_duration_seconds
from ..kube_state import TRUST_DOMAIN, Obj, fqdn
from .policy import L5D_PROXY_ERROR, NO_ROUTE, route_matches
from .state import LinkerdState

log = logging.getLogger(__name__)
CONTROLLER = "linkerd.io/policy-controller"
SMI_SKIP = "smi.linkerd.io/skip"
TIMEOUT_ERROR = "HTTP response timeout"
# linkerd2 `controller/api/destination` default retry budget of a ServiceProfile
DEFAULT_BUDGET = {"retryRatio": 0.2, "minRetriesPerSecond": 10, "ttl": "10s"}
RETRY = ("retry.linkerd.io/http", "retry.linkerd.io/limit", "retry.linkerd.io/timeout")
TIMEOUT = ("timeout.linkerd.io/request", "timeout.linkerd.io/response",
           "timeout.linkerd.io/idle")
REDIRECT_CODES = {301: "MOVED_PERMANENTLY", 302: "FOUND", 303: "SEE_OTHER",
                  307: "TEMPORARY_REDIRECT", 308: "PERMANENT_REDIRECT"}
_QUANTITY = re.compile(
    r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))([eE][+-]?\d+|Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?$")
_SUFFIX = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
           "P": 1e15, "E": 1e18, "Ki": 2.0 ** 10, "Mi": 2.0 ** 20, "Gi": 2.0 ** 30,
           "Ti": 2.0 ** 40, "Pi": 2.0 ** 50, "Ei": 2.0 ** 60}


class RoutingError(ValueError):
    """An object Linkerd would reject; the message says which field and how to fix it."""


def outbound_cluster_name(service: Obj, port: int) -> str:
    """Linkerd's logical address of a service port, as its metrics' `authority` label shows
    it: `<name>.<namespace>.svc.cluster.local:<port>`."""
    return f"{fqdn(service)}:{port}"


def _address(name: str, namespace: str, port: int) -> str:
    return f"{name}.{namespace}.svc.{TRUST_DOMAIN}:{port}"


def synthetic(status: int, message: str) -> Obj:
    """A response the proxy makes itself, naming why in `l5d-proxy-error`."""
    return {"direct_response": {"status": status},
            "response_headers_to_add": [{"header": {"key": L5D_PROXY_ERROR, "value": message},
                                         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]}


def timeout_reply() -> Obj:
    """The outbound listener's local-reply mapper: a route timeout (Envoy flag UT) is
    linkerd2-proxy's 504 with `l5d-proxy-error`."""
    return {"mappers": [{"filter": {"response_flag_filter": {"flags": ["UT"]}},
                         "status_code": 504,
                         "headers_to_add": [{"header": {"key": L5D_PROXY_ERROR,
                                                        "value": TIMEOUT_ERROR},
                                             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]}]}


def _seconds(value: object, where: str) -> float:
    try:
        return go_duration_seconds(value, where)
    except DurationError as err:
        raise RoutingError(str(err)) from None


def _envoy_duration(seconds: float) -> str:
    return (f"{seconds:.3f}".rstrip("0").rstrip(".") or "0") + "s"


def quantity(value: object, where: str) -> float:
    """A Kubernetes resource.Quantity (`100`, `900m`, `1k`), as dstOverrides weights are."""
    match = _QUANTITY.match(str(value).strip())
    if match is None:
        raise RoutingError(f"{where}: {value!r} is not a quantity; write a weight such as 100 "
                           "or 900m")
    number, suffix = float(match.group(1)), match.group(2) or ""
    if suffix in _SUFFIX:
        return number * _SUFFIX[suffix]
    return number * 10.0 ** int(suffix[1:])  # an exponent: 1e3


# -- the objects, indexed once per snapshot ------------------------------------------------------
def http_routes(state: LinkerdState) -> list[Obj]:
    return [*state.linkerd_http_routes, *state.gateway_http_routes]


def service_parents(route: Obj) -> list[Obj]:
    """The parentRefs of an HTTPRoute that name a Service (what Linkerd's outbound index
    reads; other parents belong to gateways or to inbound policy)."""
    return [ref for ref in (route.get("spec") or {}).get("parentRefs") or []
            if ref.get("kind") == "Service" and ref.get("group", "core") in ("core", "")]


def _routes_by_parent(state: LinkerdState) -> dict[tuple[str, str], list[tuple[Obj, Obj]]]:
    """(service namespace, name) -> [(route, parentRef)], for HTTPRoutes with a Service parent."""
    out: dict[tuple[str, str], list[tuple[Obj, Obj]]] = {}
    for route in http_routes(state):
        namespace = route["metadata"].get("namespace", "")
        for ref in service_parents(route):
            key = (ref.get("namespace") or namespace, str(ref.get("name", "")))
            out.setdefault(key, []).append((route, ref))
    return out


def profiles_by_service(state: LinkerdState) -> dict[tuple[str, str], Obj]:
    return {(p["metadata"].get("namespace", ""), p["metadata"]["name"]): p
            for p in state.service_profiles}


# -- Envoy pieces --------------------------------------------------------------------------------
def _weighted(backends: list[tuple[str, float]]) -> Obj:
    """A route action to (cluster, weight) backends; weights are relative (all zero: 500, as
    the Gateway API asks of a rule whose backends all have weight 0)."""
    live = [(name, weight) for name, weight in backends if weight > 0]
    if not live:
        return synthetic(500, "all backends have weight 0")
    if len(live) == 1:
        return {"route": {"cluster": live[0][0]}}
    return {"route": {"weighted_clusters": {"clusters": [
        {"name": name, "weight": max(1, round(weight * 1000))} for name, weight in live]}}}


def _with(action: Obj, **route: Any) -> Obj:
    """`action` with route-action fields (timeout, retry_policy...) added when it routes."""
    if "route" in action:
        action["route"].update({k: v for k, v in route.items() if v is not None})
    return action


def _codes(text: str, where: str) -> list[int]:
    """`retry.linkerd.io/http`: `5xx`, `gateway-error`, `504`, `500-504`, comma separated."""
    codes: set[int] = set()
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == "5xx":
            codes.update(range(500, 600))
        elif part == "gateway-error":
            codes.update(range(502, 505))
        elif re.fullmatch(r"\d{3}(-\d{3})?", part):
            low, _, high = part.partition("-")
            if int(high or low) < int(low):
                raise RoutingError(f"{where}: range {part!r} runs backwards")
            codes.update(range(int(low), int(high or low) + 1))
        else:
            raise RoutingError(f"{where}: {part!r} is not a status code, a range (500-504), "
                               "`5xx` or `gateway-error`")
    return sorted(codes)


def _annotations(obj: Obj) -> dict[str, str]:
    return {k: str(v) for k, v in (obj["metadata"].get("annotations") or {}).items()}


def _pick(route_ann: dict[str, str], service_ann: dict[str, str], keys: tuple[str, ...]
          ) -> dict[str, str]:
    """The route's annotations of a family when it has any, else the Service's."""
    own = {k: route_ann[k] for k in keys if k in route_ann}
    return own or {k: service_ann[k] for k in keys if k in service_ann}


def annotation_retry(ann: dict[str, str], where: str) -> Obj | None:
    """Envoy retry_policy from Linkerd's retry annotations (limit default 1); None: no retries."""
    codes, limit, timeout = (ann.get(k) for k in RETRY)
    if not codes and not timeout:
        return None
    retries = int(limit) if limit is not None and limit.strip().isdigit() else -1
    if limit is None:
        retries = 1
    elif retries < 0:
        raise RoutingError(f"{where}: retry.linkerd.io/limit {limit!r} is not a whole number "
                           "of retries; write it like \"2\"")
    policy: Obj = {"num_retries": retries}
    retry_on = []
    if codes:
        retry_on.append("retriable-status-codes")
        policy["retriable_status_codes"] = _codes(codes, f"{where}: retry.linkerd.io/http")
    if timeout:
        retry_on.append("reset")  # Envoy retries a per-try timeout under `reset`
        policy["per_try_timeout"] = _envoy_duration(
            _seconds(timeout, f"{where}: retry.linkerd.io/timeout"))
    policy["retry_on"] = ",".join(retry_on)
    return policy


def annotation_timeouts(ann: dict[str, str], request: float | None, where: str) -> Obj:
    """Route fields from Linkerd's timeout annotations; `request` is the HTTPRoute's
    `timeouts.request`, which the annotation overrides. Envoy's route timeout bounds the whole
    response (request and response timeouts both land there, the smaller winning)."""
    values = {k: _seconds(ann[k], f"{where}: {k}") for k in TIMEOUT if k in ann}
    request = values.get(TIMEOUT[0], request)
    limits = [s for s in (request, values.get(TIMEOUT[1])) if s]
    out: Obj = {"timeout": _envoy_duration(min(limits)) if limits else "0s"}
    if values.get(TIMEOUT[2]):
        out["idle_timeout"] = _envoy_duration(values[TIMEOUT[2]])
    return out


# -- HTTPRoute rules ----------------------------------------------------------------------------
def _precedence(match: Obj) -> tuple[int, int, int, int, int]:
    """Gateway API rule precedence: exact path, longest prefix, method, most headers, most
    query parameters."""
    path = match.get("path") or {}
    kind = path.get("type", "PathPrefix")
    return ({"Exact": 0, "PathPrefix": 1}.get(kind, 2),
            -len(str(path.get("value", "/"))) if kind != "RegularExpression" else 0,
            0 if match.get("method") else 1, -len(match.get("headers") or []),
            -len(match.get("queryParams") or []))


def _header_ops(spec: Obj, direction: str) -> Obj:
    add = [{"header": {"key": h["name"], "value": str(h["value"])},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"} for h in spec.get("set") or []]
    add += [{"header": {"key": h["name"], "value": str(h["value"])},
             "append_action": "APPEND_IF_EXISTS_OR_ADD"} for h in spec.get("add") or []]
    out: Obj = {}
    if add:
        out[f"{direction}_headers_to_add"] = add
    if spec.get("remove"):
        out[f"{direction}_headers_to_remove"] = list(spec["remove"])
    return out


def _redirect(spec: Obj) -> Obj:
    out: Obj = {"response_code": REDIRECT_CODES.get(int(spec.get("statusCode", 302)), "FOUND")}
    if spec.get("scheme"):
        out["scheme_redirect"] = spec["scheme"]
    if spec.get("hostname"):
        out["host_redirect"] = spec["hostname"]
    if spec.get("port"):
        out["port_redirect"] = int(spec["port"])
    path = spec.get("path") or {}
    if path.get("type") == "ReplaceFullPath":
        out["path_redirect"] = path.get("replaceFullPath", "/")
    elif path.get("type") == "ReplacePrefixMatch":
        out["prefix_rewrite"] = path.get("replacePrefixMatch", "/")
    return out


@dataclass
class RuleContext:
    """The state and parent one HTTPRoute is read against, and the backends it could not
    resolve, as the policy controller's ResolvedRefs reasons."""

    state: LinkerdState
    route: Obj
    parent: Obj  # the Service
    port: int
    unresolved: list[str] = field(default_factory=list)  # InvalidKind, BackendNotFound

    @property
    def where(self) -> str:
        meta = self.route["metadata"]
        return f"HTTPRoute {meta.get('namespace', '')}/{meta['name']}"


def rule_backends(ctx: RuleContext, rule: Obj) -> list[tuple[str, float]]:
    refs = rule.get("backendRefs") or []
    if not refs:
        return [(outbound_cluster_name(ctx.parent, ctx.port), 1.0)]
    out = []
    namespace = ctx.route["metadata"].get("namespace", "")
    for ref in refs:
        if ref.get("kind", "Service") != "Service" or ref.get("group", "") not in ("", "core"):
            ctx.unresolved.append("InvalidKind")
            continue
        ns = ref.get("namespace") or namespace
        name, port = str(ref.get("name", "")), int(ref.get("port") or ctx.port)
        if ctx.state.service_for_host(f"{name}.{ns}", ns) is None:
            ctx.unresolved.append("BackendNotFound")
        out.append((_address(name, ns, port), float(ref.get("weight", 1))))
    return out


def rule_routes(ctx: RuleContext, rule: Obj, service_ann: dict[str, str]) -> list[tuple[Obj, Obj]]:
    """[(Gateway API match, Envoy route)] of one HTTPRoute rule; raises RoutingError for what
    Linkerd does not accept."""
    extra: Obj = {}
    redirect = None
    for filt in rule.get("filters") or []:
        kind = filt.get("type")
        if kind == "RequestHeaderModifier":
            extra.update(_header_ops(filt.get("requestHeaderModifier") or {}, "request"))
        elif kind == "ResponseHeaderModifier":
            extra.update(_header_ops(filt.get("responseHeaderModifier") or {}, "response"))
        elif kind == "RequestRedirect":
            redirect = _redirect(filt.get("requestRedirect") or {})
        else:
            raise RoutingError(f"{ctx.where}: filter type {kind!r} is not supported by Linkerd "
                               "(RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect)")
    route_ann = _annotations(ctx.route)
    timeouts = rule.get("timeouts") or {}
    request = _seconds(timeouts["request"], f"{ctx.where}: timeouts.request") if (
        timeouts.get("request")) else None
    timing = annotation_timeouts(_pick(route_ann, service_ann, TIMEOUT), request, ctx.where)
    retry = annotation_retry(_pick(route_ann, service_ann, RETRY), ctx.where)
    if timeouts.get("backendRequest"):
        retry = retry or {"num_retries": 0, "retry_on": "reset"}
        retry["per_try_timeout"] = _envoy_duration(
            _seconds(timeouts["backendRequest"], f"{ctx.where}: timeouts.backendRequest"))
    if redirect is not None:
        action: Obj = {"redirect": redirect}
    else:
        action = _with(_weighted(rule_backends(ctx, rule)), retry_policy=retry, **timing)
    return [(match, {"match": envoy, **action, **extra})
            for match, envoy in zip(rule.get("matches") or [{}], route_matches(rule),
                                    strict=True)]


def _route_order(route: Obj) -> tuple[str, str]:
    meta = route["metadata"]
    return (str(meta.get("creationTimestamp", "")), f"{meta.get('namespace', '')}/{meta['name']}")


def http_route_routes(state: LinkerdState, service: Obj, port: int, client_namespace: str,
                      warnings: list[str]) -> list[Obj] | None:
    """The Envoy routes of the HTTPRoutes attached to a Service port, or None when none is;
    a route Linkerd cannot use is left out, and `warnings` says why."""
    meta = service["metadata"]
    namespace = meta.get("namespace", "")
    attached = [(r, ref) for r, ref in state.derived(_routes_by_parent).get(
        (namespace, meta["name"]), []) if ref.get("port") in (None, port)]
    consumer = [a for a in attached if a[0]["metadata"].get("namespace") == client_namespace
                and client_namespace != namespace]
    chosen = consumer or [a for a in attached if a[0]["metadata"].get("namespace") == namespace]
    if not chosen:
        return None
    ordered: list[tuple[tuple[Any, ...], Obj]] = []
    service_ann = _annotations(service)
    for route, _ in sorted(chosen, key=lambda a: _route_order(a[0])):
        ctx = RuleContext(state, route, service, port)
        try:
            ordered += [((*_precedence(match), *_route_order(route), index, position), envoy)
                        for index, rule in enumerate((route.get("spec") or {}).get("rules") or [])
                        for position, (match, envoy) in enumerate(
                            rule_routes(ctx, rule, service_ann))]
        except RoutingError as err:
            warnings.append(f"{err}: the route is ignored")
    ordered.sort(key=lambda item: item[0])
    return [envoy for _, envoy in ordered] + [{"match": {"prefix": "/"},
                                               **synthetic(404, NO_ROUTE)}]


# -- ServiceProfiles ----------------------------------------------------------------------------
def _negate(matcher: Obj) -> Obj:
    return {**matcher, "invert_match": not matcher.get("invert_match", False)}


def _path_header(regex: str) -> Obj:
    """A pathRegex matches the whole path (linkerd2-proxy `service-profiles/src/proto.rs`
    anchors it with `^...$`); `:path` also carries the query string."""
    bare = regex.strip().removeprefix("^").removesuffix("$")
    return {"name": ":path", "string_match": {"safe_regex": {"regex": f"(?:{bare})(?:\\?.*)?"}}}


def _both(dnfs: list[list[list[Obj]]]) -> list[list[Obj]]:
    """The conjunction of conditions in disjunctive normal form."""
    terms: list[list[Obj]] = [[]]
    for dnf in dnfs:
        terms = [t + alternative for t in terms for alternative in dnf]
    return terms


def _either(dnfs: list[list[list[Obj]]]) -> list[list[Obj]]:
    return [term for dnf in dnfs for term in dnf]


def condition_terms(cond: Obj, where: str, negate: bool = False) -> list[list[Obj]]:
    """A ServiceProfile request match in disjunctive normal form: alternatives, each a list of
    Envoy header matchers that must all match (several fields in one object: `all`); `negate`
    pushes a `not` down (De Morgan)."""
    parts: list[list[list[Obj]]] = []
    if "pathRegex" in cond:
        matcher = _path_header(str(cond["pathRegex"]))
        parts.append([[_negate(matcher) if negate else matcher]])
    if "method" in cond:
        matcher = {"name": ":method", "string_match": {"exact": str(cond["method"]).upper()}}
        parts.append([[_negate(matcher) if negate else matcher]])
    if "not" in cond:
        parts.append(condition_terms(cond["not"] or {}, where, not negate))
    for key, conjunctive in (("all", not negate), ("any", negate)):
        subs = [condition_terms(c or {}, where, negate) for c in cond.get(key) or []]
        if subs:
            parts.append(_both(subs) if conjunctive else _either(subs))
    if not parts:
        raise RoutingError(f"{where}: a condition needs pathRegex, method, all, any or not")
    return _either(parts) if negate else _both(parts)


def _failure_codes(route: Obj) -> list[int]:
    """The status codes a route's responseClasses call failures (default: 5xx). Only status
    conditions (with all/any/not of them at the top) are read."""
    codes: set[int] = set()
    for response_class in route.get("responseClasses") or []:
        if not response_class.get("isFailure"):
            continue
        status = (response_class.get("condition") or {}).get("status") or {}
        low, high = int(status.get("min", status.get("max", 500))), int(
            status.get("max", status.get("min", 599)))
        codes.update(range(low, high + 1))
    return sorted(codes) or list(range(500, 600))


def profile_routes(state: LinkerdState, profile: Obj, service: Obj, port: int
                   ) -> tuple[list[Obj], dict[str, Obj]]:
    """(Envoy routes, cluster -> circuit_breakers) of a ServiceProfile for one Service port."""
    spec = profile.get("spec") or {}
    namespace = profile["metadata"].get("namespace", "")
    where = f"ServiceProfile {namespace}/{profile['metadata']['name']}"
    backends = [(outbound_cluster_name(service, port), 1.0)]
    if spec.get("dstOverrides"):
        backends = []
        for index, dst in enumerate(spec["dstOverrides"]):
            host, _, dst_port = str(dst.get("authority", "")).partition(":")
            target = state.service_for_host(host, namespace)
            weight = quantity(dst.get("weight", 0), f"{where}: dstOverrides[{index}].weight")
            if target is None:
                raise RoutingError(f"{where}: dstOverrides[{index}].authority {host!r} names no "
                                   "Service")
            backends.append((outbound_cluster_name(target, int(dst_port or port)), weight))
    budget = {**DEFAULT_BUDGET, **(spec.get("retryBudget") or {})}
    min_retries = max(1, int(budget["minRetriesPerSecond"]))
    routes, retried = [], False
    for index, route in enumerate(spec.get("routes") or []):
        rwhere = f"{where}: routes[{index}] ({route.get('name', '')})"
        timeout = _seconds(route["timeout"], f"{rwhere}.timeout") if route.get(
            "timeout") else 0.0
        retry = None
        if route.get("isRetryable"):
            retried = True
            # the budget is the only limit linkerd2-proxy puts on a profile's retries
            # (`linkerd/app/outbound/src/http/retry.rs`: a withdrawal per retry); Envoy also
            # needs one per request: the budget's per-second allowance
            retry = {"retry_on": "retriable-status-codes", "num_retries": min_retries,
                     "retriable_status_codes": _failure_codes(route)}
        for term in condition_terms(route.get("condition") or {}, rwhere):
            routes.append({"match": {"prefix": "/", **({"headers": term} if term else {})},
                           **_with(_weighted(backends), timeout=_envoy_duration(timeout),
                                   retry_policy=retry)})
    routes.append({"match": {"prefix": "/"}, **_with(_weighted(backends), timeout="0s")})
    breakers: dict[str, Obj] = {}
    if retried:
        threshold = {"priority": "DEFAULT", "retry_budget": {
            "budget_percent": {"value": float(budget["retryRatio"]) * 100},
            "min_retry_concurrency": min_retries}}
        breakers = {name: {"thresholds": [threshold]} for name, _ in backends}
    return routes, breakers


# -- one Service port -------------------------------------------------------------------------
@dataclass
class PortRouting:
    routes: list[Obj]
    circuit_breakers: dict[str, Obj] = field(default_factory=dict)  # cluster -> breakers
    warnings: list[str] = field(default_factory=list)


def port_routing(state: LinkerdState, service: Obj, port: int, client_namespace: str
                 ) -> PortRouting:
    """How a client in `client_namespace` routes requests for one Service port."""
    meta = service["metadata"]
    profile = state.derived(profiles_by_service).get((meta.get("namespace", ""), fqdn(service)))
    warnings = []
    if profile is not None:
        try:
            routes, breakers = profile_routes(state, profile, service, port)
            return PortRouting(routes, breakers)
        except RoutingError as err:
            warnings.append(f"{err}: the profile is ignored")
    routes_or_none = http_route_routes(state, service, port, client_namespace, warnings)
    if routes_or_none is not None:
        return PortRouting(routes_or_none, warnings=warnings)
    where = f"Service {meta.get('namespace', '')}/{meta['name']}"
    ann = _annotations(service)
    try:
        action = _with({"route": {"cluster": outbound_cluster_name(service, port)}},
                       retry_policy=annotation_retry(ann, where),
                       **annotation_timeouts(ann, None, where))
    except RoutingError as err:
        warnings.append(f"{err}: its retry and timeout annotations are ignored")
        action = {"route": {"cluster": outbound_cluster_name(service, port), "timeout": "0s"}}
    return PortRouting([{"match": {"prefix": "/"}, **action}], warnings=warnings)


# -- what the controllers write ----------------------------------------------------------------
