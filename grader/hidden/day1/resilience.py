"""Hidden checks of lab day1.resilience: that each fix is the right one, not only one that
turns the public check green — a timeout rather than an abort, a circuit breaker that trips
only under concurrency, outlier detection that ejects the broken pod and keeps the good one."""

from __future__ import annotations

from labs.checks import CheckContext, Outcome, check, failed, passed
from labs.checks.public.day1.resilience import (
    NAMESPACE,
    SETTLE,
    fortio_codes,
    host_cluster,
)
from labs.proxy import ProxyError, admin

EJECTED = "failed_outlier_check"


@check("day1.resilience.ratings-still-answers",
       "ratings itself still answers 200, only slowly: reviews is cut short by its own "
       "timeout, not by an abort",
       hidden=True, points=1, retry=SETTLE,
       hint="inject a delay (fault.delay) on ratings, not an abort, and put the timeout on "
            "reviews")
def ratings_still_answers(ctx: CheckContext) -> Outcome:
    result = ctx.probe("http://ratings:9080/ratings/0", from_workload="curl",
                       namespace=NAMESPACE, n=1, max_time=15)
    if result.codes[200] == 1:
        return passed()
    return failed(f"ratings answered {dict(result.codes)}")


@check("day1.resilience.breaker-spares-single-requests",
       "one connection at a time passes httpbin's circuit breaker: fortio -c 1 gets only 200",
       hidden=True, points=1, retry=SETTLE,
       hint="the breaker should trip on concurrency only: one connection, one pending request")
def breaker_spares_single_requests(ctx: CheckContext) -> Outcome:
    try:
        codes = fortio_codes(ctx.cluster, 1, 10)
    except ProxyError as exc:
        return failed(str(exc))
    if set(codes) == {200}:
        return passed()
    return failed(f"fortio -c 1 -n 10 got {dict(codes)}")


@check("day1.resilience.only-broken-ejected",
       "curl's sidecar marks the broken flaky pod, and only it, as failed_outlier_check",
       hidden=True, points=1, retry=SETTLE,
       hint="outlier detection on flaky: consecutive5xxErrors: 1, maxEjectionPercent: 100")
def only_broken_ejected(ctx: CheckContext) -> Outcome:
    ctx.probe("http://flaky:8000/get", from_workload="curl", namespace=NAMESPACE, n=4,
              max_time=10)
    broken = _endpoints(ctx, "flaky-v2")
    if not broken:
        return failed("no endpoint of flaky belongs to a flaky-v2 pod")
    try:
        text = admin("deploy/curl", NAMESPACE, "clusters", cluster=ctx.cluster)
    except ProxyError as exc:
        return failed(str(exc))
    prefix = host_cluster("flaky", 8000) + "::"
    flags = {}
    for line in text.splitlines():
        if line.startswith(prefix) and "::health_flags::" in line:
            flags[line[len(prefix):].split("::", 1)[0]] = line.rsplit("::", 1)[1]
    ejected = {host for host, flag in flags.items() if EJECTED in flag}
    if ejected and ejected <= broken:
        return passed()
    return failed(f"hosts marked {EJECTED}: {sorted(ejected) or 'none'}")


def _endpoints(ctx: CheckContext, pod_prefix: str) -> set[str]:
    """`ip:port` of the flaky Service's endpoints whose pod name starts with `pod_prefix`."""
    endpoints = ctx.get("endpoints", "flaky", NAMESPACE) or {}
    out = set()
    for subset in endpoints.get("subsets") or []:
        for address in subset.get("addresses") or []:
            if ((address.get("targetRef") or {}).get("name") or "").startswith(pod_prefix):
                out |= {f"{address['ip']}:{port['port']}" for port in subset.get("ports") or []}
    return out
