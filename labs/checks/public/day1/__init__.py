"""Day 1 labs: Bookinfo with sidecars, traffic, mTLS, gateways, resilience, observability,
architecture and troubleshooting.

Shared by the day-1 lab modules: the namespace the first labs use, how a probe is described in
a failure reason, and the set-up check of a lab with a namespace of its own."""

from __future__ import annotations

from collections.abc import Iterable

from labs.checks.context import CheckContext
from labs.checks.model import Outcome, failed, passed
from labs.istio_names import SIDECAR_CONTAINER
from labs.traffic import ProbeResult

NAMESPACE = "bookinfo"


def describe(result: ProbeResult) -> str:
    """`5 requests from deploy/curl (legacy) to URL: 200 ×3, no response ×2; v1 ×3`."""
    codes = ", ".join(f"{code or 'no response'} ×{n}" for code, n in sorted(result.codes.items()))
    labels = ", ".join(f"{label} ×{n}" for label, n in sorted(result.labels.items()))
    return (f"{result.total} requests from deploy/{result.workload} ({result.namespace}) to "
            f"{result.url}: {codes}" + (f"; {labels}" if labels else ""))


def meshed_workloads_run(ctx: CheckContext, namespace: str, workloads: Iterable[str]
                         ) -> Outcome:
    """`namespace` exists, each of `workloads` is an available Deployment in it, and every pod
    there has its sidecar."""
    if ctx.get("namespace", namespace) is None:
        return failed(f"namespace {namespace} does not exist")
    missing = [name for name in workloads
               if not ((ctx.get("deployment", name, namespace) or {}).get("status") or {}
                       ).get("availableReplicas")]
    if missing:
        return failed(f"not available in {namespace}: {', '.join(missing)}")
    bare = sorted({pod["metadata"]["name"] for pod in ctx.items("pods", namespace)
                   if SIDECAR_CONTAINER not in
                   [c["name"] for c in pod["spec"].get("containers", [])]})
    if bare:
        return failed(f"pods without an {SIDECAR_CONTAINER} sidecar: {', '.join(bare)} (is the "
                      f"namespace labelled istio-injection=enabled?)")
    return passed()
