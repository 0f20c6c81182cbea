"""Lab day1.observability: Istio's observability tasks in a namespace of the lab's own —
`observe` (meshed: httpbin and a curl client), with a curl client outside the mesh in `outside`.

The checks judge numbers, never charts: the learner's error-rate PromQL (saved the way Grafana
dashboards are provisioned, in a ConfigMap) must return httpbin's share of 5xx answers as
Prometheus computes it, within a tolerance; and once `observe` is STRICT, Prometheus must show
no new plaintext request reaching httpbin (`connection_security_policy="none"` stops growing)
while meshed calls keep arriving over `mutual_tls`. Each check sends its own requests first, so
the rates it reads cover traffic of the last seconds whenever it runs.
"""

from __future__ import annotations

import math
import time

from labs.checks.context import CheckContext
from labs.checks.model import Outcome, Retry, failed, passed
from labs.checks.public.day1 import describe
from labs.checks.registry import check
from labs.metrics import MetricsError, query, scraped_since

NAMESPACE = "observe"
OUTSIDE = "outside"
CONFIGMAP, QUERY_KEY = "golden-signals", "error-rate"
HTTPBIN = f"http://httpbin.{NAMESPACE}:8000"
# httpbin's answers the checks ask for: three 200s for each 503, the lab's traffic mix.
MIX = (("/status/200", 6), ("/status/503", 2))
TOLERANCE = 0.1  # the learner may pick another rate window than the reference's [1m]
HTTPBIN_REQUESTS = (f'istio_requests_total{{reporter="destination",destination_workload='
                    f'"httpbin",destination_workload_namespace="{NAMESPACE}"')
REFERENCE_ERROR_RATE = (f'sum(rate({HTTPBIN_REQUESTS},response_code=~"5.."}}[1m])) / '
                        f'sum(rate({HTTPBIN_REQUESTS}}}[1m]))')
SCRAPE_WAIT_S = 15.0
# From a request's end to its count on /metrics: the embedded sidecar's log flush (0.2 s) and
# the telemetry server's poll (0.2 s), with room for a loaded machine.
COUNTING_LAG_S = 1.0
SETTLE = Retry(consecutive=1, deadline=30, interval=1)


def send_mix(ctx: CheckContext) -> None:
    """The lab's traffic mix from the meshed client, so a rate over the last minute has data."""
    for path, n in MIX:
        ctx.probe(HTTPBIN + path, from_workload="curl", namespace=NAMESPACE, n=n, max_time=10)


def requests_by_security(ctx: CheckContext, policy: str) -> float:
    """How many requests httpbin's sidecar has reported with this connection security."""
    return query(f'sum({HTTPBIN_REQUESTS},connection_security_policy="{policy}"}})',
                 cluster=ctx.cluster).total()


@check("day1.observability.error-rate-query",
       f"the PromQL in ConfigMap {CONFIGMAP} (key {QUERY_KEY}, namespace {NAMESPACE}) returns "
       "httpbin's share of 5xx responses",
       retry=SETTLE,
       hint="one value between 0 and 1: the rate of httpbin's requests with response_code=~\"5..\" "
            "divided by the rate of all its requests, both sum(rate(istio_requests_total{"
            "reporter=\"destination\", destination_workload=\"httpbin\", ...}[1m])); save it with "
            f"labs.apply(ConfigMap YAML, namespace=\"{NAMESPACE}\")",
       anchor="3-·-Your-turn:-the-error-rate")
def error_rate_query(ctx: CheckContext) -> Outcome:
    configmap = ctx.get("configmap", CONFIGMAP, NAMESPACE)
    promql = ((configmap or {}).get("data") or {}).get(QUERY_KEY, "").strip()
    if not promql:
        return failed(f"no ConfigMap {CONFIGMAP} with a key {QUERY_KEY} in {NAMESPACE}"
                      if configmap is None else f"ConfigMap {CONFIGMAP} has no key {QUERY_KEY}")
    send_mix(ctx)
    try:
        reference = query(REFERENCE_ERROR_RATE, cluster=ctx.cluster).total()
        answer = query(promql, cluster=ctx.cluster)
    except MetricsError as err:
        return failed(f"your query could not run: {err}")
    if len(answer) != 1:
        return failed(f"your query returns {len(answer)} series; sum them into one value "
                      "(sum(...) / sum(...))")
    value = answer[0].value
    if math.isnan(reference) or reference == 0:
        return failed("Prometheus has no 5xx answers of httpbin in the last minute yet")
    if math.isnan(value) or abs(value - reference) > TOLERANCE:
        return failed(f"your query returns {value:.3g}; httpbin's share of 5xx answers is "
                      f"{reference:.3g} (an answer near {1 - reference:.3g} is the success rate)")
    return passed()


