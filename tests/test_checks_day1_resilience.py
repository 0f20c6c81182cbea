"""Do the day1.resilience checks (public and hidden) judge a real cluster correctly: the fatal
set-up check on an empty cluster, each exercise failing before the learner's answer with a
reason that says what was seen, the two "break" states of the lab failing the checks they
should, and everything passing with the notebook's own answers?  (A break step never creates
what an exercise asks for: the per-try timeout is patched into the learner's own
VirtualService, so skipping the retries exercise cannot earn its point.)

Real session cluster, real kubectl, real Envoy sidecars, in the lab's own namespace
`resilience` (deleted before and after). The YAML is the notebook's: its set-up cell, the
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
from mesh_support import MeshNamespace, manifest, wait_available
from notebook_support import COURSE

from labs.checks import Check, CheckContext, Report, Retry, Status, find, run_checks
from labs.cluster import ClusterRef

NAMESPACE = "resilience"
NOTEBOOK = COURSE / "day1" / "05-resilience.ipynb"
QUICK = Retry(consecutive=1, deadline=2.5, interval=0.5)
_YAML = re.compile(r'labs\.apply\((?:"""|\'\'\')(.*?)(?:"""|\'\'\')', re.S)


def notebook_yaml(*, grade_id: str = "", containing: str = "") -> str:
    """The YAML a notebook cell passes to labs.apply: the cell with this nbgrader grade_id, or
    the first code cell whose source contains `containing`."""
    for cell in nbformat.read(NOTEBOOK, as_version=4).cells:
        nbgrader = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and (
                (grade_id and nbgrader.get("grade_id") == grade_id)
                or (containing and containing in cell.source)):
            found = _YAML.search(cell.source)
            assert found, cell.source
            return found.group(1)
    raise AssertionError(f"no cell {grade_id or containing!r} in {NOTEBOOK}")


def notebook_patch() -> str:
    """The JSON patch the notebook's break cell gives `kubectl patch --type=json`."""
    for cell in nbformat.read(NOTEBOOK, as_version=4).cells:
        found = re.search(r"^PATCH = '(.*)'$", cell.source, re.M)
        if found:
            return found.group(1)
    raise AssertionError(f"no PATCH = '...' cell in {NOTEBOOK}")


@pytest.fixture(scope="module")
def lab(cluster: ClusterRef) -> Iterator[MeshNamespace]:
    yield from (MeshNamespace(ref, NAMESPACE) for ref in without_namespaces(cluster, NAMESPACE))


def run(cluster: ClusterRef, retry: Retry | None = QUICK) -> Report:
    """The lab's public checks; `retry` replaces the behavioural checks' own."""
    checks: list[Check] = find("day1.resilience")
    if retry is not None:
        checks = [dataclasses.replace(c, retry=retry) if c.retry else c for c in checks]
    return run_checks("day1.resilience", checks, CheckContext(cluster))


def statuses(report: Report) -> dict[str, Status]:
    return {r.check.id.rpartition(".")[2]: r.outcome.status for r in report.results}


def reason(report: Report, name: str) -> str:
    return next(r.outcome.reason for r in report.results if r.check.id.endswith("." + name))


def test_an_empty_cluster_fails_the_fatal_set_up_check(lab: MeshNamespace) -> None:
    report = run(lab.cluster)
    assert statuses(report)["apps"] is Status.FAIL
    assert reason(report, "apps") == "namespace resilience does not exist"
    assert {s for n, s in statuses(report).items() if n != "apps"} == {Status.SKIP}
    assert report.possible == 6  # the set-up check is worth no points


