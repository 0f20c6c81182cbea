"""Lab day1.resilience: Istio's request-timeouts, fault-injection and circuit-breaking tasks in
a namespace of the lab's own (`resilience`), so the faults never reach the learner's Bookinfo.

The checks judge what the mesh does: reviews answering 504 while ratings is delayed, attempts
counted at the server (httpbin's sidecar access log, as `kubectl logs deploy/httpbin -c
istio-proxy` shows it), fortio tripping the circuit breaker (both 200 and 503, and the client
sidecar's `upstream_rq_pending_overflow`) and the broken `flaky` pod ejected by outlier
detection — counters and "both codes appear", never exact percentages.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import Counter
from dataclasses import dataclass

from labs.checks.context import CheckContext
from labs.checks.model import Outcome, Retry, failed, passed
from labs.checks.public.day1 import describe, meshed_workloads_run
from labs.checks.registry import check
from labs.cluster import ClusterRef, current_cluster
from labs.duration import DurationError, go_duration_seconds
from labs.istio_names import SIDECAR_CONTAINER
from labs.proxy import ProxyError, stats
from labs.traffic import probe

NAMESPACE = "resilience"
WORKLOADS = ("curl", "fortio-deploy", "httpbin", "ratings-v1", "reviews-v2", "flaky-v1",
             "flaky-v2")
TIMEOUT_BODY = "upstream request timeout"  # Envoy's local reply when the route timeout fires
RETRY_ATTEMPTS = 4  # the first try and `attempts: 3` retries
FORTIO = ("/usr/bin/fortio", "load", "-qps", "0", "-loglevel", "Warning")
# Retried until the change reaches the proxies; one pass is enough, since each needs evidence
# a stale config cannot give (a 504 with Envoy's timeout body, counted attempts, counters).
SETTLE = Retry(consecutive=1, deadline=20, interval=1)
LOG_SETTLE_S = 0.6  # the embedded sidecars flush their access logs every 200 ms
LOG_DEADLINE_S = 5.0
_CODE = re.compile(r"^Code\s+(-?\d+)\s+:\s+(\d+)", re.M)


def host_cluster(service: str, port: int) -> str:
    """The client sidecar's Envoy cluster for a Service port of the lab's namespace."""
    return f"outbound|{port}||{service}.{NAMESPACE}.svc.cluster.local"


def _hosts(name: str) -> tuple[str, ...]:
    return (name, f"{name}.{NAMESPACE}", f"{name}.{NAMESPACE}.svc",
            f"{name}.{NAMESPACE}.svc.cluster.local")


def marked(url: str) -> tuple[str, str]:
    """`url` with a query parameter no other request carries, and that marker."""
    marker = f"probe={secrets.token_hex(6)}"
    return f"{url}{'&' if '?' in url else '?'}{marker}", marker


def server_log_lines(cluster: ClusterRef, workload: str, marker: str,
                     namespace: str = NAMESPACE) -> list[str]:
    """The lines of `kubectl logs deploy/<workload> -c istio-proxy` that carry `marker`: one per
    attempt that reached the server's sidecar. Envoy flushes its access log on a timer, so the
    log is read again until the count has stayed the same for LOG_SETTLE_S (at most
    LOG_DEADLINE_S after the first line)."""
    start = time.monotonic()
    lines: list[str] = []
    steady_since = start
    while True:
        log = cluster.kubectl(f"--namespace={namespace}", "logs", f"deploy/{workload}", "-c",
                              SIDECAR_CONTAINER, timeout=30)
        if log.returncode != 0:
            raise ProxyError(f"`kubectl logs deploy/{workload} -c {SIDECAR_CONTAINER} "
                             f"-n {namespace}` failed: {log.stderr.strip()}")
        found = [line for line in log.stdout.splitlines() if marker in line]
        now = time.monotonic()
        if len(found) != len(lines):
            lines, steady_since = found, now
        if (lines and now - steady_since >= LOG_SETTLE_S) or now - start > LOG_DEADLINE_S:
            return lines
        time.sleep(0.1)


@dataclass(frozen=True, repr=False)
class Attempts:
    """One request from a client workload, and the attempts the server's sidecar logged."""

    url: str
    client: str
    server: str
    status: int  # what the client got; 0: no HTTP answer
    lines: tuple[str, ...]  # the server sidecar's access-log lines for it, one per attempt

    @property
    def count(self) -> int:
        return len(self.lines)

    def __str__(self) -> str:
        return "\n".join([f"{self.client} got {self.status or 'no answer'} for {self.url}; "
                          f"{self.server}'s sidecar logged {self.count} attempt(s):", *self.lines])

    __repr__ = __str__  # the plain-text view in a notebook


