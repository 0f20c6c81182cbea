"""Lab day1.gateways: getting traffic into the mesh — Istio's "Ingress Gateways" task with the
Bookinfo gateway (an Istio `Gateway` + a VirtualService bound to it on the shared
istio-ingressgateway), then the same with the Gateway API (a `Gateway` of class istio, which
Istio serves with a deployment of its own, `<gateway>-istio`, and an `HTTPRoute`).

Structural checks read the objects and the status Istio writes on them; behavioural checks send
requests to each gateway's Service from a workload inside the cluster (ratings, as Istio's
tasks do), so they judge the same on every backend — the learner's own browser or curl uses the
Service's node port, which only the machine running the cluster can reach.
"""

from __future__ import annotations

from typing import Any

from labs.checks.context import CheckContext
from labs.checks.model import Outcome, Retry, Status, failed, passed
from labs.checks.public.day1 import NAMESPACE, describe
from labs.checks.public.day1.install import BOOKSTORE_TITLE
from labs.checks.registry import check

INGRESS_NAMESPACE = "istio-system"
INGRESS_GATEWAY = "istio-ingressgateway"
CLIENT = "ratings-v1"  # has curl, as in Istio's tasks
PRODUCTPAGE = "productpage"
PRODUCTPAGE_HOSTS = (PRODUCTPAGE, f"{PRODUCTPAGE}.{NAMESPACE}",
                     f"{PRODUCTPAGE}.{NAMESPACE}.svc.cluster.local")
GATEWAY_CLASS = "istio"
REQUESTS = 3
SETTLE = Retry(consecutive=2, deadline=20, interval=1)
STATUS = Retry(consecutive=1, deadline=10, interval=1)  # Istio writes status a moment later
Obj = dict[str, Any]


def _conditions(entries: list[Obj] | None) -> dict[str, Obj]:
    return {c.get("type", ""): c for c in entries or []}


def _is_true(entries: list[Obj] | None, kind: str) -> bool:
    return _conditions(entries).get(kind, {}).get("status") == "True"


def _not_true(entries: list[Obj] | None, *kinds: str) -> list[str]:
    """`Programmed=False (Invalid: message)` for each of `kinds` that is not True."""
    found = _conditions(entries)
    problems = []
    for kind in kinds:
        condition = found.get(kind)
        if condition is None:
            problems.append(f"no {kind} condition yet")
        elif condition.get("status") != "True":
            problems.append(f"{kind}={condition.get('status')} ({condition.get('reason', '')}: "
                            f"{condition.get('message', '')})")
    return problems


def _serves_bookstore(ctx: CheckContext, url: str) -> Outcome:
    result = ctx.probe(url, from_workload=CLIENT, namespace=NAMESPACE, n=REQUESTS, max_time=10,
                       classify=lambda body: "bookstore" if BOOKSTORE_TITLE in body else None)
    if result.codes == {200: REQUESTS} and result.labels == {"bookstore": REQUESTS}:
        return passed()
    return failed(describe(result))


@check("day1.gateways.bookinfo",
       f"Bookinfo runs in {NAMESPACE} and Istio's {INGRESS_GATEWAY} in {INGRESS_NAMESPACE}",
       fatal=True,
       hint="run `labs.deploy_bookinfo()` (the notebook's first cell); the ingress gateway comes "
            f"with Istio: `kubectl -n {INGRESS_NAMESPACE} get deployment {INGRESS_GATEWAY}`")
def bookinfo(ctx: CheckContext) -> Outcome:
    wanted = [(NAMESPACE, "productpage-v1"), (NAMESPACE, CLIENT),
              (INGRESS_NAMESPACE, INGRESS_GATEWAY)]
    problems = []
    for namespace, name in wanted:
        deployment = ctx.get("deployment", name, namespace)
        if deployment is None:
            problems.append(f"no deployment {name} in {namespace}")
        elif not _is_true(deployment.get("status", {}).get("conditions"), "Available"):
            problems.append(f"deployment {name} in {namespace} is not available")
    return failed("; ".join(problems)) if problems else passed()


def _ingress_pod_labels(ctx: CheckContext) -> dict[str, str]:
    deployment = ctx.get("deployment", INGRESS_GATEWAY, INGRESS_NAMESPACE) or {}
    template = deployment.get("spec", {}).get("template", {})
    return dict(template.get("metadata", {}).get("labels") or {})


