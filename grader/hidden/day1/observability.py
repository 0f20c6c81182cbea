"""Hidden checks of lab day1.observability: after the STRICT step, a client outside the mesh
gets no HTTP answer from httpbin at all, and meshed callers (curl in `observe`, and through
productpage the whole of Bookinfo) still get theirs — the migration broke nothing."""

from __future__ import annotations

from labs.checks import CheckContext, Outcome, Retry, check, failed, passed
from labs.checks.public.day1 import describe
from labs.checks.public.day1.observability import HTTPBIN, NAMESPACE, OUTSIDE

SETTLE = Retry(consecutive=2, deadline=20, interval=1)


@check("day1.observability.plaintext-refused",
       f"httpbin closes plaintext connections from curl in {OUTSIDE} (no HTTP answer)",
       hidden=True, retry=SETTLE,
       hint=f"make {NAMESPACE} STRICT with a PeerAuthentication; PERMISSIVE still accepts "
            "plaintext")
def plaintext_refused(ctx: CheckContext) -> Outcome:
    result = ctx.probe(f"{HTTPBIN}/status/200", from_workload="curl", namespace=OUTSIDE, n=2,
                       max_time=5)
    return passed() if result.codes == {0: 2} else failed(describe(result))


@check("day1.observability.meshed-calls",
       f"meshed curl in {NAMESPACE} still reaches httpbin and Bookinfo's productpage",
       hidden=True, retry=SETTLE,
       hint="STRICT must only shut out clients without a sidecar: keep the namespace's "
            "istio-injection label and do not disable TLS in a DestinationRule")
def meshed_calls(ctx: CheckContext) -> Outcome:
    for url in (f"{HTTPBIN}/status/200", "http://productpage.bookinfo:9080/productpage"):
        result = ctx.probe(url, from_workload="curl", namespace=NAMESPACE, n=2, max_time=10)
        if result.fraction(200) < 1:
            return failed(describe(result))
    return passed()
