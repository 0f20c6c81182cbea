"""Do the day1.architecture checks (public and hidden) judge a real cluster correctly: the fatal
set-up check on an empty cluster, each exercise failing before the learner's answer and on the
configuration the notebook breaks, with a reason that says what was seen; the hidden checks
catching the shortcuts the public ones let through (deleting what analyze complains about,
relaxing STRICT mTLS); and everything passing with the notebook's own answers?

Real session cluster, real kubectl, real Envoy sidecars, in the lab's own namespace
`troubleshoot` (deleted before and after). The YAML is the notebook's: its set-up, the
configurations it applies for the learner to fix, and its solution cells — one source.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import nbformat
import pytest
from conftest import without_namespaces
from mesh_support import MeshNamespace, wait_available
from notebook_support import COURSE

from labs.checks import Check, CheckContext, Report, Status, find, run_checks
from labs.checks.registry import load_checks
from labs.cluster import ClusterRef

LAB = "day1.architecture"
NAMESPACE = "troubleshoot"
NOTEBOOK = COURSE / "day1" / "07-architecture.ipynb"
QUICK_DEADLINE_S = 6.0
_YAML = re.compile(r'labs\.apply\("""(.*?)"""', re.S)
HIDDEN = ("reviews-split-served", "config-repaired", "mtls-still-strict")


def cell_yaml(grade_id: str) -> str:
    """The YAML the notebook's code cell with this nbgrader grade_id passes to labs.apply."""
    for cell in nbformat.read(NOTEBOOK, as_version=4).cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            found = _YAML.search(cell.source)
            assert found, cell.source
            return found.group(1)
    raise AssertionError(f"no cell {grade_id!r} in {NOTEBOOK}")


@pytest.fixture(scope="module")
def lab(cluster: ClusterRef) -> Iterator[MeshNamespace]:
    yield from (MeshNamespace(ref, NAMESPACE) for ref in without_namespaces(cluster, NAMESPACE))


def run(cluster: ClusterRef, *, hidden: bool = True) -> Report:
    """The lab's checks (with the hidden ones), behavioural ones retried briefly."""
    load_checks(hidden=hidden)
    checks: list[Check] = [
        dataclasses.replace(c, retry=dataclasses.replace(c.retry, deadline=QUICK_DEADLINE_S))
        if c.retry else c for c in find(LAB, include_hidden=hidden)]
    return run_checks(LAB, checks, CheckContext(cluster))


def statuses(report: Report) -> dict[str, Status]:
    return {r.check.id.rpartition(".")[2]: r.outcome.status for r in report.results}


def reason(report: Report, name: str) -> str:
    return next(r.outcome.reason for r in report.results if r.check.id.endswith("." + name))


def test_an_empty_cluster_fails_the_fatal_set_up_check(lab: MeshNamespace) -> None:
    report = run(lab.cluster, hidden=False)
    assert statuses(report)["apps"] is Status.FAIL
    assert reason(report, "apps") == "namespace troubleshoot does not exist"
    assert {s for n, s in statuses(report).items() if n != "apps"} == {Status.SKIP}
    assert report.possible == 3  # the set-up check is worth no points


def test_before_the_answers_each_exercise_fails_saying_what_it_saw(lab: MeshNamespace) -> None:
    """The notebook's set-up (Bookinfo without reviews v3) and its DestinationRule reviews."""
    cluster = lab.cluster
    for args in (("create", "namespace", NAMESPACE),
                 ("label", "namespace", NAMESPACE, "istio-injection=enabled")):
        assert cluster.kubectl(*args).returncode == 0
    lab.kubectl("apply", "-f", str(COURSE / "labs" / "manifests" / "bookinfo.yaml"),
                "-l", "version!=v3")
    wait_available(cluster, NAMESPACE)
    lab.apply(cell_yaml("subsets"))

    report = run(cluster)

    assert statuses(report) == {
        "apps": Status.PASS, "reviews-split-pushed": Status.FAIL,
        "analyze-clean": Status.PASS, "ratings-answers": Status.PASS,
        "reviews-split-served": Status.FAIL, "config-repaired": Status.FAIL,
        "mtls-still-strict": Status.FAIL}, report
    assert reason(report, "reviews-split-pushed") == (
        "productpage's routes for reviews go to: "
        "outbound|9080||reviews.troubleshoot.svc.cluster.local 100; expected "
        "outbound|9080|v1|reviews.troubleshoot.svc.cluster.local 80, "
        "outbound|9080|v2|reviews.troubleshoot.svc.cluster.local 20")
    assert reason(report, "config-repaired") == (
        "no VirtualService ratings or details in troubleshoot")
    assert reason(report, "mtls-still-strict") == (
        "PeerAuthentication default in troubleshoot has mode none")


