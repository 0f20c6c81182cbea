"""Hidden checks of lab day1.install (installing bookinfo into a mesh-enabled namespace)."""

from __future__ import annotations

from labs.checks import CheckContext, Outcome, check, failed, passed

REVIEWS_VERSIONS = ("v1", "v2", "v3")


@check("day1.install.reviews-versions",
       "reviews v1, v2 and v3 each have an available replica in namespace bookinfo",
       hidden=True, points=1,
       hint="apply the whole bookinfo manifest, not only productpage")
def reviews_versions(ctx: CheckContext) -> Outcome:
    missing = []
    for version in REVIEWS_VERSIONS:
        deployment = ctx.get("deployment", f"reviews-{version}", "bookinfo")
        if not deployment or not deployment.get("status", {}).get("availableReplicas"):
            missing.append(f"reviews-{version}")
    if missing:
        return failed(f"not available: {', '.join(missing)}")
    return passed()
