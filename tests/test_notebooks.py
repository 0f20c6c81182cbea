"""The course notebooks run top to bottom with nbval — solutions, hidden tests (`grader.verify`,
which checks the cluster in a fresh process) and "Check my work" — on a fresh embedded cluster,
day 1 in course order; and they are committed clean: no outputs, no sleeps."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
from notebook_support import COURSE, course_notebooks, run_notebooks

from labs.cluster import EmbeddedCluster

DAY1 = ("day1/01-install.ipynb", "day1/02-traffic.ipynb", "day1/03-mtls.ipynb",
        "day1/04-gateways.ipynb")
UNSETTLED = "did not settle"


def test_day1_runs_in_course_order_on_a_fresh_cluster(notebook_cluster: EmbeddedCluster,
                                                      tmp_path: Path) -> None:
    run = run_notebooks(course_notebooks(*DAY1), tmp_path)

    assert not run.failed(), run.describe_failures()
    assert UNSETTLED not in run.text(), "a probe's until= never held with the solutions"
    install = run.text(DAY1[0])
    assert "<title>Simple Bookstore App</title>" in install
    assert "istio-proxy" in install and "docker.io/istio/proxyv2" in install
    traffic = run.text(DAY1[1])
    assert "destinationrule.networking.istio.io/reviews created" in traffic
    assert "virtualservice.networking.istio.io/reviews created" in traffic
    # After the routes: all thirty requests from reviews v1, and jason's from v2.
    assert re.search(r"^v1 +30 +100\.0%$", traffic, re.M), traffic
    assert re.search(r"^v2 +30 +100\.0%$", traffic, re.M), traffic
    mtls = run.text(DAY1[2])
    assert "peerauthentication.security.istio.io/default created" in mtls
    assert re.search(r"^000 +2 +100\.0%$", mtls, re.M), mtls  # plaintext refused once STRICT
    assert "gateway.gateway.networking.k8s.io/bookinfo-gateway created" in run.text(DAY1[3])


def test_notebooks_are_committed_without_outputs() -> None:
    for path in sorted(COURSE.glob("day*/*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path


def test_notebooks_wait_by_polling_not_sleeping() -> None:
    """Does every wait for the mesh say what it waits for (`probe(..., until=...)`), rather
    than sleep for a time that is too long on a fast machine and too short on a slow one?"""
    for path in sorted(COURSE.glob("day*/*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            assert "sleep(" not in cell.source, (path, cell.source)


def heading_ids(notebook: nbformat.NotebookNode) -> set[str]:
    """The ids JupyterLab gives markdown headings (the text, spaces replaced by '-')."""
    return {line.lstrip("#").strip().replace(" ", "-")
            for cell in notebook.cells if cell.cell_type == "markdown"
            for line in cell.source.splitlines() if line.startswith("#")}


def test_check_anchors_point_at_headings_of_their_day() -> None:
    from labs.checks.registry import find, lab_ids

    for lab in lab_ids():
        day = lab.split(".")[0]
        ids = set().union(*(heading_ids(nbformat.read(path, as_version=4))
                            for path in (COURSE / day).glob("*.ipynb")))
        for item in find(lab):
            assert not item.anchor or item.anchor in ids, (item.id, item.anchor)
