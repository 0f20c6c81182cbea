"""Lab day1.traffic: Istio's "Request Routing" task — reviews goes to v1 only, through a
DestinationRule with subsets v1/v2/v3, and the signed-in user jason is sent to v2 by a header
match. Behavioural checks probe reviews from productpage's workload (its sidecar applies the
routes) and tolerate a stray answer while the new routes reach the proxy."""

from __future__ import annotations

from labs.checks.context import CheckContext
from labs.checks.model import Outcome, Retry, failed, passed
from labs.checks.public.day1 import NAMESPACE, describe
from labs.checks.registry import check
from labs.traffic import reviews_version

VERSIONS = ("v1", "v2", "v3")
HOSTS = ("reviews", f"reviews.{NAMESPACE}", f"reviews.{NAMESPACE}.svc.cluster.local")
REVIEWS_URL = "http://reviews:9080/reviews/0"
TOLERANCE = 0.9  # share of answers that must come from the expected version
REQUESTS = 10
SETTLE = Retry(consecutive=2, deadline=20, interval=1)


def _served_by(ctx: CheckContext, version: str, headers: dict[str, str]) -> Outcome:
    result = ctx.probe(REVIEWS_URL, from_workload="productpage-v1", namespace=NAMESPACE,
                       n=REQUESTS, headers=headers, classify=reviews_version, max_time=10)
    if result.fraction(200) == 1.0 and result.fraction(version) >= TOLERANCE:
        return passed()
    return failed(f"expected reviews {version} to answer (at least {TOLERANCE:.0%}); "
                  f"{describe(result)}")


@check("day1.traffic.subsets",
       "a DestinationRule for reviews defines subsets v1, v2 and v3 by the version label",
       hint="apply a DestinationRule with host: reviews and subsets named v1, v2, v3, each with "
            "labels: {version: <name>} (Istio's samples/bookinfo/networking/"
            "destination-rule-all.yaml)",
       anchor="2-·-Subsets")
def subsets(ctx: CheckContext) -> Outcome:
    rules = [r for r in ctx.items("destinationrules.networking.istio.io", NAMESPACE)
             if r.get("spec", {}).get("host") in HOSTS]
    if not rules:
        return failed(f"no DestinationRule in {NAMESPACE} has host reviews")
    problems = []
    for rule in rules:
        defined = {s.get("name"): s.get("labels") or {}
                   for s in rule["spec"].get("subsets") or []}
        missing = [v for v in VERSIONS if v not in defined]
        mislabelled = [v for v in VERSIONS if v in defined and defined[v] != {"version": v}]
        if not missing and not mislabelled:
            return passed()
        name = rule["metadata"]["name"]
        problems += ([f"{name}: no subset {', '.join(missing)}"] if missing else []) + [
            f"{name}: subset {v} selects {defined[v]}, not {{'version': '{v}'}}"
            for v in mislabelled]
    return failed("; ".join(problems))


@check("day1.traffic.reviews-v1", "requests to reviews are served by reviews v1 only",
       retry=SETTLE,
       hint="apply a VirtualService for host reviews whose default route goes to subset v1 "
            "(samples/bookinfo/networking/virtual-service-all-v1.yaml); it needs the "
            "DestinationRule's subsets",
       anchor="3-·-Everyone-to-v1-—-except-jason")
def reviews_v1(ctx: CheckContext) -> Outcome:
    return _served_by(ctx, "v1", {})


@check("day1.traffic.jason-v2", "requests from user jason (end-user: jason) go to reviews v2",
       retry=SETTLE,
       hint="in the reviews VirtualService, put a rule matching headers: {end-user: {exact: "
            "jason}} routed to subset v2 BEFORE the default v1 route "
            "(samples/bookinfo/networking/virtual-service-reviews-test-v2.yaml)",
       anchor="3-·-Everyone-to-v1-—-except-jason")
def jason_v2(ctx: CheckContext) -> Outcome:
    return _served_by(ctx, "v2", {"end-user": "jason"})