def count_attempts(url: str, *, cluster: ClusterRef | None = None, server: str = "httpbin",
                   client: str = "curl", namespace: str = NAMESPACE) -> Attempts:
    """Send one request to `url` from deploy/<client> and count the attempts that reached
    deploy/<server>'s sidecar (a marker in the query string finds them in its access log)."""
    ref = cluster or current_cluster()
    target, marker = marked(url)
    result = probe(target, from_workload=client, namespace=namespace, n=1, max_time=15,
                   cluster=ref)
    return Attempts(target, client, server, next(iter(result.codes)),
                    tuple(server_log_lines(ref, server, marker, namespace)))


def fortio_codes(cluster: ClusterRef, connections: int, calls: int,
                 namespace: str = NAMESPACE) -> Counter[int]:
    """`fortio load -c N -qps 0 -n M http://httpbin:8000/get` from the fortio pod, as in
    Istio's circuit-breaking task: the count of each status code ("Code 503 : 9")."""
    result = cluster.kubectl(f"--namespace={namespace}", "exec", "deploy/fortio-deploy", "-c",
                             "fortio", "--", *FORTIO, "-c", str(connections), "-n", str(calls),
                             "http://httpbin:8000/get", timeout=120)
    codes = Counter({int(code): int(n) for code, n in _CODE.findall(result.stdout)})
    if not codes:
        raise ProxyError(f"fortio printed no status codes (exit {result.returncode}): "
                         f"{(result.stderr or result.stdout).strip()[-300:]}")
    return codes


def cluster_stat(cluster: ClusterRef, workload: str, envoy_cluster: str, name: str) -> int:
    """One counter or gauge of `envoy_cluster` in deploy/<workload>'s sidecar (what
    `pilot-agent request GET stats` prints as `cluster.<envoy_cluster>.<name>: N`)."""
    return stats(f"deploy/{workload}", NAMESPACE, cluster=cluster).get(
        f"cluster.{envoy_cluster}.{name}", 0)


def _codes(codes: Counter[int]) -> str:
    return ", ".join(f"{code} ×{n}" for code, n in sorted(codes.items()))


@check("day1.resilience.apps",
       "the lab's workloads run with sidecars in namespace resilience",
       points=0, fatal=True,
       hint="run the lab's set-up cells (section 0) again: they create namespace resilience "
            "and deploy curl, fortio, httpbin, reviews v2, ratings and flaky into it",
       anchor="0-·-Connect,-and-set-up-the-lab")
def apps(ctx: CheckContext) -> Outcome:
    return meshed_workloads_run(ctx, NAMESPACE, WORKLOADS)


@check("day1.resilience.ratings-delay",
       "a VirtualService for ratings delays every request by at least 1 s (fault injection)",
       hint="apply a VirtualService for host ratings whose route has fault: {delay: {fixedDelay: "
            "2s, percentage: {value: 100}}} (Istio's request-timeouts task)",
       anchor="1-·-Timeouts:-do-not-wait-for-a-slow-call")
def ratings_delay(ctx: CheckContext) -> Outcome:
    services = [vs for vs in ctx.items("virtualservices.networking.istio.io", NAMESPACE)
                if set((vs.get("spec") or {}).get("hosts") or []) & set(_hosts("ratings"))]
    if not services:
        return failed(f"no VirtualService in {NAMESPACE} has host ratings")
    seen = []
    for vs in services:
        for rule in (vs.get("spec") or {}).get("http") or []:
            delay = (rule.get("fault") or {}).get("delay") or {}
            if not delay.get("fixedDelay"):
                continue
            try:
                seconds = go_duration_seconds(delay["fixedDelay"], "fixedDelay")
            except DurationError as exc:
                return failed(str(exc))
            share = float((delay.get("percentage") or {}).get("value", 0))
            if seconds >= 1 and share >= 100 and not rule.get("match"):
                return passed()
            seen.append(f"{vs['metadata']['name']}: {delay['fixedDelay']} for {share:g} % of "
                        f"requests{' matching ' + str(rule['match']) if rule.get('match') else ''}")
    if not seen:
        return failed("the ratings VirtualService injects no delay (spec.http[].fault.delay)")
    return failed("delays found, but none of at least 1 s for every request: " + "; ".join(seen))


@check("day1.resilience.reviews-timeout",
       "reviews gives up on the slow ratings call: requests to reviews get "
       "504 upstream request timeout",
       retry=SETTLE,
       hint="apply a VirtualService for host reviews with timeout: 0.5s on its route; it has to "
            "be shorter than the 2 s delay on ratings",
       anchor="1-·-Timeouts:-do-not-wait-for-a-slow-call")
