"""Lab day2.canary: canary releases on Linkerd in namespace `test` — a split by hand with an
HTTPRoute (linkerd/website 2-edge `tasks/traffic-shifting.md`) and with an SMI TrafficSplit
(linkerd-smi), then Flagger's Linkerd tutorial (fluxcd/flagger
`docs/gitbook/tutorials/linkerd-progressive-delivery.md`): podinfo 6.0.1 promoted step by step,
6.0.2 rolled back.

The splits are judged by their weights and by the versions real requests from the meshed curl
get (podinfo answers its version); the releases by the Canary's status, Flagger's `Synced`
events (upstream's texts, `pkg/controller/scheduler.go`) and the Deployments it leaves."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from labs.checks.context import CheckContext
from labs.checks.model import Outcome, Retry, failed, passed
from labs.checks.public.day2 import LINKERD_PROXY, meshed_apps
from labs.checks.registry import check
from labs.course import manifest

Obj = dict[str, Any]
NAMESPACE = "test"
APPS = ("curl", "flagger-loadtester", "backend")
PORT = 9898
IMAGE = "ghcr.io/stefanprodan/podinfo"
V1, V2 = "6.0.0", "6.0.1"  # backend-v1, backend-v2; 6.0.1 is also the healthy release
FAULTY = "6.0.2"
ROUTE_APEX, SMI_APEX = "backend", "backend-smi"
BACKENDS = ("backend-v1", "backend-v2")
CANARY = "podinfo"
KEY = f"{CANARY}.{NAMESPACE}"  # how Flagger's events name the canary
NEW_REVISION = f"New revision detected! Scaling up {KEY}"
REQUESTS = 100
SETTLE = Retry(consecutive=2, deadline=30, interval=1)
ROUTE_KINDS = ("httproutes.gateway.networking.k8s.io", "httproutes.policy.linkerd.io")
SPLIT_KIND = "trafficsplits.split.smi-spec.io"


@check("day2.canary.workloads",
       f"curl, the load tester and backend v1/v2 run in {NAMESPACE}, each pod with a "
       f"{LINKERD_PROXY}", fatal=True, points=0,
       hint=f"run the lab's setup cell: namespace {NAMESPACE} annotated "
            f"linkerd.io/inject=enabled, then {manifest('curl')}, "
            f"{manifest('flagger-loadtester')} and the backend Deployments applied")
def workloads(ctx: CheckContext) -> Outcome:
    return meshed_apps(ctx, NAMESPACE, APPS, sidecar=LINKERD_PROXY)


def podinfo_version(body: str) -> str | None:
    """podinfo's `/` answers JSON with its `version` (the image tag)."""
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    return str(answer.get("version")) if isinstance(answer, dict) else None


def version_shares(ctx: CheckContext, apex: str) -> dict[str, float]:
    """Share of each podinfo version in REQUESTS answers to `apex` from the meshed curl."""
    result = ctx.probe(f"http://{apex}.{NAMESPACE}:{PORT}/", from_workload="curl",
                       namespace=NAMESPACE, n=REQUESTS, classify=podinfo_version, max_time=10)
    return {str(label) if label else "no version": count / REQUESTS
            for label, count in result.labels.items()}


def _share_problem(shares: dict[str, float], low: float, high: float) -> str | None:
    """Why the shares are not a split of v1 and v2 with v2's share within [low, high]."""
    if set(shares) - {V1, V2} or not low <= shares.get(V2, 0.0) <= high:
        seen = ", ".join(f"{v} {s:.0%}" for v, s in sorted(shares.items()))
        return (f"{REQUESTS} requests from curl got {seen}: expected only {V1} and {V2}, "
                f"{V2} between {low:.0%} and {high:.0%}")
    return None


def _is_service(ref: Obj, name: str) -> bool:
    return (ref.get("name") == name and ref.get("kind") == "Service"
            and ref.get("group", "core") in ("core", ""))


def route_weights(routes: Iterable[Obj], parent: str) -> dict[str, int] | None:
    """Backend weights of the first rule of an HTTPRoute whose parent is Service `parent`
    (a backendRef's weight defaults to 1, Gateway API)."""
    for route in routes:
        spec = route.get("spec") or {}
        if any(_is_service(ref, parent) for ref in spec.get("parentRefs") or []):
            for rule in spec.get("rules") or []:
                refs = rule.get("backendRefs") or []
                if refs:
                    return {str(r.get("name")): int(r.get("weight", 1)) for r in refs}
    return None


def _share(weights: dict[str, int], backend: str) -> float:
    total = sum(weights.values())
    return weights.get(backend, 0) / total if total else 0.0


@check("day2.canary.httproute",
       f"an HTTPRoute on Service {ROUTE_APEX} sends 90 % to backend-v1 and 10 % to backend-v2, "
       "and curl's requests are split that way", retry=SETTLE,
       hint=f"apply an HTTPRoute with parentRefs [{{name: {ROUTE_APEX}, kind: Service, group: "
            f"core, port: {PORT}}}] and backendRefs backend-v1 weight 90, backend-v2 weight 10")
def httproute(ctx: CheckContext) -> Outcome:
    routes = [r for kind in ROUTE_KINDS for r in ctx.items(kind, NAMESPACE)]
    weights = route_weights(routes, ROUTE_APEX)
    if weights is None:
        return failed(f"no HTTPRoute in {NAMESPACE} has Service {ROUTE_APEX} as its parent "
                      "with backendRefs")
    if set(weights) != set(BACKENDS) or _share(weights, "backend-v2") != 0.1:
        return failed(f"the HTTPRoute's backendRefs weigh {weights}: expected backend-v1 90, "
                      "backend-v2 10")
    problem = _share_problem(version_shares(ctx, ROUTE_APEX), 0.02, 0.25)
    return failed(problem) if problem else passed()