def _bound(service: Obj, gateway: str) -> bool:
    """Does the VirtualService name this Gateway (`name` or `namespace/name`)?"""
    names = service.get("spec", {}).get("gateways") or []
    return gateway in names or f"{NAMESPACE}/{gateway}" in names


def _routes_to_productpage(service: Obj) -> bool:
    return any(route.get("destination", {}).get("host") in PRODUCTPAGE_HOSTS
               for rule in service.get("spec", {}).get("http") or []
               for route in rule.get("route") or [])


@check("day1.gateways.istio-gateway",
       f"an Istio Gateway in {NAMESPACE} configures the {INGRESS_GATEWAY} for HTTP and a "
       "VirtualService bound to it routes to productpage",
       hint="apply Istio's samples/bookinfo/networking/bookinfo-gateway.yaml in "
            f"{NAMESPACE}: a Gateway with selector istio: ingressgateway and an HTTP server for "
            'hosts "*", and a VirtualService whose gateways: lists that Gateway and whose '
            "route goes to host productpage, port 9080")
def istio_gateway(ctx: CheckContext) -> Outcome:
    labels = _ingress_pod_labels(ctx)
    gateways = ctx.items("gateways.networking.istio.io", NAMESPACE)
    if not gateways:
        return failed(f"no Istio Gateway (gateways.networking.istio.io) in {NAMESPACE}")
    selecting = [g for g in gateways
                 if (selector := g.get("spec", {}).get("selector") or {})
                 and selector.items() <= labels.items()]
    if not selecting:
        seen = ", ".join(f"{g['metadata']['name']} selects {g.get('spec', {}).get('selector')}"
                         for g in gateways)
        return failed(f"no Gateway selects the {INGRESS_GATEWAY} pods "
                      f"(labels include istio: ingressgateway): {seen}")
    http = [g["metadata"]["name"] for g in selecting
            if any(str(s.get("port", {}).get("protocol", "")).upper() == "HTTP"
                   for s in g.get("spec", {}).get("servers") or [])]
    if not http:
        return failed(f"Gateway {selecting[0]['metadata']['name']} has no server with "
                      "protocol HTTP")
    services = ctx.items("virtualservices.networking.istio.io", NAMESPACE)
    bound = [s for s in services if any(_bound(s, name) for name in http)]
    if not bound:
        listed = "; ".join(f"{s['metadata']['name']} lists "
                           f"{s.get('spec', {}).get('gateways') or 'none (mesh only)'}"
                           for s in services) or "there is none"
        return failed(f"no VirtualService in {NAMESPACE} lists Gateway {http[0]} under "
                      f"gateways: ({listed})")
    if not any(_routes_to_productpage(s) for s in bound):
        names = ", ".join(s["metadata"]["name"] for s in bound)
        return failed(f"VirtualService {names} is bound to the Gateway but routes nowhere "
                      "near host productpage")
    return passed()


@check("day1.gateways.ingress-productpage",
       f"productpage answers through the {INGRESS_GATEWAY} (/productpage: 200, the Bookinfo "
       "page)",
       retry=SETTLE,
       hint=f"try it: `curl -s http://127.0.0.1:<node port>/productpage` with the node port of "
            f"`kubectl -n {INGRESS_NAMESPACE} get svc {INGRESS_GATEWAY}` (80:<node port>); "
            "nothing listening or 404 means the Gateway's server, the VirtualService's hosts "
            '(keep "*": this check sends no particular Host) or its /productpage match is off; '
            f"`kubectl -n {INGRESS_NAMESPACE} logs deploy/{INGRESS_GATEWAY}` shows each request")
def ingress_productpage(ctx: CheckContext) -> Outcome:
    return _serves_bookstore(
        ctx, f"http://{INGRESS_GATEWAY}.{INGRESS_NAMESPACE}/{PRODUCTPAGE}")


def _istio_class_gateways(ctx: CheckContext) -> list[Obj]:
    return [g for g in ctx.items("gateways.gateway.networking.k8s.io", NAMESPACE)
            if g.get("spec", {}).get("gatewayClassName") == GATEWAY_CLASS]


@check("day1.gateways.gateway-api",
       f"a Gateway API Gateway of class {GATEWAY_CLASS} in {NAMESPACE} is Accepted and "
       "Programmed",
       retry=STATUS,
       hint="apply Istio's samples/bookinfo/gateway-api/bookinfo-gateway.yaml: a Gateway "
            f"(gateway.networking.k8s.io/v1) with gatewayClassName: {GATEWAY_CLASS} and an HTTP "
            f"listener on port 80; `kubectl -n {NAMESPACE} get gtw` shows PROGRAMMED and "
            "`kubectl describe gtw NAME` why not")
