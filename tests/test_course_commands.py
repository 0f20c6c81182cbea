"""`meshlab solve`, `meshlab reset` and `meshlab progress` against a fresh embedded cluster, as a
learner who skipped a lab would use them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
import yaml

from labs.cluster import EmbeddedCluster


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment of a learner with a fresh cluster of their own and a workspace."""
    root = tmp_path_factory.mktemp("course-commands")
    cluster = EmbeddedCluster("learner", root / "state")
    cluster.up()
    env = {key: value for key, value in os.environ.items()
           if key not in ("MESHLAB_CONTEXT", "KUBECONFIG", "MESHLAB_COURSE_SOURCE")}
    env.update(MESHLAB_CLUSTER=cluster.name, MESHLAB_STATE_DIR=str(cluster.paths.root),
               MESHLAB_WORKSPACE=str(root / "workspace"))
    try:
        yield env
    finally:
        cluster.down()


def meshlab(env: dict[str, str], *args: str, timeout: float = 600
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "labs.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def progress_of(env: dict[str, str]) -> dict[str, dict[str, object]]:
    shown = meshlab(env, "progress", "-o", "json")
    assert shown.returncode == 0, shown.stderr
    return {row["lab"]: row for row in json.loads(shown.stdout)["labs"]}


def test_solve_catches_up_and_reset_starts_over(fresh: dict[str, str]) -> None:
    """On a fresh cluster: is every lab at 0, does `solve day1.traffic` make its checks pass
    (with the executed notebook kept), and does `reset day1.traffic` undo just that lab?"""
    before = progress_of(fresh)
    assert before["day1.traffic"]["passed"] == 0 and before["day1.install"]["passed"] == 0
    assert all(row["points"] == 0 for row in before.values())

    solved = meshlab(fresh, "solve", "day1.traffic")
    assert solved.returncode == 0, solved.stderr[-3000:]
    executed = Path(fresh["MESHLAB_WORKSPACE"]) / "solved" / "day1" / "02-traffic.ipynb"
    assert f"done: {executed}" in solved.stdout
    notebook = nbformat.read(executed, as_version=4)
    injected = next(c for c in notebook.cells if "injected-parameters" in c.metadata.get(
        "tags", []))
    assert fresh["MESHLAB_CLUSTER"] in injected.source
    checked = meshlab(fresh, "check", "day1.traffic")
    assert checked.returncode == 0, checked.stdout
    after = progress_of(fresh)
    assert (after["day1.traffic"]["passed"], after["day1.traffic"]["total"]) == (3, 3)
    assert after["day1.install"]["done"] is True  # its catch-up deployed Bookinfo

    reset = meshlab(fresh, "reset", "day1.traffic")
    assert reset.returncode == 0, reset.stderr
    assert 'virtualservice.networking.istio.io "reviews" deleted' in reset.stdout
    assert progress_of(fresh)["day1.traffic"]["passed"] == 0
    assert progress_of(fresh)["day1.install"]["done"] is True  # only that lab's objects


def test_a_failing_catch_up_names_the_cell(fresh: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "course"
    (source / "day1").mkdir(parents=True)
    cells = [nbformat.v4.new_markdown_cell("# Day 1 · Lab 1 — Broken"),
             nbformat.v4.new_code_cell("cluster_selection = {}"),
             nbformat.v4.new_code_cell("import labs\ncluster = labs.connect(cluster_selection)"),
             nbformat.v4.new_code_cell("raise RuntimeError('the lab is broken here')")]
    cells[1].metadata["tags"] = ["parameters"]
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    (source / "day1" / "01-broken.ipynb").write_text(nbformat.writes(notebook))
    (source / "course.yaml").write_text(yaml.safe_dump({"days": [{"id": "day1", "labs": [
        {"id": "day1.broken", "notebook": "day1/01-broken.ipynb", "goal": "g", "minutes": 1}]}]}))
    failed = meshlab({**fresh, "MESHLAB_COURSE_SOURCE": str(source)}, "solve", "day1.broken")
    assert failed.returncode == 1
    assert "lab day1.broken: cell" in failed.stderr
    assert "(`raise RuntimeError('the lab is broken here')`) failed: RuntimeError" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_course_commands_refuse_unknown_labs(fresh: dict[str, str]) -> None:
    for args in (("solve", "day9.nothing"), ("reset", "day9.nothing")):
        refused = meshlab(fresh, *args)
        assert refused.returncode == 1
        assert "there is no lab 'day9.nothing'; the labs are: day1.install" in refused.stderr
