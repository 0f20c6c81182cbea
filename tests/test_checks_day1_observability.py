"""Do the day1.observability checks (public and hidden) judge a real cluster correctly: each
exercise failing before the learner's answer with a reason that says what was seen, wrong
answers (a success rate, a query per series, a syntax error, PERMISSIVE) failing with a reason
that points at the mistake, and everything passing with the notebook's own answers?

Real session cluster, real Envoy sidecars, real Prometheus, in the lab's own namespaces
`observe` and `outside` (deleted before and after). The set-up, the traffic and the answers are
the notebook's cells — one source.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator

import nbformat
import pytest
from conftest import without_namespaces
from mesh_support import MeshNamespace, manifest, wait_available
from notebook_support import COURSE

from labs.checks import Check, CheckContext, Report, Retry, Status, find, run_checks
from labs.checks.public.day1.observability import HTTPBIN_REQUESTS, NAMESPACE, OUTSIDE
from labs.cluster import ClusterRef
from labs.metrics import query
from labs.traffic import probe

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="no `prometheus` binary on PATH: no PromQL to check")
NOTEBOOK = COURSE / "day1" / "06-observability.ipynb"
BOOKINFO = "bookinfo"
QUICK = Retry(consecutive=1, deadline=15, interval=1)
_YAML = re.compile(r'labs\.apply\((?:f?"""|\'\'\')(.*?)(?:"""|\'\'\')', re.S)
_ERROR_RATE = re.compile(r"^error_rate = (\(.*?\))$", re.S | re.M)


def cell(grade_id: str) -> str:
    for item in nbformat.read(NOTEBOOK, as_version=4).cells:
        if item.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            return str(item.source)
    raise AssertionError(f"no cell {grade_id!r} in {NOTEBOOK}")


def cell_yaml(grade_id: str) -> str:
    found = _YAML.search(cell(grade_id))
    assert found, grade_id
    return found.group(1)


def golden_signals(promql: str) -> str:
    """The notebook's ConfigMap with `promql` under the key error-rate."""
    return cell_yaml("answer-error-rate").replace("{error_rate}", promql)


@pytest.fixture(scope="module")
def lab(cluster: ClusterRef) -> Iterator[MeshNamespace]:
    """The notebook's set-up: namespaces observe (meshed) and outside, httpbin and two curls,
    and Bookinfo in its namespace (a hidden check calls productpage)."""
    for ref in without_namespaces(cluster, NAMESPACE, OUTSIDE, BOOKINFO):
        assert ref.kubectl("create", "namespace", BOOKINFO).returncode == 0
        bookinfo = MeshNamespace(ref, BOOKINFO)
        bookinfo.kubectl("label", "namespace", BOOKINFO, "istio-injection=enabled")
        bookinfo.deploy("bookinfo")
        lab = MeshNamespace(ref, NAMESPACE)
        lab.kubectl("apply", "-f", "-", input=cell_yaml("setup"))
        lab.apply(manifest("httpbin"))
        lab.apply(manifest("curl"))
        ref.kubectl("apply", "-n", OUTSIDE, "-f", "-", input=manifest("curl"))
        wait_available(ref, NAMESPACE)
        wait_available(ref, OUTSIDE)
        yield lab


def send_lab_traffic(cluster: ClusterRef) -> None:
    """The notebook's mix to httpbin (its `send_traffic`, without Bookinfo): three 200s for each
    503 from the meshed curl, and plaintext from outside."""
    for url, namespace, n in (("http://httpbin:8000/status/200", NAMESPACE, 9),
                              ("http://httpbin:8000/status/503", NAMESPACE, 3),
                              (f"http://httpbin.{NAMESPACE}:8000/status/200", OUTSIDE, 3)):
        probe(url, namespace=namespace, n=n, cluster=cluster)


def run(cluster: ClusterRef, retry: Retry | None = QUICK) -> Report:
    checks: list[Check] = [dataclasses.replace(c, retry=retry) if c.retry else c
                           for c in find("day1.observability")]
    return run_checks("day1.observability", checks, CheckContext(cluster))


def statuses(report: Report) -> dict[str, Status]:
    return {r.check.id.rpartition(".")[2]: r.outcome.status for r in report.results}


