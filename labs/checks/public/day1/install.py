"""Lab day1.install: Bookinfo runs in namespace `bookinfo` with an Envoy sidecar in every pod
(Istio's "Getting Started": label the namespace, deploy the app, call productpage in the mesh)."""

from __future__ import annotations

from typing import Any

from labs.checks.context import CheckContext
from labs.checks.model import Outcome, Retry, failed, passed
from labs.checks.public.day1 import NAMESPACE, describe
from labs.checks.registry import check
from labs.course import manifest
from labs.istio_names import SIDECAR_CONTAINER

DEPLOYMENTS = ("productpage-v1", "details-v1", "ratings-v1", "reviews-v1", "reviews-v2",
               "reviews-v3")
BOOKSTORE_TITLE = "<title>Simple Bookstore App</title>"
APPLY = f"kubectl apply -n {NAMESPACE} -f {manifest('bookinfo')}"


def _condition(obj: dict[str, Any], kind: str) -> bool:
    conditions = obj.get("status", {}).get("conditions") or []
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


@check("day1.install.namespace",
       f"namespace {NAMESPACE} exists and is labelled istio-injection=enabled", fatal=True,
       hint=f"kubectl create namespace {NAMESPACE}; "
            f"kubectl label namespace {NAMESPACE} istio-injection=enabled",
       anchor="1-·-A-namespace-whose-pods-get-sidecars")
def namespace(ctx: CheckContext) -> Outcome:
    found = ctx.get("namespace", NAMESPACE)
    if found is None:
        return failed(f"namespace {NAMESPACE} does not exist")
    value = (found["metadata"].get("labels") or {}).get("istio-injection")
    if value != "enabled":
        return failed(f"namespace {NAMESPACE} has "
                      + (f"istio-injection={value}" if value else "no istio-injection label")
                      + ", so its pods get no sidecar")
    return passed()


@check("day1.install.workloads",
       f"the six Bookinfo Deployments run in {NAMESPACE} and are available",
       hint=f"{APPLY}, then `kubectl -n {NAMESPACE} rollout status deployment` for each; "
            f"`kubectl -n {NAMESPACE} get pods` and `kubectl describe` show why one is not ready",
       anchor="2-·-Deploy-Bookinfo")
def workloads(ctx: CheckContext) -> Outcome:
    found = {d["metadata"]["name"]: d for d in ctx.items("deployments", NAMESPACE)}
    missing = [name for name in DEPLOYMENTS if name not in found]
    unavailable = [name for name in DEPLOYMENTS
                   if name in found and not _condition(found[name], "Available")]
    problems = ([f"missing: {', '.join(missing)}"] if missing else []) + (
        [f"not available yet: {', '.join(unavailable)}"] if unavailable else [])
    return failed("; ".join(problems)) if problems else passed()


@check("day1.install.sidecars",
       f"every pod in {NAMESPACE} is Ready with an {SIDECAR_CONTAINER} sidecar",
       hint=f"pods created before the namespace was labelled have no sidecar: "
            f"`kubectl -n {NAMESPACE} rollout restart deployment` recreates them",
       anchor="2-·-Deploy-Bookinfo")
def sidecars(ctx: CheckContext) -> Outcome:
    pods = [p for p in ctx.items("pods", NAMESPACE)
            if not p["metadata"].get("deletionTimestamp")
            and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")]
    if not pods:
        return failed(f"no pods run in namespace {NAMESPACE}")

    def has_sidecar(pod: dict[str, Any]) -> bool:
        spec = pod.get("spec", {})
        containers = (spec.get("containers") or []) + (spec.get("initContainers") or [])
        return any(c.get("name") == SIDECAR_CONTAINER for c in containers)

    bare = sorted(p["metadata"]["name"] for p in pods if not has_sidecar(p))
    unready = sorted(p["metadata"]["name"] for p in pods if not _condition(p, "Ready"))
    problems = ([f"without a sidecar: {', '.join(bare)}"] if bare else []) + (
        [f"not Ready: {', '.join(unready)}"] if unready else [])
    return failed("; ".join(problems)) if problems else passed()


@check("day1.install.productpage",
       "productpage serves the Bookinfo page to a workload inside the mesh",
       retry=Retry(consecutive=2, deadline=20, interval=1),
       hint=f"try it yourself: `kubectl -n {NAMESPACE} exec deploy/ratings-v1 -- curl -sS "
            "productpage:9080/productpage | grep -o '<title>.*</title>'`; "
            f"`kubectl -n {NAMESPACE} logs deploy/productpage-v1 -c istio-proxy` shows the "
            "sidecar's view",
       anchor="3-·-Call-the-product-page-from-inside-the-mesh")
def productpage(ctx: CheckContext) -> Outcome:
    n = 3
    result = ctx.probe("http://productpage:9080/productpage", from_workload="ratings-v1",
                       namespace=NAMESPACE, n=n, max_time=10,
                       classify=lambda body: "bookstore" if BOOKSTORE_TITLE in body else None)
    if result.codes == {200: n} and result.labels == {"bookstore": n}:
        return passed()
    return failed(describe(result))
