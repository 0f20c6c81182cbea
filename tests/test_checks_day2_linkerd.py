"""Do the day2.linkerd checks, public and hidden, judge a real cluster correctly: the fatal
set-up check without emojivoto, and each hidden check refusing a shortcut its public check
accepts — `failing-deployment: web` (the deployment that shows the errors, not where they start),
and voting opened to web by the upstream task's deprecated ServerAuthorization instead of an
AuthorizationPolicy, and voting's prom port refused by one more Server instead of the default
policy deny — then passing with the notebook's own solutions.

Real session cluster, real Envoys playing linkerd-proxy; the namespace is the lab's own
(`emojivoto`), deleted at the start and the end. Failing behavioural checks get a short deadline.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator

import nbformat
import pytest
import yaml
from conftest import without_namespaces
from mesh_support import MANIFESTS, MeshNamespace, wait_available
from notebook_support import COURSE

import grader.hidden.day2.linkerd  # noqa: F401  (registers the hidden checks)
from labs.checks import Check, CheckContext, Report, Retry, Status, find, run_checks
from labs.checks.public.day2.linkerd import NAMESPACE
from labs.cluster import ClusterRef

pytestmark = pytest.mark.usefixtures("linkerd_installed")  # the cluster starts without it

PASS, FAIL, SKIP = Status.PASS, Status.FAIL, Status.SKIP
QUICK = Retry(consecutive=2, deadline=2.5, interval=0.5)
NOTEBOOK = COURSE / "day2" / "03-linkerd.ipynb"
SERVER_AUTHORIZATION = {  # restricting-access.md's, as written there
    "apiVersion": "policy.linkerd.io/v1beta1", "kind": "ServerAuthorization",
    "metadata": {"name": "voting-grpc"},
    "spec": {"server": {"name": "voting-grpc"},
             "client": {"meshTLS": {"serviceAccounts": [{"name": "web"}]}}}}


def solution_source(grade_id: str) -> str:
    """The source of the notebook's solution cell `grade_id`."""
    return next(c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells
                if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def solution(grade_id: str) -> str:
    """The YAML the notebook's solution cell `grade_id` passes to labs.apply."""
    source = solution_source(grade_id)
    found = re.search(r"labs\.apply\('''(.*?)'''", source, re.DOTALL)
    assert found, f"no labs.apply('''...''') in cell {grade_id}"
    return found[1]


@pytest.fixture(scope="module")
def lab(cluster: ClusterRef) -> Iterator[MeshNamespace]:
    yield from (MeshNamespace(ref, NAMESPACE) for ref in without_namespaces(cluster, NAMESPACE))


def judge(cluster: ClusterRef, expected: dict[str, Status]) -> Report:
    """Run the named checks of day2.linkerd (hidden ones too) and assert their statuses."""
    checks: list[Check] = [c if expected[name] is PASS or not c.retry
                           else dataclasses.replace(c, retry=QUICK)
                           for c in find("day2.linkerd", include_hidden=True)
                           if (name := c.id.rpartition(".")[2]) in expected]
    report = run_checks("day2.linkerd", checks, CheckContext(cluster))
    assert {r.check.id.rpartition(".")[2]: r.outcome.status
            for r in report.results} == expected, report
    return report


def reason(report: Report, name: str) -> str:
    return next(r.outcome.reason for r in report.results if r.check.id.endswith("." + name))


def test_without_emojivoto_the_lab_fails_fatally(lab: MeshNamespace) -> None:
    report = judge(lab.cluster, {"emojivoto": FAIL, "meshed": SKIP, "failing-route": SKIP})
    assert reason(report, "emojivoto") == "missing in emojivoto: emoji, vote-bot, voting, web"


def test_hidden_checks_refuse_what_the_public_ones_accept(lab: MeshNamespace) -> None:
    docs = [d for d in yaml.safe_load_all((MANIFESTS / "emojivoto.yaml").read_text()) if d]
    for doc in docs:  # meshed from the start (the notebook injects the deployments instead)
        if doc["kind"] == "Namespace":
            doc["metadata"]["annotations"] = {"linkerd.io/inject": "enabled"}
    lab.apply(yaml.safe_dump_all(docs))
    wait_available(lab.cluster, NAMESPACE, timeout=120)

    lab.kubectl("create", "configmap", "answers", "--from-literal=failing-route="
                "/emojivoto.v1.VotingService/VoteDoughnut", "--from-literal=failing-deployment=web")
    report = judge(lab.cluster, {"emojivoto": PASS, "meshed": PASS, "failing-route": PASS,
                                 "mtls": PASS, "failing-source": FAIL})
    assert reason(report, "failing-source") == "failing-deployment is 'web'"

    server = next(d for d in yaml.safe_load_all(solution("answer-policy"))
                  if d["kind"] == "Server")
    lab.apply(yaml.safe_dump_all([server, SERVER_AUTHORIZATION]))
    report = judge(lab.cluster, {"voting-restricted": PASS, "voting-by-identity": FAIL})
    assert "no call from web allowed by an AuthorizationPolicy" in reason(
        report, "voting-by-identity")

    lab.kubectl("delete", "serverauthorization", "voting-grpc")
    lab.apply(solution("answer-policy"))
    judge(lab.cluster, {"voting-restricted": PASS, "voting-by-identity": PASS})

    # one more Server, on the prom port, refuses vote-bot too, but voting is not default-deny
    lab.apply(yaml.safe_dump({**server, "metadata": {"name": "voting-prom"}, "spec": {
        **server["spec"], "port": "prom", "proxyProtocol": "HTTP/1"}}))
    report = judge(lab.cluster, {"default-deny": PASS, "deny-by-default-policy": FAIL})
    assert "no request to port 8801 refused by the default policy deny" in reason(
        report, "deny-by-default-policy")
    lab.kubectl("delete", "server", "voting-prom")
    patch = re.search(r"-p '(.*)'", solution_source("answer-default-deny"))
    assert patch
    lab.kubectl("patch", "deploy", "voting", "-p", patch[1])
    lab.kubectl("rollout", "status", "deploy/voting", "--timeout=60s")
    judge(lab.cluster, {"default-deny": PASS, "deny-by-default-policy": PASS,
                        "voting-restricted": PASS})
