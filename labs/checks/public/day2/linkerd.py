"""Lab day2.linkerd: Linkerd's getting-started on emojivoto (linkerd/website
`linkerd.io/content/2-edge/getting-started/_index.md`), its failing doughnut vote found with
`linkerd viz`, and the "Restricting Access To Services" task (`2-edge/tasks/
restricting-access.md`) written with AuthorizationPolicy + MeshTLSAuthentication.

The checks judge what the cluster does: pods with Linkerd's native-sidecar proxy, a refused
gRPC call to voting from a meshed workload that is not web, and web's votes still going through.
Where the lab asks the learner to *find* something (the failing route), the answer is read from
ConfigMap emojivoto/answers, which the notebook writes.

The notebook's waits live here too (as jwt.py's `share_signer`): `linkerd_until` polls a
`linkerd viz` command (labs.commands) until Prometheus has scraped what the cell waits for."""

from __future__ import annotations

import json
from collections.abc import Callable

from labs.checks.context import CheckContext
from labs.checks.model import Outcome, Retry, failed, passed
from labs.checks.public.day2 import (
    LINKERD_PROXY,
    Expect,
    expect_statuses,
    has_container,
    meshed_apps,
)
from labs.checks.registry import check
from labs.cluster import current_cluster
from labs.commands import output_until
from labs.traffic import ProbeError

NAMESPACE = "emojivoto"
APPS = ("web-svc", "emoji-svc", "voting-svc", "vote-bot")  # their pods' `app` labels
DEPLOYMENTS = ("emoji", "vote-bot", "voting", "web")
ANSWERS = "answers"  # ConfigMap the notebook writes the learner's findings to
FAILING_ROUTE = "/emojivoto.v1.VotingService/VoteDoughnut"
WEB_VOTE = f"http://web-svc.{NAMESPACE}/api/vote?choice=:joy:"
VOTING_CALL = f"http://voting-svc.{NAMESPACE}:8080/emojivoto.v1.VotingService/VoteDog"
VOTING_METRICS = f"http://voting-svc.{NAMESPACE}:8801/metrics"  # voting's `prom` port
DEFAULT_POLICY = "config.linkerd.io/default-inbound-policy"
SETTLE = Retry(consecutive=2, deadline=30, interval=1)


def answers(ctx: CheckContext) -> dict[str, str]:
    """The learner's findings, ConfigMap emojivoto/answers (empty when it does not exist)."""
    found = ctx.get("configmap", ANSWERS, NAMESPACE) or {}
    return {k: str(v).strip() for k, v in (found.get("data") or {}).items()}


@check("day2.linkerd.emojivoto",
       f"emojivoto's four deployments ({', '.join(DEPLOYMENTS)}) run in namespace {NAMESPACE}",
       fatal=True, points=0,
       hint="run the lab's setup cell: it applies labs.manifest('emojivoto') and waits for the "
            "deployments")
def emojivoto(ctx: CheckContext) -> Outcome:
    have = {d["metadata"]["name"] for d in ctx.items("deployments", NAMESPACE)}
    missing = [name for name in DEPLOYMENTS if name not in have]
    return failed(f"missing in {NAMESPACE}: {', '.join(missing)}") if missing else passed()


@check("day2.linkerd.meshed",
       f"every emojivoto workload runs a Ready pod with the {LINKERD_PROXY} native sidecar",
       hint=f"kubectl get -n {NAMESPACE} deploy -o yaml | linkerd inject - | kubectl apply -f -, "
            f"then kubectl rollout status -n {NAMESPACE} deploy")
def meshed(ctx: CheckContext) -> Outcome:
    return meshed_apps(ctx, NAMESPACE, APPS, sidecar=LINKERD_PROXY)


@check("day2.linkerd.failing-route",
       f"ConfigMap {NAMESPACE}/{ANSWERS} names the gRPC route whose calls fail "
       "(key failing-route)",
       hint="`linkerd viz top deploy/voting` or `linkerd viz tap deploy/voting` while votes "
            "come in: the path whose Success Rate is 0% is the answer, /<package.Service>/<Method>")
def failing_route(ctx: CheckContext) -> Outcome:
    given = answers(ctx).get("failing-route")
    if not given:
        return failed(f"ConfigMap {NAMESPACE}/{ANSWERS} has no key failing-route")
    if given != FAILING_ROUTE:
        return failed(f"failing-route is {given!r}: calls to that path do not fail")
    return passed()


@check("day2.linkerd.voting-restricted",
       "voting's gRPC port answers web only: web's votes succeed, a direct call from vote-bot "
       "(meshed, another identity) is refused with 403",
       retry=SETTLE,
       hint="a Server voting-grpc (podSelector app: voting-svc, port: grpc, proxyProtocol: gRPC), "
            "and an AuthorizationPolicy targeting it that requires a MeshTLSAuthentication of "
            "web's identity (identityRefs: [{kind: ServiceAccount, name: web}])")
def voting_restricted(ctx: CheckContext) -> Outcome:
    return expect_statuses(ctx, NAMESPACE, [
        Expect("vote-bot", WEB_VOTE, 200, what="(a vote through web)"),
        Expect("vote-bot", VOTING_CALL, 403, method="POST", what="(straight to voting)")])


@check("day2.linkerd.default-deny",
       "voting is default-deny: its prom port (no Server there) refuses vote-bot with 403, "
       "while web's votes still succeed",
       retry=SETTLE,
       hint=f"annotate voting's pod template (not the running pod: the proxy reads it at start) "
            f"with {DEFAULT_POLICY}: deny, e.g. kubectl patch deploy voting -n {NAMESPACE} -p "
            "..., then kubectl rollout status")
def default_deny(ctx: CheckContext) -> Outcome:
    return expect_statuses(ctx, NAMESPACE, [
        Expect("vote-bot", WEB_VOTE, 200, what="(a vote through web)"),
        Expect("vote-bot", VOTING_METRICS, 403, what="(voting's metrics port)")])


def linkerd_until(args: list[str], shows: Callable[[str], bool], what: str,
                  deadline: float = 120) -> str:
    """The output of `linkerd <args>` once `shows(output)` holds (labs.commands.output_until);
    at once a ProbeError when emojivoto is not meshed (there is nothing to wait for)."""
    _require_meshed()
    return output_until(["linkerd", *args], shows, what, deadline,
                        "is linkerd-viz installed and running? `linkerd viz check` says")


def _require_meshed() -> None:
    """ProbeError unless every (not terminating) emojivoto pod has the linkerd-proxy sidecar."""
    got = current_cluster().kubectl(f"--namespace={NAMESPACE}", "get", "pods", "-o", "json",
                                    timeout=30)
    pods = json.loads(got.stdout).get("items", []) if got.returncode == 0 else []
    bare = [p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")
            and not has_container(p, LINKERD_PROXY)]
    if not pods or bare:
        raise ProbeError(f"emojivoto is not meshed yet (pods without {LINKERD_PROXY}: "
                         f"{', '.join(bare) or 'no pods at all'}), so linkerd viz has nothing "
                         "to show: run the cells of section 2 (linkerd inject) first")


def wait_for_stats(deadline: float = 120) -> str:
    """`linkerd viz stat deploy -n emojivoto` once web's row has a success rate (Prometheus
    needs two scrapes of the proxies, with vote-bot's traffic in between, for a rate)."""
    def web_rate(out: str) -> bool:
        return any(line.split()[:1] == ["web"] and line.split()[2:3] != ["-"]
                   for line in out.splitlines())
    return linkerd_until(["viz", "stat", "deploy", "-n", NAMESPACE], web_rate,
                         "a success rate for web", deadline)