def test_before_the_answers_each_exercise_fails_saying_what_it_saw(lab: MeshNamespace) -> None:
    """The notebook's set-up: curl, fortio, httpbin, reviews v2 + ratings, flaky."""
    cluster = lab.cluster
    for args in (("create", "namespace", NAMESPACE),
                 ("label", "namespace", NAMESPACE, "istio-injection=enabled")):
        assert cluster.kubectl(*args).returncode == 0
    for name in ("curl", "fortio", "httpbin"):
        lab.apply(manifest(name))
    bookinfo = str(COURSE / "labs" / "manifests" / "bookinfo.yaml")
    for selector in ("account in (reviews, ratings)", "service in (reviews, ratings)",
                     "app=ratings", "app=reviews,version=v2"):
        lab.kubectl("apply", "-f", bookinfo, "-l", selector)
    lab.apply(notebook_yaml(grade_id="setup-apps"))
    wait_available(cluster, NAMESPACE)
    # The break step only patches the learner's own retries: without them it changes nothing.
    patched = lab.kubectl.run("patch", "virtualservice", "httpbin", "--type=json", "-p",
                              notebook_patch())
    assert patched.returncode != 0 and "NotFound" in patched.stderr, patched.stderr

    report = run(cluster)

    assert statuses(report) == {
        "apps": Status.PASS, "ratings-delay": Status.FAIL, "reviews-timeout": Status.FAIL,
        "retries": Status.FAIL, "slow-path": Status.PASS, "circuit-breaker": Status.FAIL,
        "outlier-ejection": Status.FAIL}, report
    assert reason(report, "ratings-delay") == "no VirtualService in resilience has host ratings"
    assert "expected 504 'upstream request timeout' every time" in reason(report,
                                                                          "reviews-timeout")
    assert "got 503 after 1 attempt(s) logged by httpbin's sidecar; expected 503 after 4" in (
        reason(report, "retries"))
    assert reason(report, "circuit-breaker").startswith("fortio -c 3 -n 30 got 200 ×30;")
    assert reason(report, "outlier-ejection").endswith("ejections_active is 0")


def test_the_broken_configurations_fail_the_checks_they_break(lab: MeshNamespace) -> None:
    """The learner's answers so far, then the lab's two breaks: a per-try timeout of 0.5 s
    patched into the learner's retries (slow /delay/1 fails after 4 tries) and outlier
    detection without maxEjectionPercent."""
    for exercise in ("delay", "timeout", "retries", "breaker"):
        lab.apply(notebook_yaml(grade_id=f"answer-{exercise}"))
    lab.kubectl("patch", "virtualservice", "httpbin", "--type=json", "-p", notebook_patch())
    lab.apply(notebook_yaml(containing="name: flaky\nspec:\n  host: flaky"))

    report = run(lab.cluster, Retry(consecutive=1, deadline=10, interval=0.5))

    assert statuses(report) == {
        "apps": Status.PASS, "ratings-delay": Status.PASS, "reviews-timeout": Status.PASS,
        "retries": Status.PASS, "slow-path": Status.FAIL, "circuit-breaker": Status.PASS,
        "outlier-ejection": Status.FAIL}, report
    assert "/delay/1 got 504 after 4 attempt(s)" in reason(report, "slow-path")
    assert reason(report, "outlier-ejection").endswith("ejections_active is 0")


def test_with_every_answer_all_checks_pass_including_hidden(lab: MeshNamespace) -> None:
    """The fixes, then `python -m grader.verify day1.resilience` (public + hidden checks in a
    fresh process, as a hidden test cell runs them)."""
    for exercise in ("fix-retries", "outlier"):
        lab.apply(notebook_yaml(grade_id=f"answer-{exercise}"))

    report = run(lab.cluster, retry=None)
    assert set(statuses(report).values()) == {Status.PASS}, report

    cluster = lab.cluster
    assert cluster.embedded is not None
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MESHLAB_")},
           "MESHLAB_CLUSTER": cluster.embedded.name,
           "MESHLAB_STATE_DIR": str(cluster.embedded.paths.root)}
    done = subprocess.run([sys.executable, "-m", "grader.verify", "day1.resilience"],
                          env=env, capture_output=True, text=True, timeout=240,
                          cwd=COURSE)
    data = json.loads(done.stdout)
    assert [r["id"] for r in data["results"] if r["status"] != "pass"] == [], data
    public = {result.check.id for result in report.results}
    hidden = [r for r in data["results"] if r["id"] not in public]
    assert len(hidden) == 3 and data["earned"] == data["possible"] == 9, data
