"""The course notebooks run top to bottom — solutions, hidden tests (`grader.verify`, which
checks the cluster in a fresh process) and "Check my work" — on a fresh embedded cluster."""

from __future__ import annotations

from pathlib import Path

import nbformat
from notebook_support import COURSE, outputs_text, run_notebook

from labs.cluster import EmbeddedCluster


def test_day1_runs_in_course_order_on_a_fresh_cluster(notebook_cluster: EmbeddedCluster,
                                                      tmp_path: Path) -> None:
    install = run_notebook(COURSE / "day1" / "01-install.ipynb", tmp_path)
    text = outputs_text(install)
    assert "<title>Simple Bookstore App</title>" in text
    assert "istio-proxy" in text and "docker.io/istio/proxyv2" in text

    traffic = run_notebook(COURSE / "day1" / "02-traffic.ipynb", tmp_path)
    text = outputs_text(traffic)
    assert "destinationrule.networking.istio.io/reviews created" in text
    assert "virtualservice.networking.istio.io/reviews created" in text

    mtls = run_notebook(COURSE / "day1" / "03-mtls.ipynb", tmp_path)
    assert "peerauthentication.security.istio.io/default created" in outputs_text(mtls)


def test_a_later_lab_catches_up_on_a_fresh_cluster(notebook_cluster: EmbeddedCluster,
                                                   tmp_path: Path) -> None:
    """nbgrader replays each notebook alone on a new cluster: lab 3 deploys what lab 1 left."""
    mtls = run_notebook(COURSE / "day1" / "03-mtls.ipynb", tmp_path)
    assert "peerauthentication.security.istio.io/default created" in outputs_text(mtls)


def test_notebooks_are_committed_without_outputs() -> None:
    for path in sorted(COURSE.glob("day*/*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path


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
