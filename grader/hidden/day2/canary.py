"""Hidden checks of lab day2.canary: that each release was decided by traffic, not only by the
Canary's status — the promoted 6.0.1 pods answered requests while Flagger analysed them, and
6.0.2 was rolled back because its metric failed (its pods answered failures), not because of a
deadline, a manual rollback webhook or missing data.

The traffic comes from linkerd-viz's Prometheus: linkerd-proxy's inbound `response_total`,
labelled by the scrape config with the pod's `deployment` and `pod_template_hash`
(linkerd2 viz/charts/linkerd-viz/templates/prometheus.yaml), so one release's pods are told
from another's by their ReplicaSet."""

from __future__ import annotations

from labs.checks import CheckContext, Outcome, check, failed, passed
from labs.checks.public.day2.canary import (
    CANARY,
    FAULTY,
    IMAGE,
    KEY,
    NAMESPACE,
    V2,
    analysed_promotion,
    canary_messages,
    runs,
)
from labs.linkerd.kube import Kube, KubeError
from labs.linkerd.viz.prom import VizError, run

WINDOW = "1h"  # the lab's rollouts all happened within it
MIN_REQUESTS = 10.0  # a few seconds of the load tester's 20 requests per second


def _template_hash(ctx: CheckContext, image: str) -> str | None:
    """pod-template-hash of Deployment podinfo's ReplicaSet that ran `image`."""
    for rs in ctx.items("replicasets", NAMESPACE):
        labels = rs["metadata"].get("labels") or {}
        containers = rs["spec"]["template"]["spec"].get("containers") or []
        if labels.get("app") == CANARY and containers and containers[0].get("image") == image:
            return str(labels.get("pod-template-hash", "")) or None
    return None


def _responses(ctx: CheckContext, image: str, extra: str = "") -> float | str:
    """Inbound responses Linkerd counted at the pods of podinfo's ReplicaSet for `image`,
    or why they could not be counted."""
    pod_hash = _template_hash(ctx, image)
    if pod_hash is None:
        return f"no ReplicaSet of deployment/{CANARY} ran {image}"
    selector = (f'namespace="{NAMESPACE}", deployment="{CANARY}", '
                f'pod_template_hash="{pod_hash}", direction="inbound"{extra}')
    try:
        result = run(Kube(ctx.cluster),
                     f"sum(max_over_time(response_total{{{selector}}}[{WINDOW}]))")
    except (VizError, KubeError) as err:
        return f"linkerd-viz's Prometheus could not be read: {err}"
    return float(result[0]["value"][1]) if result else 0.0


@check("day2.canary.release-got-traffic",
       f"the podinfo {V2} canary pods answered requests during the analysis before the "
       "promotion (Linkerd's metrics)",
       hidden=True, points=1,
       hint="the analysis needs traffic: keep the load-test webhook (hey on podinfo-canary) "
            "and let Flagger shift weight step by step; skipAnalysis promotes untested")
def release_got_traffic(ctx: CheckContext) -> Outcome:
    if not any(analysed_promotion(run) for run in runs(canary_messages(ctx))):
        return failed("no rollout was analysed and promoted")
    counted = _responses(ctx, f"{IMAGE}:{V2}")
    if isinstance(counted, str):
        return failed(counted)
    if counted < MIN_REQUESTS:
        return failed(f"the {V2} canary pods answered {counted:.0f} requests")
    return passed()


@check("day2.canary.rollback-by-metric",
       f"podinfo {FAULTY} was rolled back because its success rate failed the analysis, and "
       "its pods did answer requests with failures",
       hidden=True, points=1,
       hint="the rollback must come from the metric: send the load tester's requests to "
            "/status/500 on podinfo-canary during the analysis (a second rollout webhook)")
def rollback_by_metric(ctx: CheckContext) -> Outcome:
    last = (runs(canary_messages(ctx)) or [[]])[-1]
    halts = [m for m in last if m.startswith(f"Halt {KEY} advancement success-rate ")]
    if not halts:
        return failed("no `Halt podinfo.test advancement success-rate ...` event in the last "
                      "rollout: the rollback was not decided by the success rate")
    counted = _responses(ctx, f"{IMAGE}:{FAULTY}", ', classification="failure"')
    if isinstance(counted, str):
        return failed(counted)
    if counted < 1:
        return failed(f"the {FAULTY} canary pods answered no failed request")
    return passed()
