"""Lab day1.mtls: Istio's "Mutual TLS Migration" task — a namespace-wide PeerAuthentication
STRICT in bookinfo; meshed callers keep working, and a client outside the mesh (curl in namespace
`legacy`, without a sidecar) is refused: its plaintext connection is closed, no HTTP answer."""

from __future__ import annotations

from labs.checks.context import CheckContext
from labs.checks.model import Outcome, Retry, Status, failed, passed
from labs.checks.public.day1 import NAMESPACE, describe
from labs.checks.registry import check
from labs.course import manifest
from labs.istio_names import SIDECAR_CONTAINER

LEGACY = "legacy"
DETAILS_URL = f"http://details.{NAMESPACE}:9080/details/0"
REQUESTS = 3
PLAINTEXT_REQUESTS = 2  # each refused connection takes about a second to be closed
SETTLE = Retry(consecutive=2, deadline=20, interval=1)


@check("day1.mtls.strict-namespace",
       f"a namespace-wide PeerAuthentication in {NAMESPACE} requires mutual TLS (STRICT)",
       hint=f"apply a PeerAuthentication named default in namespace {NAMESPACE}, without a "
            "selector, with spec.mtls.mode: STRICT",
       anchor="3-·-STRICT")
def strict_namespace(ctx: CheckContext) -> Outcome:
    policies = [p for p in ctx.items("peerauthentications.security.istio.io", NAMESPACE)
                if not p.get("spec", {}).get("selector")]
    if not policies:
        return failed(f"no PeerAuthentication without a selector in {NAMESPACE}")
    # Istio uses the oldest namespace-wide policy when there are several.
    oldest = min(policies, key=lambda p: p["metadata"].get("creationTimestamp", ""))
    mode = (oldest["spec"].get("mtls") or {}).get("mode", "UNSET")
    if mode != "STRICT":
        return failed(f"PeerAuthentication {oldest['metadata']['name']} has mode {mode}")
    return passed()


@check("day1.mtls.meshed-call",
       "with STRICT in place, a meshed workload (productpage) still reaches details",
       retry=SETTLE,
       hint=f"check both sides have sidecars (`kubectl -n {NAMESPACE} get pods`: 2/2) and no "
            "DestinationRule disables TLS (trafficPolicy.tls.mode: DISABLE) for details",
       anchor="4-·-After")
def meshed_call(ctx: CheckContext) -> Outcome:
    """Worth points only once STRICT is there: before, every call works without any work."""
    strict = strict_namespace(ctx)
    if strict.status is not Status.PASS:
        return failed(f"not yet: {strict.reason}; this check proves meshed calls survive STRICT")
    result = ctx.probe(DETAILS_URL, from_workload="productpage-v1", namespace=NAMESPACE,
                       n=REQUESTS, max_time=10)
    return passed() if result.fraction(200) == 1.0 else failed(describe(result))


@check("day1.mtls.legacy-client",
       f"a curl client without a sidecar runs in namespace {LEGACY}", fatal=True,
       hint=f"kubectl create namespace {LEGACY}; "
            f"kubectl apply -n {LEGACY} -f {manifest('curl')} "
            f"(no istio-injection label on {LEGACY})",
       anchor="1-·-A-client-outside-the-mesh")
def legacy_client(ctx: CheckContext) -> Outcome:
    pods = [p for p in ctx.items("pods", LEGACY)
            if p["metadata"].get("labels", {}).get("app") == "curl"
            and not p["metadata"].get("deletionTimestamp")]
    if not pods:
        return failed(f"no curl pod in namespace {LEGACY}")
    meshed = [p["metadata"]["name"] for p in pods
              if any(c.get("name") == SIDECAR_CONTAINER for c in p["spec"].get("containers", []))]
    if meshed:
        return failed(f"{', '.join(meshed)} in {LEGACY} has an {SIDECAR_CONTAINER} sidecar, so "
                      "its calls use mTLS; the plaintext client must be outside the mesh")
    return passed()


@check("day1.mtls.plaintext-refused",
       f"a plaintext client outside the mesh (curl in {LEGACY}) is refused by details",
       retry=SETTLE,
       hint=f"while {NAMESPACE} is PERMISSIVE (the default), plaintext is accepted; "
            "set the namespace's PeerAuthentication to STRICT",
       anchor="4-·-After")
def plaintext_refused(ctx: CheckContext) -> Outcome:
    result = ctx.probe(DETAILS_URL, from_workload="curl", namespace=LEGACY,
                       n=PLAINTEXT_REQUESTS, max_time=5)
    if result.codes == {0: PLAINTEXT_REQUESTS}:
        return passed()
    return failed(f"expected no HTTP answer (connection closed); {describe(result)}")
