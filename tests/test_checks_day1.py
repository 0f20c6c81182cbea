"""Do the day-1 public checks judge a real cluster correctly — day1.install failing fatally on an
empty cluster and passing once Bookinfo runs with sidecars, day1.traffic and day1.mtls failing
before the learner's YAML and passing after — and do the three learner-facing readers
(`labs.check`, the "Check my work" button, `meshlab check`) show those verdicts?

Real session cluster, real kubectl, real Envoy sidecars. The namespaces are the labs' own
(`bookinfo`, `legacy`), so the tests run in file order and delete both at the end. Failing
behavioural checks would retry for their whole deadline (20 s); the "still failing" runs use a
short deadline instead, the passing runs the real one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import without_namespaces
from ipywidgets import Button, Output
from mesh_support import (
    JASON_MATCH,
    MeshNamespace,
    destination_rule,
    route,
    virtual_service,
    yaml_stream,
)

import labs
from labs.checks import Check, CheckContext, Report, Retry, Status, find, run_checks
from labs.cluster import ClusterRef
from labs.widgets import CHECK_LABEL, check_button

BOOKINFO = "bookinfo"
LEGACY = "legacy"
QUICK = Retry(consecutive=2, deadline=2.5, interval=0.5)
STRICT = yaml_stream({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                      "metadata": {"name": "default"}, "spec": {"mtls": {"mode": "STRICT"}}})


@pytest.fixture(scope="module")
def labs_namespaces(cluster: ClusterRef) -> Iterator[ClusterRef]:
    yield from without_namespaces(cluster, BOOKINFO, LEGACY)


def run(cluster: ClusterRef, selector: str, retry: Retry | None = None) -> Report:
    """Run a lab's public checks; `retry` replaces the behavioural checks' own."""
    checks: list[Check] = find(selector)
    if retry is not None:
        checks = [dataclasses.replace(c, retry=retry) if c.retry else c for c in checks]
    return run_checks(selector, checks, CheckContext(cluster))


def statuses(report: Report) -> dict[str, Status]:
    return {r.check.id.rpartition(".")[2]: r.outcome.status for r in report.results}


def reason(report: Report, name: str) -> str:
    return next(r.outcome.reason for r in report.results if r.check.id.endswith("." + name))


def meshlab_check(cluster: ClusterRef, *args: str, env: dict[str, str] | None = None
                  ) -> subprocess.CompletedProcess[str]:
    """`meshlab check ...` as a learner runs it, in a fresh process."""
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("MESHLAB_CLUSTER", "MESHLAB_CONTEXT", "MESHLAB_STATE_DIR")}
    return subprocess.run([sys.executable, "-m", "labs.cli", "check", *args],
                          capture_output=True, text=True, timeout=120,
                          env={**environment, **(env or {})})


def by_name(cluster: ClusterRef) -> tuple[str, ...]:
    assert cluster.embedded is not None
    return ("--name", cluster.embedded.name, "--state-dir", str(cluster.embedded.paths.root))


# --- day1.install --------------------------------------------------------------------------------

def test_cli_piped_into_head_ends_quietly(labs_namespaces: ClusterRef) -> None:
    """`meshlab check day1 | head -1`: once head has its line, meshlab stops without a
    BrokenPipeError traceback, exiting as a command killed by SIGPIPE would."""
    command = shlex.join([sys.executable, "-m", "labs.cli", "check", "day1",
                          *by_name(labs_namespaces)])
    piped = subprocess.run(["bash", "-o", "pipefail", "-c", f"{command} | head -1"],
                           capture_output=True, text=True, timeout=300)
    assert len(piped.stdout.splitlines()) == 1 and piped.stdout.startswith("day1."), piped
    assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr, piped.stderr
    assert piped.returncode == 141


def test_install_on_an_empty_cluster_fails_fatally(labs_namespaces: ClusterRef) -> None:
    """No bookinfo namespace: the fatal first check fails and the rest of the lab is skipped."""
    report = run(labs_namespaces, "day1.install")
    assert statuses(report) == {"namespace": Status.FAIL, "workloads": Status.SKIP,
                                "sidecars": Status.SKIP, "productpage": Status.SKIP}
    assert reason(report, "namespace") == "namespace bookinfo does not exist"
    assert reason(report, "workloads") == "skipped: day1.install.namespace failed"


def test_cli_prints_each_check_and_exits_1_on_failure(labs_namespaces: ClusterRef) -> None:
    result = meshlab_check(labs_namespaces, "day1.install", *by_name(labs_namespaces))
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith(
        "day1.install\n------------\n× namespace bookinfo exists and is labelled "
        "istio-injection=enabled\n    namespace bookinfo does not exist\n    hint: kubectl "
        "create namespace bookinfo; kubectl label namespace bookinfo istio-injection=enabled\n"
        "- the six Bookinfo Deployments run in bookinfo and are available\n")
    assert result.stdout.endswith("\nStatus check results are × (0/4 points)\n"
                                  "not done yet: 4 checks to go (each × says what is missing, "
                                  "its hint what to do)\n")


def test_cli_unknown_lab_exits_2_listing_the_labs(labs_namespaces: ClusterRef) -> None:
    result = meshlab_check(labs_namespaces, "day1.mtl", *by_name(labs_namespaces))
    assert result.returncode == 2 and result.stdout == ""
    prefix = "meshlab check: no check or lab is called 'day1.mtl'; known labs: "
    assert result.stderr.startswith(prefix) and result.stderr.endswith("\n")
    known = result.stderr.removeprefix(prefix).strip().split(", ")
    assert {"day1.install", "day1.mtls", "day1.traffic"} <= set(known)
    assert known == sorted(known)


def test_cli_refuses_a_cluster_that_is_not_running(tmp_path: Path,
                                                  labs_namespaces: ClusterRef) -> None:
    result = meshlab_check(labs_namespaces, "day1.install", "--name", "absent",
                           "--state-dir", str(tmp_path))
    assert result.returncode == 1
    assert "cluster absent is not running: start it with `meshlab up --name absent`" in (
        result.stderr)
    assert not (tmp_path / "clusters" / "absent" / "kubeconfig").exists()


def test_namespace_without_injection_label_says_so(labs_namespaces: ClusterRef) -> None:
    created = labs_namespaces.kubectl("create", "namespace", BOOKINFO)
    assert created.returncode == 0, created.stderr
    report = run(labs_namespaces, "day1.install.namespace")
    assert reason(report, "namespace") == ("namespace bookinfo has no istio-injection label, "
                                           "so its pods get no sidecar")


def test_install_passes_with_bookinfo_in_the_mesh(labs_namespaces: ClusterRef) -> None:
    """Label, deploy, wait: every install check passes, through `meshlab --context` too."""
    labelled = labs_namespaces.kubectl("label", "namespace", BOOKINFO, "istio-injection=enabled")
    assert labelled.returncode == 0, labelled.stderr
    MeshNamespace(labs_namespaces, BOOKINFO).deploy("bookinfo")

    report = run(labs_namespaces, "day1.install")
    assert all(s is Status.PASS for s in statuses(report).values()), report
    assert report.earned == report.possible == 4

    result = meshlab_check(labs_namespaces, "day1.install", "--context",
                           labs_namespaces.context, "-o", "json",
                           env={"KUBECONFIG": str(labs_namespaces.kubeconfig)})
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert (data["selector"], data["ok"], data["earned"]) == ("day1.install", True, 4.0)
    assert [r["status"] for r in data["results"]] == ["pass"] * 4


# --- day1.traffic --------------------------------------------------------------------------------

def test_traffic_fails_with_round_robin_and_passes_with_routes(
        labs_namespaces: ClusterRef) -> None:
    report = run(labs_namespaces, "day1.traffic", retry=QUICK)
    assert set(statuses(report).values()) == {Status.FAIL}
    assert reason(report, "subsets") == "no DestinationRule in bookinfo has host reviews"
    assert "expected reviews v1 to answer (at least 90%)" in reason(report, "reviews-v1")

    MeshNamespace(labs_namespaces, BOOKINFO).apply(yaml_stream(
        destination_rule("reviews", "v1", "v2", "v3"),
        virtual_service("reviews", route("reviews", "v2", match=JASON_MATCH),
                        route("reviews", "v1"))))
    report = run(labs_namespaces, "day1.traffic")
    assert all(s is Status.PASS for s in statuses(report).values()), report


# --- day1.mtls and the notebook readers ----------------------------------------------------------

def test_mtls_fails_while_permissive(labs_namespaces: ClusterRef) -> None:
    """Plaintext from `legacy` still gets 200 without STRICT; the meshed call earns nothing
    before STRICT (it works without any work)."""
    report = run(labs_namespaces, "day1.mtls", retry=QUICK)
    assert statuses(report) == {"strict-namespace": Status.FAIL, "meshed-call": Status.FAIL,
                                "legacy-client": Status.FAIL,
                                "plaintext-refused": Status.SKIP}
    assert reason(report, "legacy-client") == "no curl pod in namespace legacy"

    created = labs_namespaces.kubectl("create", "namespace", LEGACY)
    assert created.returncode == 0, created.stderr
    MeshNamespace(labs_namespaces, LEGACY).deploy("curl")
    report = run(labs_namespaces, "day1.mtls", retry=QUICK)
    assert statuses(report) == {"strict-namespace": Status.FAIL, "meshed-call": Status.FAIL,
                                "legacy-client": Status.PASS, "plaintext-refused": Status.FAIL}
    assert reason(report, "strict-namespace") == (
        "no PeerAuthentication without a selector in bookinfo")
    assert reason(report, "plaintext-refused").endswith(": 200 ×2"), report


def test_labs_check_shows_the_result_inline(labs_namespaces: ClusterRef,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`labs.check` on the cluster the environment selects: HTML for Jupyter, text for a
    terminal (only the fast structural check, the rest was judged above)."""
    assert labs_namespaces.embedded is not None
    monkeypatch.delenv("MESHLAB_CONTEXT", raising=False)
    monkeypatch.setenv("MESHLAB_CLUSTER", labs_namespaces.embedded.name)
    monkeypatch.setenv("MESHLAB_STATE_DIR", str(labs_namespaces.embedded.paths.root))

    shown = labs.check("day1.mtls.strict-namespace")
    assert not shown.ok
    assert repr(shown).startswith("day1.mtls\n---------\n× a namespace-wide PeerAuthentication")
    html = shown._repr_html_()
    assert 'data-check="day1.mtls.strict-namespace" data-status="fail"' in html
    assert "<b>Hint:</b> apply a PeerAuthentication named default" in html


def test_check_button_reruns_and_replaces_the_output(labs_namespaces: ClusterRef) -> None:
    """Click before and after applying STRICT: the output holds only the latest result."""
    box = check_button("day1.mtls", cluster=labs_namespaces)
    button, output = box.children
    assert isinstance(button, Button) and isinstance(output, Output)
    assert button.description == CHECK_LABEL and output.outputs == ()

    MeshNamespace(labs_namespaces, BOOKINFO).apply(STRICT)
    button.click()
    assert len(output.outputs) == 1
    data = output.outputs[0]["data"]
    assert "Status check results are ✔ (4/4 points)" in data["text/html"]
    assert data["text/plain"].endswith("Status check results are ✔ (4/4 points)")
    assert button.description == CHECK_LABEL and not button.disabled

    MeshNamespace(labs_namespaces, BOOKINFO).kubectl("delete", "peerauthentication", "default")
    box = check_button("day1.mtls.strict-namespace", cluster=labs_namespaces)
    button, output = box.children
    button.click()
    button.click()
    assert len(output.outputs) == 1
    assert "Status check results are × (0/1 points)" in output.outputs[0]["data"]["text/html"]