def reviews_timeout(ctx: CheckContext) -> Outcome:
    result = ctx.probe("http://reviews:9080/reviews/0", from_workload="curl",
                       namespace=NAMESPACE, n=2, max_time=10, classify=str.strip)
    if result.codes == Counter({504: 2}) and result.labels == Counter({TIMEOUT_BODY: 2}):
        return passed()
    return failed(f"expected 504 {TIMEOUT_BODY!r} every time; {describe(result)}")


@check("day1.resilience.retries",
       f"a request httpbin answers with 503 reaches httpbin {RETRY_ATTEMPTS} times "
       "(retries: attempts 3, retryOn 5xx)",
       retry=SETTLE,
       hint="give the httpbin VirtualService's route retries: {attempts: 3, retryOn: 5xx}; "
            "count the attempts in `kubectl logs deploy/httpbin -c istio-proxy -n resilience`",
       anchor="2-·-Retries:-count-them-at-the-server")
def retries(ctx: CheckContext) -> Outcome:
    seen = count_attempts("http://httpbin:8000/status/503", cluster=ctx.cluster)
    if seen.status == 503 and seen.count == RETRY_ATTEMPTS:
        return passed()
    return failed(f"one request to /status/503 got {seen.status or 'no answer'} after "
                  f"{seen.count} attempt(s) logged by httpbin's sidecar; expected 503 after "
                  f"{RETRY_ATTEMPTS}")


@check("day1.resilience.slow-path",
       "httpbin's slow /delay/1 answers 200 and reaches httpbin once: the per-try timeout "
       "leaves it time",
       retry=SETTLE,
       hint="the per-try timeout must be longer than the slowest legitimate answer: "
            "perTryTimeout: 2s (keep attempts: 3 and retryOn: 5xx)",
       anchor="3-·-Break-and-fix:-retries-that-make-things-worse")
def slow_path(ctx: CheckContext) -> Outcome:
    seen = count_attempts("http://httpbin:8000/delay/1", cluster=ctx.cluster)
    if seen.status == 200 and seen.count == 1:
        return passed()
    return failed(f"one request to /delay/1 got {seen.status or 'no answer'} after "
                  f"{seen.count} attempt(s) logged by httpbin's sidecar; expected 200 after 1")


@check("day1.resilience.circuit-breaker",
       "3 concurrent fortio connections trip httpbin's circuit breaker: both 200 and 503 come "
       "back, and fortio's sidecar counts pending-request overflows",
       retry=SETTLE,
       hint="apply a DestinationRule for host httpbin with trafficPolicy.connectionPool: "
            "{tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1, "
            "maxRequestsPerConnection: 1}}",
       anchor="4-·-Circuit-breaking")
def circuit_breaker(ctx: CheckContext) -> Outcome:
    overflow = "upstream_rq_pending_overflow"
    try:
        before = cluster_stat(ctx.cluster, "fortio-deploy", host_cluster("httpbin", 8000),
                              overflow)
        codes = fortio_codes(ctx.cluster, 3, 30)
        after = cluster_stat(ctx.cluster, "fortio-deploy", host_cluster("httpbin", 8000),
                             overflow)
    except ProxyError as exc:
        return failed(str(exc))
    if codes[200] and codes[503] and after > before:
        return passed()
    return failed(f"fortio -c 3 -n 30 got {_codes(codes)}; {overflow} went from {before} to "
                  f"{after}; expected both 200 and 503 and a growing overflow counter")


@check("day1.resilience.outlier-ejection",
       "the broken flaky pod is ejected: requests to flaky succeed and curl's sidecar has an "
       "active ejection",
       retry=SETTLE,
       hint="a DestinationRule for host flaky with outlierDetection: {consecutive5xxErrors: 1, "
            "interval: 1s, baseEjectionTime: 3m, maxEjectionPercent: 100}; without "
            "maxEjectionPercent, Envoy ejects at most 10 % of 2 hosts: none "
            "(outlier_detection.ejections_overflow counts the refusals)",
       anchor="5-·-Break-and-fix:-outlier-detection")
def outlier_ejection(ctx: CheckContext) -> Outcome:
    result = ctx.probe("http://flaky:8000/get", from_workload="curl", namespace=NAMESPACE,
                       n=10, max_time=10)
    try:
        active = cluster_stat(ctx.cluster, "curl", host_cluster("flaky", 8000),
                              "outlier_detection.ejections_active")
    except ProxyError as exc:
        return failed(str(exc))
    failures = result.total - result.codes[200]
    # The first request to reach the broken pod fails and gets it ejected; later ones do not.
    if active >= 1 and failures <= 2:
        return passed()
    return failed(f"{describe(result)}; outlier_detection.ejections_active is {active}")
