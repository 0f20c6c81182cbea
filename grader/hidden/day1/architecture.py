"""Hidden checks of lab day1.architecture: that each fix is the right one, not only one that
turns the public check green — the pushed split really splits the traffic, the analyze fixes
repair the colleague's VirtualServices instead of deleting them, and the mTLS break is fixed
on the client's side with the namespace still STRICT."""

from __future__ import annotations

from labs.checks import CheckContext, Outcome, Retry, check, failed, passed
from labs.checks.public.day1 import describe
from labs.checks.public.day1.architecture import NAMESPACE, SETTLE
from labs.proxy import ProxyError, config_dump
from labs.traffic import reviews_version

SPLIT_REQUESTS = 50
# v1's share: about 0.8 with the 80/20 split, 0.5 with none; two rounds in a row above 0.7
# tell them apart (a 50/50 round passes one time in 300, an 80/20 one fails one in 40).
V1_AT_LEAST = 0.7
SPLIT_SETTLE = Retry(consecutive=2, deadline=20, interval=0.5)
TLS_SOCKET = "envoy.transport_sockets.tls"
RATINGS_HOSTS = ("ratings", f"ratings.{NAMESPACE}", f"ratings.{NAMESPACE}.svc",
                 f"ratings.{NAMESPACE}.svc.cluster.local")


@check("day1.architecture.reviews-split-served",
       "requests from productpage to reviews are answered by v1 mostly and by v2 sometimes, "
       "never by a failure",
       hidden=True, points=1, retry=SPLIT_SETTLE,
       hint="the VirtualService reviews splits 80/20 between subsets v1 and v2, which the "
            "DestinationRule reviews defines")
def reviews_split_served(ctx: CheckContext) -> Outcome:
    result = ctx.probe("http://reviews:9080/reviews/0", from_workload="productpage-v1",
                       namespace=NAMESPACE, n=SPLIT_REQUESTS, classify=reviews_version,
                       max_time=10)
    if (result.codes[200] == result.total and result.labels["v2"] >= 1
            and result.fraction("v1") >= V1_AT_LEAST and set(result.labels) <= {"v1", "v2"}):
        return passed()
    return failed(describe(result))


@check("day1.architecture.config-repaired",
       "the VirtualServices ratings and details are repaired, not deleted: ratings routes to "
       "ratings, and productpage reaches details through its subset v1",
       hidden=True, points=1, retry=SETTLE,
       hint="fix the host and the subset the analyzer names (a DestinationRule details with "
            "subset v1), keep the VirtualServices")
def config_repaired(ctx: CheckContext) -> Outcome:
    services = {name: ctx.get("virtualservices.networking.istio.io", name, NAMESPACE)
                for name in ("ratings", "details")}
    missing = [name for name, vs in services.items() if vs is None]
    if missing:
        return failed(f"no VirtualService {' or '.join(missing)} in {NAMESPACE}")
    hosts = {str(target.get("destination", {}).get("host", ""))
             for rule in (services["ratings"] or {}).get("spec", {}).get("http") or []
             for target in rule.get("route") or []}
    if not hosts or not hosts <= set(RATINGS_HOSTS):
        return failed(f"the VirtualService ratings routes to {sorted(hosts)}")
    result = ctx.probe("http://details:9080/details/0", from_workload="productpage-v1",
                       namespace=NAMESPACE, n=2, max_time=10)
    if result.codes[200] != result.total:
        return failed(describe(result))
    return passed()


@check("day1.architecture.mtls-still-strict",
       "the namespace stays STRICT and reviews v2's sidecar calls ratings with mutual TLS",
       hidden=True, points=1, retry=SETTLE,
       hint="the fix belongs to the client side: the DestinationRule ratings must not disable "
            "TLS (remove `tls: {mode: DISABLE}` or set ISTIO_MUTUAL); do not relax the "
            "PeerAuthentication")
def mtls_still_strict(ctx: CheckContext) -> Outcome:
    policy = ctx.get("peerauthentications.security.istio.io", "default", NAMESPACE) or {}
    mode = ((policy.get("spec") or {}).get("mtls") or {}).get("mode")
    if mode != "STRICT":
        return failed(f"PeerAuthentication default in {NAMESPACE} has mode {mode or 'none'}")
    try:
        dump = config_dump("deploy/reviews-v2", NAMESPACE, cluster=ctx.cluster)
    except ProxyError as exc:
        return failed(str(exc))
    name = f"outbound|9080||ratings.{NAMESPACE}.svc.cluster.local"
    section = next((c for c in dump.get("configs", [])
                    if c.get("@type", "").endswith(".ClustersConfigDump")), {})
    clusters = [entry.get("cluster", {}) for key in ("static_clusters", "dynamic_active_clusters")
                for entry in section.get(key, [])]
    ratings = next((c for c in clusters if c.get("name") == name), None)
    if ratings is None:
        return failed(f"reviews v2's sidecar has no cluster {name}")
    sockets = [ratings.get("transport_socket") or {}] + [
        m.get("transport_socket") or {} for m in ratings.get("transport_socket_matches") or []]
    if any(s.get("name") == TLS_SOCKET for s in sockets):
        return passed()
    return failed(f"cluster {name} has no TLS transport socket")
