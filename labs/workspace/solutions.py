"""Solutions on demand, for self-paced learners: `labs.solution("day1.traffic.routes")` shows
the course's answer to one exercise, read from the instructor notebook, and notes in the
workspace that it was revealed (the progress table shows it). Grading is not affected: it
re-runs the submission against a fresh cluster.

An instructor switches solutions off for a workshop or exam with `solutions: false` in
course.yaml or `MESHLAB_SOLUTIONS=off` in the learners' environment (the grader sets it too).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path

import nbformat

from labs.catalog import Catalog, CatalogError, load_catalog
from labs.course import LabError
from labs.workspace.student import exercise_id
from labs.workspace.sync import STATE_DIR, workspace_root, write_atomically

SOLUTIONS_ENV = "MESHLAB_SOLUTIONS"
REVEALED = "revealed.json"
_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")


class SolutionUnavailable(LabError, LookupError):
    """No solution can be shown; the message says why and what to do instead."""


@dataclass(frozen=True)
class Solution:
    """One exercise's answer; shows itself as a code block in Jupyter."""

    exercise: str
    code: str

    def __str__(self) -> str:
        return self.code

    def __repr__(self) -> str:
        return f"# solution of {self.exercise}\n{self.code}"

    def _repr_markdown_(self) -> str:
        return (f"**Solution of `{self.exercise}`** (the course's answer; yours may differ and "
                f"still pass the checks):\n\n```python\n{self.code}\n```")

    def _repr_html_(self) -> str:
        return (f"<p><b>Solution of <code>{escape(self.exercise)}</code></b> (the course's "
                f"answer; yours may differ and still pass the checks):</p>"
                f"<pre>{escape(self.code)}</pre>")


def solutions_enabled(catalog: Catalog) -> bool:
    return catalog.solutions and os.environ.get(SOLUTIONS_ENV, "on").lower() not in (
        "off", "0", "false", "no")


def exercises(catalog: Catalog, lab_id: str) -> dict[str, str]:
    """Every exercise of a lab → its solution code (the markers removed)."""
    lab = catalog.lab(lab_id)
    notebook = nbformat.read(catalog.source / lab.notebook, as_version=4)
    found = {}
    for cell in notebook.cells:
        if exercise := exercise_id(lab.id, cell):
            lines = [line for line in cell.source.splitlines()
                     if line.strip() not in _MARKERS]
            found[exercise] = "\n".join(lines).strip("\n")
    return found


def solution(exercise: str, *, catalog: Catalog | None = None,
             workspace: Path | None = None) -> Solution:
    """The course's answer to `exercise` ("LAB.EXERCISE", as named in the your-turn cell)."""
    catalog = catalog or load_catalog()
    if not solutions_enabled(catalog):
        raise SolutionUnavailable("solutions are switched off for this course (by your "
                                  "instructor): use the hints of Check my work, or ask")
    lab_id = exercise.rpartition(".")[0]
    try:
        known = exercises(catalog, lab_id)
    except CatalogError as exc:
        raise SolutionUnavailable(f"{exercise!r} is not an exercise of this course: {exc}") \
            from None
    if exercise not in known:
        raise SolutionUnavailable(f"lab {lab_id} has no exercise {exercise!r}; its exercises "
                                  f"are {', '.join(known) or '(none)'}")
    record_revealed(exercise, workspace_root(workspace))
    return Solution(exercise, known[exercise])


def _revealed_file(workspace: Path) -> Path:
    return workspace / STATE_DIR / REVEALED


def revealed(workspace: Path) -> dict[str, str]:
    """Exercise id → when its solution was first shown (UTC, ISO 8601)."""
    try:
        data = json.loads(_revealed_file(workspace).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def record_revealed(exercise: str, workspace: Path) -> None:
    seen = revealed(workspace)
    if exercise in seen:
        return
    seen[exercise] = datetime.now(UTC).isoformat(timespec="seconds")
    write_atomically(_revealed_file(workspace), json.dumps(seen, indent=1, sort_keys=True))
