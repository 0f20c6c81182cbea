"""Lab day1.architecture: read what istiod pushed to the sidecars, and troubleshoot with the
commands of Istio's "Diagnostic Tools" pages, in a namespace of the lab's own (`troubleshoot`,
Bookinfo without reviews v3), so the configuration it breaks never reaches the learner's Bookinfo.

The checks judge what the control plane pushed and what the mesh does: the weighted route in
productpage's sidecar (its `/config_dump`, what `istioctl proxy-config route -o json` prints),
the same analyzers as `istioctl analyze -n troubleshoot`, and ratings answering reviews again
after the mTLS break is fixed.
"""

from __future__ import annotations

from typing import Any

from labs.checks.context import CheckContext
from labs.checks.model import Outcome, Retry, failed, passed
from labs.checks.public.day1 import describe, meshed_workloads_run
from labs.checks.registry import check
from labs.istioctl.analyze import AnalyzeError, analyze, live_snapshot
from labs.proxy import ProxyError, config_dump

NAMESPACE = "troubleshoot"
WORKLOADS = ("productpage-v1", "details-v1", "ratings-v1", "reviews-v1", "reviews-v2")
SPLIT = {"v1": 80, "v2": 20}  # the weights of the lab's reviews VirtualService
RATINGS_URL = "http://ratings:9080/ratings/0"
SETTLE = Retry(consecutive=1, deadline=20, interval=1)
Obj = dict[str, Any]


def subset_cluster(service: str, subset: str, port: int = 9080) -> str:
    """Istio's name for the Envoy cluster of a DestinationRule subset in the lab's namespace."""
    return f"outbound|{port}|{subset}|{service}.{NAMESPACE}.svc.cluster.local"


def route_weights(dump: Obj, service: str) -> list[dict[str, int]]:
    """The weighted clusters ({cluster: weight}) of each route of `service`'s virtual host in
    the sidecar's outbound route configuration; a route to one cluster counts as weight 100."""
    section = next((c for c in dump.get("configs", [])
                    if c.get("@type", "").endswith(".RoutesConfigDump")), {})
    prefix = f"{service}.{NAMESPACE}.svc.cluster.local:"
    found = []
    for dynamic in section.get("dynamic_route_configs", []):
        for host in dynamic.get("route_config", {}).get("virtual_hosts", []):
            if not str(host.get("name", "")).startswith(prefix):
                continue
            for route in host.get("routes", []):
                action = route.get("route") or {}
                weighted = (action.get("weighted_clusters") or {}).get("clusters") or []
                if weighted:
                    found.append({c["name"]: int(c.get("weight", 0)) for c in weighted})
                elif action.get("cluster"):
                    found.append({action["cluster"]: 100})
    return found


@check("day1.architecture.apps",
       "the lab's Bookinfo runs with sidecars in namespace troubleshoot",
       points=0, fatal=True,
       hint="run the lab's set-up cell (section 0) again: it creates namespace troubleshoot, "
            "labels it for injection and deploys Bookinfo without reviews v3 into it",
       anchor="0-·-Connect,-and-set-up-the-lab")
def apps(ctx: CheckContext) -> Outcome:
    return meshed_workloads_run(ctx, NAMESPACE, WORKLOADS)


@check("day1.architecture.reviews-split-pushed",
       "istiod pushed productpage's sidecar a route for reviews that sends 80 % to subset v1 "
       "and 20 % to subset v2",
       retry=SETTLE,
       hint="apply a VirtualService reviews (host reviews) with one route of two destinations: "
            "subset v1 weight 80 and subset v2 weight 20; read the result with `istioctl "
            "proxy-config route deploy/productpage-v1 -n troubleshoot -o json`",
       anchor="3-·-One-VirtualService,-many-Envoy-routes")
def reviews_split_pushed(ctx: CheckContext) -> Outcome:
    try:
        routes = route_weights(config_dump("deploy/productpage-v1", NAMESPACE,
                                           cluster=ctx.cluster), "reviews")
    except ProxyError as exc:
        return failed(str(exc))
    wanted = {subset_cluster("reviews", subset): weight for subset, weight in SPLIT.items()}
    if wanted in routes:
        return passed()
    seen = "; ".join(", ".join(f"{name} {weight}" for name, weight in r.items()) for r in routes)
    return failed(f"productpage's routes for reviews go to: {seen or 'nothing'}; expected "
                  + ", ".join(f"{name} {weight}" for name, weight in wanted.items()))


def analyze_namespace(ctx: CheckContext) -> list[str]:
    """What `istioctl analyze -n troubleshoot` prints for the lab's namespace, one line each."""
    return [str(m) for m in analyze(live_snapshot(ctx.cluster), [NAMESPACE])]


@check("day1.architecture.analyze-clean",
       "istioctl analyze finds no issues in namespace troubleshoot",
       hint="run `istioctl analyze -n troubleshoot` and fix what each message names: IST0101 "
            "a host or subset that does not exist, IST0118 a Service port name without a "
            "protocol prefix (http, http-..., grpc, tcp, ...)",
       anchor="5-·-istioctl-analyze:-read-the-codes,-fix-the-config")
def analyze_clean(ctx: CheckContext) -> Outcome:
    try:
        messages = analyze_namespace(ctx)
    except AnalyzeError as exc:
        return failed(str(exc))
    if not messages:
        return passed()
    return failed("istioctl analyze -n troubleshoot still reports: " + "; ".join(messages))


@check("day1.architecture.ratings-answers",
       "reviews v2 gets its ratings again: ratings answers 200 to reviews v2's calls",
       retry=SETTLE,
       hint="read the 503's response flag in `kubectl logs deploy/reviews-v2 -c istio-proxy -n "
            "troubleshoot`, then compare what `istioctl x describe pod` says about the "
            "DestinationRule's TLS mode and the namespace's PeerAuthentication",
       anchor="6-·-Break-and-fix:-the-stars-are-gone")
def ratings_answers(ctx: CheckContext) -> Outcome:
    result = ctx.probe(RATINGS_URL, from_workload="reviews-v2", namespace=NAMESPACE, n=3,
                       max_time=10)
    if result.codes[200] == result.total:
        return passed()
    return failed(f"expected 200 every time; {describe(result)}")