def gateway_api(ctx: CheckContext) -> Outcome:
    gateways = _istio_class_gateways(ctx)
    if not gateways:
        return failed(f"no Gateway (gateway.networking.k8s.io) of class {GATEWAY_CLASS} in "
                      f"{NAMESPACE}")
    problems = []
    for gateway in gateways:
        issues = _not_true(gateway.get("status", {}).get("conditions"), "Accepted",
                           "Programmed")
        if not issues:
            return passed()
        problems.append(f"Gateway {gateway['metadata']['name']}: {'; '.join(issues)}")
    return failed("; ".join(problems))


def _parent_status(route: Obj, gateway: str) -> Obj | None:
    """The route's status entry for the Gateway `gateway`, as Istio writes it."""
    for parent in route.get("status", {}).get("parents") or []:
        ref = parent.get("parentRef", {})
        if ref.get("name") == gateway and ref.get("kind", "Gateway") == "Gateway" and (
                ref.get("namespace", NAMESPACE) == NAMESPACE):
            return parent
    return None


def _backends(route: Obj) -> set[str]:
    return {ref.get("name", "") for rule in route.get("spec", {}).get("rules") or []
            for ref in rule.get("backendRefs") or []}


@check("day1.gateways.httproute",
       f"an HTTPRoute in {NAMESPACE} to productpage is attached to that Gateway: Accepted, "
       "with its references resolved",
       retry=STATUS,
       hint="the HTTPRoute's parentRefs names the Gateway, its backendRefs the Service "
            f"productpage on port 9080; `kubectl -n {NAMESPACE} get httproute NAME -o yaml` "
            "shows status.parents[].conditions (ResolvedRefs=False/BackendNotFound: no such "
            "Service or port)")
def httproute(ctx: CheckContext) -> Outcome:
    gateways = {g["metadata"]["name"] for g in _istio_class_gateways(ctx)}
    routes = [r for r in ctx.items("httproutes.gateway.networking.k8s.io", NAMESPACE)
              if PRODUCTPAGE in _backends(r)]
    if not routes:
        return failed(f"no HTTPRoute in {NAMESPACE} has a backendRef to {PRODUCTPAGE}")
    problems = []
    for route in routes:
        name = route["metadata"]["name"]
        parents = [ref.get("name") for ref in route.get("spec", {}).get("parentRefs") or []]
        attached = [p for p in parents if p in gateways]
        if not attached:
            problems.append(f"HTTPRoute {name} has parentRefs {parents}, none of them a "
                            f"Gateway of class {GATEWAY_CLASS} in {NAMESPACE}")
            continue
        status = _parent_status(route, attached[0])
        issues = (_not_true(status.get("conditions"), "Accepted", "ResolvedRefs")
                  if status else ["no status from Istio yet"])
        if not issues:
            return passed()
        problems.append(f"HTTPRoute {name} on Gateway {attached[0]}: {'; '.join(issues)}")
    return failed("; ".join(problems))


def _http_port(gateway: Obj) -> int | None:
    ports = [listener.get("port") for listener in gateway.get("spec", {}).get("listeners") or []
             if listener.get("protocol") == "HTTP"]
    return ports[0] if ports else None


@check("day1.gateways.gateway-api-productpage",
       "productpage answers through the Gateway API Gateway's own deployment (/productpage: "
       "200, the Bookinfo page)",
       retry=SETTLE,
       hint="Istio serves a Gateway NAME with the deployment and Service NAME-istio: try "
            "`curl -s http://127.0.0.1:<node port>/productpage` with the node port of "
            f"`kubectl -n {NAMESPACE} get svc NAME-istio`; a 404 means the HTTPRoute has no "
            "rule for /productpage, a 500 that its backend does not resolve")
def gateway_api_productpage(ctx: CheckContext) -> Outcome:
    targets = [(g["metadata"]["name"], port) for g in _istio_class_gateways(ctx)
               if (port := _http_port(g)) is not None]
    if not targets:
        return failed(f"no Gateway of class {GATEWAY_CLASS} in {NAMESPACE} has an HTTP "
                      "listener to send requests to")
    reasons = []
    for name, port in targets:
        outcome = _serves_bookstore(
            ctx, f"http://{name}-istio.{NAMESPACE}:{port}/{PRODUCTPAGE}")
        if outcome.status is Status.PASS:
            return outcome
        reasons.append(outcome.reason)
    return failed("; ".join(reasons))