@check("day1.observability.strict",
       f"a PeerAuthentication requires mutual TLS (STRICT) for httpbin in {NAMESPACE}",
       hint=f"apply a PeerAuthentication named default in namespace {NAMESPACE}, without a "
            "selector, with spec.mtls.mode: STRICT",
       anchor="6-·-Your-turn:-prove-the-migration-with-metrics")
def strict(ctx: CheckContext) -> Outcome:
    policies = ctx.items("peerauthentications.security.istio.io", NAMESPACE)
    applying = [p for p in policies
                if (p.get("spec", {}).get("selector") or {}).get("matchLabels", {}) in (
                    {}, {"app": "httpbin"})]
    if not applying:
        return failed(f"no PeerAuthentication in {NAMESPACE} applies to httpbin")
    modes = {p["metadata"]["name"]: (p["spec"].get("mtls") or {}).get("mode", "UNSET")
             for p in applying}
    if "STRICT" not in modes.values():
        return failed("mode " + ", ".join(f"{m} ({name})" for name, m in modes.items()))
    return passed()


@check("day1.observability.no-plaintext",
       "Prometheus shows no new plaintext request reaching httpbin (connection_security_policy="
       "\"none\" stops growing) while meshed calls arrive over mutual_tls",
       retry=SETTLE,
       hint=f"while {NAMESPACE} is PERMISSIVE, curl in {OUTSIDE} (no sidecar) gets in and its "
            "requests are counted with connection_security_policy=\"none\"; make the namespace "
            "STRICT",
       anchor="6-·-Your-turn:-prove-the-migration-with-metrics")
def no_plaintext(ctx: CheckContext) -> Outcome:
    try:
        # The baseline must hold every earlier request (the error-rate check's traffic has just
        # been sent): read it from a scrape that began after those requests were counted.
        if not scraped_since(HTTPBIN_REQUESTS + "}", time.time() + COUNTING_LAG_S,
                             cluster=ctx.cluster, deadline=SCRAPE_WAIT_S):
            return failed(f"Prometheus did not scrape httpbin's metrics in {SCRAPE_WAIT_S:g} s")
        plaintext, meshed = (requests_by_security(ctx, p) for p in ("none", "mutual_tls"))
        outside = ctx.probe(f"{HTTPBIN}/status/200", from_workload="curl", namespace=OUTSIDE,
                            n=2, max_time=5)
        inside = ctx.probe(f"{HTTPBIN}/status/200", from_workload="curl", namespace=NAMESPACE,
                           n=3, max_time=10)
        if inside.fraction(200) < 1:
            return failed(f"meshed calls must keep working: {describe(inside)}")
        # httpbin's proxy counts the meshed requests after the plaintext ones sent before them:
        # once Prometheus shows the meshed ones, it shows the plaintext ones too.
        seen = query(f'sum({HTTPBIN_REQUESTS},connection_security_policy="mutual_tls"}})',
                     cluster=ctx.cluster, until=lambda v: v.total() >= meshed + inside.total,
                     deadline=SCRAPE_WAIT_S)
        new_plaintext = requests_by_security(ctx, "none") - plaintext
    except MetricsError as err:
        return failed(str(err))
    if not seen.settled:
        return failed(f"the meshed requests did not show up as mutual_tls in {SCRAPE_WAIT_S:g} s "
                      f"({describe(inside)})")
    if new_plaintext > 0:
        return failed(f"{new_plaintext:g} new plaintext request(s) reached httpbin "
                      f"(connection_security_policy=\"none\"); {describe(outside)}")
    return passed()