def split_weights(splits: Iterable[Obj], apex: str) -> dict[str, int] | None:
    """Backend weights of the TrafficSplit whose apex Service is `apex`."""
    for split in splits:
        spec = split.get("spec") or {}
        if spec.get("service") == apex:
            return {str(b.get("service")): int(b.get("weight", 0))
                    for b in spec.get("backends") or []}
    return None


@check("day2.canary.trafficsplit",
       f"a TrafficSplit on Service {SMI_APEX} sends half to backend-v1 and half to backend-v2, "
       "and curl's requests are split that way", retry=SETTLE,
       hint=f"apply a split.smi-spec.io TrafficSplit with service: {SMI_APEX} and backends "
            "backend-v1 and backend-v2, weight 50 each")
def trafficsplit(ctx: CheckContext) -> Outcome:
    weights = split_weights(ctx.items(SPLIT_KIND, NAMESPACE), SMI_APEX)
    if weights is None:
        return failed(f"no TrafficSplit in {NAMESPACE} has service: {SMI_APEX}")
    if set(weights) != set(BACKENDS) or _share(weights, "backend-v2") != 0.5:
        return failed(f"the TrafficSplit's backends weigh {weights}: expected backend-v1 and "
                      "backend-v2 equally")
    problem = _share_problem(version_shares(ctx, SMI_APEX), 0.3, 0.7)
    return failed(problem) if problem else passed()


def canary_messages(ctx: CheckContext) -> list[str]:
    """Messages of the Canary's events, oldest first."""
    events = [e for e in ctx.items("events", NAMESPACE)
              if (e.get("involvedObject") or {}).get("kind") == "Canary"
              and e["involvedObject"].get("name") == CANARY]
    events.sort(key=lambda e: (e["metadata"].get("creationTimestamp") or "",
                               e["metadata"]["name"]))
    return [str(e.get("message", "")) for e in events]


def runs(messages: list[str]) -> list[list[str]]:
    """The events of each rollout: from one `New revision detected!` to the next."""
    out: list[list[str]] = []
    for message in messages:
        if message == NEW_REVISION:
            out.append([])
        if out:
            out[-1].append(message)
    return out


def analysed_promotion(run: list[str]) -> bool:
    """A rollout that shifted weight to the canary and was promoted (not skipped)."""
    return (any(m.startswith(f"Advance {KEY} canary weight ") for m in run)
            and f"Promotion completed! Scaling down {KEY}" in run)


def container_image(ctx: CheckContext, deployment: str) -> str | None:
    found = ctx.get("deployment", deployment, NAMESPACE)
    containers = (((found or {}).get("spec") or {}).get("template") or {}).get(
        "spec", {}).get("containers") or []
    return str(containers[0].get("image")) if containers else None


def _canary(ctx: CheckContext) -> Obj | None:
    return ctx.get("canaries.flagger.app", CANARY, NAMESPACE)


@check("day2.canary.promoted",
       f"Flagger analysed podinfo {V2} step by step and promoted it: podinfo-primary runs {V2}",
       hint=f"apply the Canary podinfo (analysis with metrics and the load-test webhook, no "
            f"skipAnalysis), wait for phase Initialized, then `kubectl -n {NAMESPACE} set image "
            f"deployment/podinfo podinfod={IMAGE}:{V2}` and wait for Succeeded")
def promoted(ctx: CheckContext) -> Outcome:
    canary = _canary(ctx)
    if canary is None:
        return failed(f"there is no Canary {CANARY} in {NAMESPACE}")
    if (canary.get("spec") or {}).get("skipAnalysis"):
        return failed("the Canary skips its analysis (skipAnalysis: true): nothing is analysed")
    if not any(analysed_promotion(run) for run in runs(canary_messages(ctx))):
        return failed("no rollout of the Canary advanced the canary weight and completed "
                      "its promotion (see `kubectl -n test describe canary/podinfo`)")
    image = container_image(ctx, f"{CANARY}-primary")
    if image != f"{IMAGE}:{V2}":
        return failed(f"podinfo-primary runs {image}, not {IMAGE}:{V2}")
    return passed()


@check("day2.canary.rolled-back",
       f"Flagger rolled podinfo {FAULTY} back: the Canary is Failed and podinfo-primary still "
       f"runs {V2}",
       hint=f"add the load-test webhook on /status/500 to the Canary, then `kubectl -n "
            f"{NAMESPACE} set image deployment/podinfo podinfod={IMAGE}:{FAULTY}` and wait "
            "for phase Failed")
def rolled_back(ctx: CheckContext) -> Outcome:
    canary = _canary(ctx)
    if canary is None:
        return failed(f"there is no Canary {CANARY} in {NAMESPACE}")
    phase = (canary.get("status") or {}).get("phase")
    if phase != "Failed":
        return failed(f"the Canary's phase is {phase}, not Failed")
    if container_image(ctx, CANARY) != f"{IMAGE}:{FAULTY}":
        return failed(f"deployment/podinfo runs {container_image(ctx, CANARY)}, not the faulty "
                      f"release {IMAGE}:{FAULTY}")
    last = (runs(canary_messages(ctx)) or [[]])[-1]
    if not any(m.startswith(f"Rolling back {KEY} ") for m in last):
        return failed("the last rollout has no `Rolling back podinfo.test ...` event")
    image = container_image(ctx, f"{CANARY}-primary")
    if image != f"{IMAGE}:{V2}":
        return failed(f"podinfo-primary runs {image}, not {IMAGE}:{V2}")
    return passed()
