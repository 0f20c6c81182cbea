"""Lab day2.authz: Istio's "Authorization on HTTP traffic" task on Bookinfo — allow-nothing in the
namespace, then GET on productpage for anyone, details and reviews for productpage's service
account only, ratings for reviews' only, and a DENY policy that wins over those ALLOWs. The
behavioural checks judge each policy by the answers real requests get from the workloads it
names, and by the destination proxy's own account of the decision (`labs.authz.explain`)."""

from __future__ import annotations

from typing import Any

from labs.authz import AuthzError, explain
from labs.checks.context import CheckContext
from labs.checks.model import Outcome, Retry, Status, failed, passed
from labs.checks.public.day2 import Expect, expect_statuses, meshed_apps
from labs.checks.registry import check
from labs.course import manifest
from labs.traffic import reviews_version

NAMESPACE = "bookinfo"
APPS = ("productpage", "details", "reviews", "ratings", "curl")
PRODUCTPAGE = "http://productpage:9080"
DETAILS = "http://details:9080/details/0"
REVIEWS = "http://reviews:9080/reviews/0"
RATINGS = "http://ratings:9080/ratings/0"
API = f"{PRODUCTPAGE}/api/v1/products"
PAGE_REQUESTS = 6  # round-robin over reviews v1/v2/v3: v2 and v3 call ratings
PAGE_ERRORS = ("Error fetching product", "Ratings service is currently unavailable")
SETTLE = Retry(consecutive=2, deadline=20, interval=1)
POLICY_KIND = "authorizationpolicies.security.istio.io"


def principal(service_account: str) -> str:
    return f"cluster.local/ns/{NAMESPACE}/sa/{service_account}"


@check("day2.authz.workloads",
       f"Bookinfo and the curl client run in {NAMESPACE}, each pod with an istio-proxy sidecar",
       fatal=True, points=0,
       hint="run the lab's first cell: `labs.deploy_bookinfo()`, then "
            f"`kubectl apply -n {NAMESPACE} -f {manifest('curl')}`")
def workloads(ctx: CheckContext) -> Outcome:
    return meshed_apps(ctx, NAMESPACE, APPS)


def _allows_nothing(policy: dict[str, Any]) -> bool:
    spec = policy.get("spec") or {}
    return (spec.get("action", "ALLOW") == "ALLOW" and not spec.get("rules")
            and not any(spec.get(k) for k in ("selector", "targetRef", "targetRefs",
                                              "provider")))


@check("day2.authz.allow-nothing",
       f"an allow-nothing AuthorizationPolicy (no selector, `spec: {{}}`) covers namespace "
       f"{NAMESPACE}",
       hint="apply an AuthorizationPolicy named allow-nothing in namespace bookinfo whose spec "
            "is empty (`spec: {}`): no selector, so every workload; no rules, so nothing is "
            "allowed until another policy allows it")
def allow_nothing(ctx: CheckContext) -> Outcome:
    policies = ctx.items(POLICY_KIND, NAMESPACE)
    if any(_allows_nothing(p) for p in policies):
        return passed()
    names = ", ".join(p["metadata"]["name"] for p in policies) or "none"
    return failed(f"no policy in {NAMESPACE} is an ALLOW without selector and rules "
                  f"(policies there: {names})")


@check("day2.authz.productpage-viewer",
       "anyone in the mesh may GET productpage, and only GET (sign-in, a POST, is refused)",
       retry=SETTLE,
       hint="apply productpage-viewer: selector app: productpage, action: ALLOW, rules: "
            "[{to: [{operation: {methods: [GET]}}]}] — no `from`, so every source")
def productpage_viewer(ctx: CheckContext) -> Outcome:
    return expect_statuses(ctx, NAMESPACE, [
        Expect("curl", f"{PRODUCTPAGE}/productpage", 200),
        Expect("curl", f"{PRODUCTPAGE}/login", 403, method="POST")])


@check("day2.authz.details-reviews",
       "only productpage's service account (bookinfo-productpage) may GET details and reviews",
       retry=SETTLE,
       hint="apply details-viewer and reviews-viewer: selector app: details (app: reviews), "
            f"rules: [{{from: [{{source: {{principals: [{principal('bookinfo-productpage')}]}}}}"
            "], to: [{operation: {methods: [GET]}}]}]")
def details_reviews(ctx: CheckContext) -> Outcome:
    return expect_statuses(ctx, NAMESPACE, [
        Expect("productpage-v1", DETAILS, 200), Expect("productpage-v1", REVIEWS, 200),
        Expect("curl", DETAILS, 403), Expect("curl", REVIEWS, 403)])


def page_state(body: str) -> str:
    """What the product page showed: an error, or the reviews version with its ratings."""
    for error in PAGE_ERRORS:
        if error in body:
            return error
    return reviews_version(body) or "unrecognised page"


@check("day2.authz.ratings",
       "only reviews' service account (bookinfo-reviews) may GET ratings, and the product page "
       "shows details, reviews and star ratings again",
       retry=SETTLE,
       hint="apply ratings-viewer: selector app: ratings, rules: [{from: [{source: "
            f"{{principals: [{principal('bookinfo-reviews')}]}}}}], to: [{{operation: "
            "{methods: [GET]}}]}]; reviews v2 and v3 call ratings, so Day 1's VirtualService "
            "pinning reviews to v1 must be gone (`kubectl delete virtualservice reviews -n "
            "bookinfo`)")
def ratings(ctx: CheckContext) -> Outcome:
    refused = expect_statuses(ctx, NAMESPACE, [Expect("curl", RATINGS, 403),
                                               Expect("productpage-v1", RATINGS, 403)])
    if refused.status is not Status.PASS:
        return refused
    page = ctx.probe(f"{PRODUCTPAGE}/productpage", from_workload="curl", namespace=NAMESPACE,
                     n=PAGE_REQUESTS, classify=page_state, max_time=10)
    shown = ", ".join(f"{label} ×{n}" for label, n in sorted(page.labels.items()))
    if page.codes != {200: PAGE_REQUESTS} or set(page.labels) - {"v1", "v2", "v3"}:
        codes = ", ".join(f"{c or 'no response'} ×{n}" for c, n in sorted(page.codes.items()))
        return failed(f"GET /productpage from curl: {codes}; the page showed {shown}")
    if not page.labels["v2"] + page.labels["v3"]:
        return failed(f"no page came from reviews v2 or v3, which show ratings, in "
                      f"{PAGE_REQUESTS} tries ({shown})")
    return passed()


@check("day2.authz.deny-api",
       "a DENY policy refuses productpage's API (/api/v1/...) although productpage-viewer "
       "allows every GET, and the page itself still loads",
       retry=SETTLE,
       hint="apply deny-api: selector app: productpage, action: DENY, rules: [{to: "
            "[{operation: {paths: [/api/v1/*]}}]}]; DENY is evaluated before ALLOW")
def deny_api(ctx: CheckContext) -> Outcome:
    page = expect_statuses(ctx, NAMESPACE, [Expect("curl", f"{PRODUCTPAGE}/productpage", 200)])
    if page.status is not Status.PASS:
        return page
    try:
        decision = explain(API, from_workload="curl", namespace=NAMESPACE, cluster=ctx.cluster)
    except AuthzError as exc:
        return failed(str(exc))
    if decision.status == 403 and decision.policy and decision.policy.action == "DENY":
        return passed()
    return failed(f"GET /api/v1/products from curl: {decision.status}, {decision.verdict}")
