"""The learner's workspace: student copies without answers or hidden tests, updates that never
overwrite a learner's edits, the course home, solutions on demand, learner-mode JupyterLab
settings."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest
import yaml

from labs.catalog import CatalogError, load_catalog, source_root
from labs.workspace.home import HOME_NOTEBOOK
from labs.workspace.jupyter import learner_config_dir
from labs.workspace.solutions import SolutionUnavailable, revealed, solution
from labs.workspace.sync import NEW_SUFFIX, Workspace


def _course_copy(tmp_path: Path, labs: int = 2) -> Path:
    """A course source with the first `labs` labs of day 1 (a temporary, editable course)."""
    source = tmp_path / "source"
    real = load_catalog()
    chosen = real.days[0].labs[:labs]
    for lab in chosen:
        (source / lab.notebook).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(real.source / lab.notebook, source / lab.notebook)
    data = yaml.safe_load((real.source / "course.yaml").read_text())
    data["days"] = [dict(data["days"][0], labs=data["days"][0]["labs"][:labs])]
    (source / "course.yaml").write_text(yaml.safe_dump(data))
    return source


def _code(path: Path) -> list[str]:
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def _edit_markdown(path: Path, text: str) -> None:
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.insert(1, nbformat.v4.new_markdown_cell(text))
    path.write_text(nbformat.writes(notebook))


def test_a_new_workspace_holds_student_versions_of_every_lab(tmp_path: Path) -> None:
    """Does every lab appear without solutions or hidden tests, each answer cell raising
    NotImplementedError and naming its solution, locked cells checksummed as nbgrader does?"""
    catalog = load_catalog()
    report = Workspace(tmp_path).sync(catalog)
    assert sorted(report.created) == sorted([lab.notebook for lab in catalog.labs]
                                            + [HOME_NOTEBOOK])
    for lab in catalog.labs:
        path = tmp_path / lab.notebook
        text = path.read_text()
        assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text, path
        assert "grader.verify" not in text, path
        notebook = nbformat.read(path, as_version=4)
        answers = [c for c in notebook.cells
                   if c.metadata.get("nbgrader", {}).get("solution")]
        assert answers, path
        for cell in answers:
            assert cell.source.endswith("raise NotImplementedError()"), (path, cell.source)
            exercise = cell.metadata["nbgrader"]["grade_id"].removeprefix("answer-")
            assert f'labs.solution("{lab.id}.{exercise}")' in cell.source
        locked = [c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("locked")]
        assert all("checksum" in c.metadata["nbgrader"] for c in locked
                   if c.metadata["nbgrader"].get("grade")), path
    # the instructor sources are untouched
    assert "BEGIN SOLUTION" in (catalog.source / catalog.labs[0].notebook).read_text()


def test_the_home_lists_every_lab_with_a_link_and_the_progress_cell(tmp_path: Path) -> None:
    catalog = load_catalog()
    Workspace(tmp_path).sync(catalog)
    home = nbformat.read(tmp_path / HOME_NOTEBOOK, as_version=4)
    text = "\n".join(c.source for c in home.cells)
    for lab in catalog.labs:
        assert f"]({lab.notebook})" in text and lab.goal in text and f"{lab.minutes} min" in text
    assert "labs.widgets.progress_board()" in text
    for day in catalog.days:
        assert f"## {day.title}" in text


def test_an_update_keeps_edited_labs_and_adds_new_ones(tmp_path: Path) -> None:
    """When the course changes: is an untouched lab replaced, an edited one kept with the new
    version beside it (said once), a new lab added — and are running and saving (outputs) not
    counted as edits?"""
    source = _course_copy(tmp_path, labs=2)
    root = tmp_path / "ws"
    workspace = Workspace(root)
    workspace.sync(load_catalog(source))
    first, second = load_catalog(source).labs
    # the learner answers an exercise in lab 1, and only runs lab 2 (outputs, counts)
    edited = nbformat.read(root / first.notebook, as_version=4)
    answer = next(c for c in edited.cells if c.metadata.get("nbgrader", {}).get("solution"))
    answer.source = "print('my answer')"
    (root / first.notebook).write_text(nbformat.writes(edited))
    ran = nbformat.read(root / second.notebook, as_version=4)
    ran.cells[2].outputs = [nbformat.v4.new_output("stream", text="ran\n")]
    ran.cells[2].execution_count = 3
    (root / second.notebook).write_text(nbformat.writes(ran))
    # the course changes both labs and gains a third
    for lab in (first, second):
        _edit_markdown(source / lab.notebook, f"**Course update** for {lab.id}")
    real = load_catalog()
    third = real.days[0].labs[2]
    shutil.copy(real.source / third.notebook, source / third.notebook)
    data = yaml.safe_load((source / "course.yaml").read_text())
    data["days"][0]["labs"].append(
        next(e for e in yaml.safe_load((real.source / "course.yaml").read_text())["days"][0]
             ["labs"] if e["id"] == third.id))
    (source / "course.yaml").write_text(yaml.safe_dump(data))

    report = workspace.sync(load_catalog(source))
    assert report.created == [third.notebook]
    assert report.updated == [second.notebook, HOME_NOTEBOOK]  # the home lists the new lab
    beside = first.notebook.removesuffix(".ipynb") + NEW_SUFFIX
    assert report.offered == [(first.notebook, beside)]
    assert any("yours is kept" in line and beside in line for line in report.messages())
    assert "print('my answer')" in _code(root / first.notebook)
    assert "Course update" in (root / beside).read_text()
    assert "Course update" in (root / second.notebook).read_text()
    assert workspace.sync(load_catalog(source)).messages() == []  # said once


def test_a_lost_manifest_never_overwrites_the_learner(tmp_path: Path) -> None:
    source = _course_copy(tmp_path, labs=1)
    root = tmp_path / "ws"
    Workspace(root).sync(load_catalog(source))
    lab = load_catalog(source).labs[0]
    (root / lab.notebook).write_text("{ not a notebook")
    (root / ".meshlab" / "workspace.json").write_text("garbage")
    _edit_markdown(source / lab.notebook, "changed")
    report = Workspace(root).sync(load_catalog(source))
    assert (root / lab.notebook).read_text() == "{ not a notebook"
    assert [kept for kept, _ in report.offered] == [lab.notebook]


def test_solutions_on_demand_are_recorded_and_can_be_switched_off(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shown = solution("day1.traffic.routes", workspace=tmp_path)
    assert "kind: VirtualService" in shown.code and "exact: jason" in shown.code
    assert "BEGIN SOLUTION" not in shown.code
    assert "```python" in shown._repr_markdown_()
    assert list(revealed(tmp_path)) == ["day1.traffic.routes"]
    with pytest.raises(SolutionUnavailable, match=re.escape(
            "its exercises are day1.traffic.subsets, day1.traffic.routes")):
        solution("day1.traffic.route", workspace=tmp_path)
    with pytest.raises(SolutionUnavailable, match=re.escape("no lab 'day7.x'")):
        solution("day7.x.y", workspace=tmp_path)
    monkeypatch.setenv("MESHLAB_SOLUTIONS", "off")
    with pytest.raises(SolutionUnavailable, match="switched off"):
        solution("day1.traffic.subsets", workspace=tmp_path)
    monkeypatch.delenv("MESHLAB_SOLUTIONS")
    source = _course_copy(tmp_path, labs=2)
    data = yaml.safe_load((source / "course.yaml").read_text())
    (source / "course.yaml").write_text(yaml.safe_dump({**data, "solutions": False}))
    with pytest.raises(SolutionUnavailable, match="switched off"):
        solution("day1.traffic.subsets", catalog=load_catalog(source), workspace=tmp_path)
    assert list(revealed(tmp_path)) == ["day1.traffic.routes"]


def test_a_broken_catalog_says_what_to_fix(tmp_path: Path) -> None:
    (tmp_path / "course.yaml").write_text("days: [{id: day1, labs: [{id: day1.x}]}]")
    with pytest.raises(CatalogError, match="needs id, notebook, goal and minutes"):
        load_catalog(tmp_path)
    (tmp_path / "course.yaml").write_text("days: {")
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog(tmp_path)
    assert load_catalog(source_root()).labs


def test_learner_mode_disables_nbgrader_s_instructor_tools(tmp_path: Path) -> None:
    config = learner_config_dir(tmp_path)
    page = json.loads((config / "labconfig" / "page_config.json").read_text())
    disabled = {name for name, off in page["disabledExtensions"].items() if off}
    assert {"@jupyter/nbgrader:formgrader", "@jupyter/nbgrader:create-assignment",
            "@jupyter/nbgrader:menu"} <= disabled
    assert "@jupyter/nbgrader:assignment-list" not in disabled
    server = json.loads((config / "jupyter_server_config.d" / "meshlab-learner.json")
                        .read_text())
    assert server["ServerApp"]["jpserver_extensions"][
        "nbgrader.server_extensions.formgrader"] is False
