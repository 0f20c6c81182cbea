"""The verdicts of lab day2.canary's checks on answers that look right but are not, without a
cluster: the objects a check reads are given, as kubectl would return them. The public checks
accept a Canary promoted or rolled back by Flagger; the hidden ones refuse the shortcuts behind
such a status — an analysis skipped or never fed with traffic, a rollback that came from a
deadline rather than from the failing metric."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

import grader.hidden.day2.canary as hidden
from labs.checks.context import CheckContext
from labs.checks.model import Status
from labs.checks.public.day2 import canary

Obj = dict[str, Any]
KEY = canary.KEY
IMAGE = canary.IMAGE


@dataclass(frozen=True)
class Given(CheckContext):
    """A CheckContext whose reads answer from `objects` (kind → list of objects)."""

    objects: dict[str, list[Obj]] = field(default_factory=dict)

    def items(self, kind: str, namespace: str | None = None) -> list[Obj]:
        return list(self.objects.get(kind, []))

    def get(self, kind: str, name: str | None = None, namespace: str | None = None
            ) -> Obj | None:
        return next((o for o in self.objects.get(kind, []) if o["metadata"]["name"] == name),
                    None)


def events(*messages: str) -> list[Obj]:
    return [{"metadata": {"name": f"podinfo.{i:04x}", "creationTimestamp": "2026-12-07T15:00:00Z"},
             "involvedObject": {"kind": "Canary", "name": "podinfo"}, "message": m}
            for i, m in enumerate(messages)]


def deployment(name: str, tag: str) -> Obj:
    return {"metadata": {"name": name},
            "spec": {"template": {"spec": {"containers": [{"image": f"{IMAGE}:{tag}"}]}}}}


def replicaset(pod_hash: str, tag: str) -> Obj:
    return {"metadata": {"name": f"podinfo-{pod_hash}",
                         "labels": {"app": "podinfo", "pod-template-hash": pod_hash}},
            "spec": {"template": {"spec": {"containers": [{"image": f"{IMAGE}:{tag}"}]}}}}


def given(messages: list[str], *, skip: bool = False, phase: str = "Succeeded",
          target: str = "6.0.1") -> Given:
    return Given(cluster=None, objects={  # type: ignore[arg-type]  # never reached
        "canaries.flagger.app": [{"metadata": {"name": "podinfo"},
                                  "spec": {"skipAnalysis": skip}, "status": {"phase": phase}}],
        "events": events(*messages),
        "deployment": [deployment("podinfo-primary", "6.0.1"), deployment("podinfo", target)],
        "replicasets": [replicaset("aaa", "6.0.1"), replicaset("bbb", "6.0.2")]})


ANALYSED = [f"New revision detected! Scaling up {KEY}", f"Starting canary analysis for {KEY}",
            f"Advance {KEY} canary weight 25", f"Advance {KEY} canary weight 50",
            f"Copying {KEY} template spec to podinfo-primary.test",
            "Routing all traffic to primary", f"Promotion completed! Scaling down {KEY}"]
SKIPPED = [f"New revision detected! Scaling up {KEY}",
           f"Promotion completed! Canary analysis was skipped for {KEY}"]


def answered(monkeypatch: pytest.MonkeyPatch, counts: dict[str, float]) -> list[str]:
    """linkerd-viz's Prometheus answers `counts[pod_template_hash]`; returns the queries."""
    queries: list[str] = []

    def run(_kube: object, promql: str) -> list[Obj]:
        queries.append(promql)
        found = [v for h, v in counts.items() if f'pod_template_hash="{h}"' in promql]
        return [{"metric": {}, "value": [0, str(found[0])]}] if found else []
    monkeypatch.setattr(hidden, "run", run)
    return queries


def test_an_analysed_promotion_passes_and_a_skipped_one_does_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    queries = answered(monkeypatch, {"aaa": 600})
    assert canary.promoted(given(ANALYSED)).status is Status.PASS
    assert hidden.release_got_traffic(given(ANALYSED)).status is Status.PASS
    assert 'deployment="podinfo", pod_template_hash="aaa", direction="inbound"' in queries[0]
    skipped = canary.promoted(given(SKIPPED, skip=True))
    assert skipped.status is Status.FAIL and "skipAnalysis" in skipped.reason
    # skipAnalysis switched off again after the skipped promotion: still no analysed rollout
    assert canary.promoted(given(SKIPPED)).status is Status.FAIL


def test_a_promotion_without_traffic_to_the_release_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The public check sees a Canary that advanced and promoted; the hidden one asks Linkerd's
    metrics whether the 6.0.1 pods answered anything (an analysis without metrics and without
    the load-test webhook passes every step with no traffic at all)."""
    answered(monkeypatch, {"aaa": 0})
    assert canary.promoted(given(ANALYSED)).status is Status.PASS
    verdict = hidden.release_got_traffic(given(ANALYSED))
    assert verdict.status is Status.FAIL and "answered 0 requests" in verdict.reason


FAULTY_RUN = [f"New revision detected! Scaling up {KEY}", f"Advance {KEY} canary weight 25"]
ROLLBACK = [f"Rolling back {KEY} failed checks threshold reached 4",
            f"Canary failed! Scaling down {KEY}"]


def test_a_rollback_must_come_from_the_failing_success_rate(
        monkeypatch: pytest.MonkeyPatch) -> None:
    answered(monkeypatch, {"bbb": 120})
    by_metric = given([*ANALYSED, *FAULTY_RUN,
                       f"Halt {KEY} advancement success-rate 50.10 < 99", *ROLLBACK],
                      phase="Failed", target="6.0.2")
    assert canary.rolled_back(by_metric).status is Status.PASS
    assert hidden.rollback_by_metric(by_metric).status is Status.PASS
    # the same status after halts on missing data only (no load sent to the canary)
    no_data = given([*ANALYSED, *FAULTY_RUN, "Halt advancement no values found for custom "
                     "metric: success-rate: no values found", *ROLLBACK],
                    phase="Failed", target="6.0.2")
    assert canary.rolled_back(no_data).status is Status.PASS
    verdict = hidden.rollback_by_metric(no_data)
    assert verdict.status is Status.FAIL and "success rate" in verdict.reason


def test_weights_are_read_from_the_route_and_the_split() -> None:
    route = {"spec": {"parentRefs": [{"name": "backend", "kind": "Service", "group": "core"}],
                      "rules": [{"backendRefs": [{"name": "backend-v1", "weight": 9},
                                                 {"name": "backend-v2", "weight": 1}]}]}}
    other = {"spec": {"parentRefs": [{"name": "web", "kind": "Service"}], "rules": []}}
    assert canary.route_weights([other, route], "backend") == {"backend-v1": 9, "backend-v2": 1}
    assert canary.route_weights([other], "backend") is None
    split = {"spec": {"service": "backend-smi", "backends": [
        {"service": "backend-v1", "weight": 50}, {"service": "backend-v2", "weight": 50}]}}
    assert canary.split_weights([split], "backend-smi") == {"backend-v1": 50, "backend-v2": 50}
    problem = canary._share_problem({"6.0.0": 0.5, "6.0.1": 0.5}, 0.02, 0.25)
    assert problem == ("100 requests from curl got 6.0.0 50%, 6.0.1 50%: expected only 6.0.0 "
                       "and 6.0.1, 6.0.1 between 2% and 25%")