def test_the_seeded_mistakes_and_the_break_fail_the_checks_they_break(
        lab: MeshNamespace) -> None:
    """The learner's split, then the colleague's three mistakes and the STRICT break."""
    for grade_id in ("answer-split", "seed-analyze", "seed-break"):
        lab.apply(cell_yaml(grade_id))

    report = run(lab.cluster)

    assert statuses(report) == {
        "apps": Status.PASS, "reviews-split-pushed": Status.PASS,
        "analyze-clean": Status.FAIL, "ratings-answers": Status.FAIL,
        "reviews-split-served": Status.PASS, "config-repaired": Status.FAIL,
        "mtls-still-strict": Status.FAIL}, report
    analyzed = reason(report, "analyze-clean")
    assert 'Error [IST0101] (VirtualService troubleshoot/ratings) Referenced host not found: ' \
           '"rating"' in analyzed
    assert 'Referenced host+subset in destinationrule not found: "details+v1"' in analyzed
    assert "Info [IST0118] (Service troubleshoot/productpage) Port name web" in analyzed
    assert "503 ×3" in reason(report, "ratings-answers")
    assert reason(report, "config-repaired") == (
        "the VirtualService ratings routes to ['rating']")
    assert reason(report, "mtls-still-strict") == (
        "cluster outbound|9080||ratings.troubleshoot.svc.cluster.local has no TLS transport "
        "socket")


def test_shortcuts_pass_the_public_checks_but_not_the_hidden_ones(lab: MeshNamespace) -> None:
    """Deleting the VirtualService analyze complains about, and relaxing the namespace to
    PERMISSIVE instead of fixing the client's DestinationRule."""
    lab.apply(cell_yaml("answer-analyze"))
    lab.kubectl("delete", "virtualservice", "ratings")
    lab.kubectl("patch", "peerauthentication", "default", "--type=merge",
                "-p", '{"spec": {"mtls": {"mode": "PERMISSIVE"}}}')

    report = run(lab.cluster)

    assert {n: s for n, s in statuses(report).items() if n in HIDDEN} == {
        "reviews-split-served": Status.PASS, "config-repaired": Status.FAIL,
        "mtls-still-strict": Status.FAIL}, report
    assert {s for n, s in statuses(report).items() if n not in HIDDEN} == {Status.PASS}
    assert reason(report, "config-repaired") == "no VirtualService ratings in troubleshoot"
    assert reason(report, "mtls-still-strict") == (
        "PeerAuthentication default in troubleshoot has mode PERMISSIVE")


def test_with_every_answer_all_checks_pass_including_hidden(lab: MeshNamespace) -> None:
    """The notebook's answers, then `python -m grader.verify day1.architecture` (public and
    hidden checks in a fresh process, as a hidden test cell runs them)."""
    for grade_id in ("answer-analyze", "seed-break", "answer-fix"):
        lab.apply(cell_yaml(grade_id))

    cluster = lab.cluster
    assert cluster.embedded is not None
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MESHLAB_")},
           "MESHLAB_CLUSTER": cluster.embedded.name,
           "MESHLAB_STATE_DIR": str(cluster.embedded.paths.root)}
    done = subprocess.run([sys.executable, "-m", "grader.verify", LAB], env=env,
                          capture_output=True, text=True, timeout=240, cwd=COURSE)
    data = json.loads(done.stdout)
    assert [r["id"] for r in data["results"] if r["status"] != "pass"] == [], data
    assert data["earned"] == data["possible"] == 6, data
