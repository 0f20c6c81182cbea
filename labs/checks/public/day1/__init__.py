"""Day 1 labs: install Istio's Bookinfo with sidecars, route traffic, require mTLS.

Shared by the day-1 lab modules: the namespace the labs use and how a probe is described in a
failure reason."""

from __future__ import annotations

from labs.traffic import ProbeResult

NAMESPACE = "bookinfo"


def describe(result: ProbeResult) -> str:
    """`5 requests from deploy/curl (legacy) to URL: 200 ×3, no response ×2; v1 ×3`."""
    codes = ", ".join(f"{code or 'no response'} ×{n}" for code, n in sorted(result.codes.items()))
    labels = ", ".join(f"{label} ×{n}" for label, n in sorted(result.labels.items()))
    return (f"{result.total} requests from deploy/{result.workload} ({result.namespace}) to "
            f"{result.url}: {codes}" + (f"; {labels}" if labels else ""))