def reason(report: Report, name: str) -> str:
    return next(r.outcome.reason for r in report.results if r.check.id.endswith("." + name))


def test_before_the_answers_each_exercise_fails_saying_what_it_saw(lab: MeshNamespace) -> None:
    for sent in (15, 30):  # a rate needs a counter that grew after its first scrape
        send_lab_traffic(lab.cluster)
        counted = query(f'sum({HTTPBIN_REQUESTS}}})', cluster=lab.cluster, deadline=15,
                        until=lambda rows, n=sent: rows.total() >= n)
        assert counted.settled, counted

    report = run(lab.cluster, Retry(consecutive=1, deadline=1, interval=1))

    assert statuses(report) == {"error-rate-query": Status.FAIL, "strict": Status.FAIL,
                                "no-plaintext": Status.FAIL}, report
    assert reason(report, "error-rate-query") == (
        f"no ConfigMap golden-signals with a key error-rate in {NAMESPACE}")
    assert reason(report, "strict") == f"no PeerAuthentication in {NAMESPACE} applies to httpbin"
    assert re.match(r'2 new plaintext request\(s\) reached httpbin \(connection_security_policy='
                    r'"none"\); 2 requests from deploy/curl \(outside\) to \S+: 200 ×2$',
                    reason(report, "no-plaintext")), reason(report, "no-plaintext")


@pytest.mark.parametrize(("promql", "expected"), [
    ('sum(rate(istio_requests_total{destination_workload="httpbin",response_code!~"5.."}[1m])) / '
     'sum(rate(istio_requests_total{destination_workload="httpbin"}[1m]))',
     r"^your query returns 0\.\d+; httpbin's share of 5xx answers is 0\.\d+ \(an answer near "
     r"0\.\d+ is the success rate\)$"),
    ('rate(istio_requests_total{destination_workload="httpbin",response_code=~"5.."}[1m])',
     r"^your query returns \d+ series; sum them into one value"),
    ('sum(rate(istio_requests_total{destination_workload="httpbin"[1m]))',
     r"^your query could not run: Prometheus rejected the query \(bad_data\)"),
])
def test_a_wrong_error_rate_query_fails_naming_the_mistake(lab: MeshNamespace, promql: str,
                                                           expected: str) -> None:
    lab.kubectl("apply", "-f", "-", input=golden_signals(promql))

    report = run(lab.cluster, retry=None)

    assert statuses(report)["error-rate-query"] is Status.FAIL
    assert re.match(expected, reason(report, "error-rate-query")), reason(report,
                                                                          "error-rate-query")


def test_permissive_is_not_strict(lab: MeshNamespace) -> None:
    lab.apply(cell_yaml("answer-strict").replace("STRICT", "PERMISSIVE"))

    report = run(lab.cluster, retry=None)

    assert reason(report, "strict") == "mode PERMISSIVE (default)"
    assert statuses(report)["no-plaintext"] is Status.FAIL


def test_with_every_answer_all_checks_pass_including_hidden(lab: MeshNamespace) -> None:
    """The notebook's answers, then `python -m grader.verify day1.observability` (public and
    hidden checks in a fresh process, as a hidden test cell runs them)."""
    found = _ERROR_RATE.search(cell("answer-error-rate"))
    assert found
    lab.kubectl("apply", "-f", "-", input=golden_signals(ast.literal_eval(found.group(1))))
    lab.apply(cell_yaml("answer-strict"))

    report = run(lab.cluster)
    assert set(statuses(report).values()) == {Status.PASS}, report

    cluster = lab.cluster
    assert cluster.embedded is not None
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MESHLAB_")},
           "MESHLAB_CLUSTER": cluster.embedded.name,
           "MESHLAB_STATE_DIR": str(cluster.embedded.paths.root)}
    done = subprocess.run([sys.executable, "-m", "grader.verify", "day1.observability"],
                          env=env, capture_output=True, text=True, timeout=240, cwd=COURSE)
    data = json.loads(done.stdout)
    assert [r["id"] for r in data["results"] if r["status"] != "pass"] == [], data
    assert {r["id"].rpartition(".")[2] for r in data["results"]} == {
        "error-rate-query", "strict", "no-plaintext", "plaintext-refused", "meshed-calls"}
    assert data["earned"] == data["possible"] == 5, data
