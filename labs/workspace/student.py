"""The student version of an instructor notebook, made by nbgrader's own release preprocessors
(the `generate_assignment` pipeline minus the gradebook): solutions replaced by a stub that
raises NotImplementedError, hidden tests and marking schemes removed, outputs cleared, checksums
computed, so the copy is exactly what nbgrader would hand out and can be validated or submitted.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbconvert.exporters.exporter import ResourcesDict
from nbgrader.preprocessors import (
    CheckCellMetadata,
    ClearHiddenTests,
    ClearMarkScheme,
    ClearOutput,
    ClearSolutions,
    ComputeChecksums,
    LockCells,
)

EXERCISE_PREFIX = "answer-"  # a solution cell's nbgrader grade_id: answer-<exercise>
STUB = '# YOUR CODE HERE (stuck? labs.solution("{exercise_id}") shows one answer)\n' \
       "raise NotImplementedError()"

# nbgrader's GenerateAssignment.preprocessors in its order, without IncludeHeaderFooter (no
# header), InstantiateTests (no autotest templates here) and SaveCells (writes the gradebook).
_RELEASE = (LockCells, ClearSolutions, ClearOutput, CheckCellMetadata, ComputeChecksums,
            ClearHiddenTests, ClearMarkScheme, ComputeChecksums, CheckCellMetadata)


def exercise_id(lab_id: str, cell: nbformat.NotebookNode) -> str | None:
    """`day1.traffic.routes` for the solution cell `answer-routes` of lab day1.traffic."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    grade_id = str(meta.get("grade_id", ""))
    if meta.get("solution") and grade_id.startswith(EXERCISE_PREFIX):
        return f"{lab_id}.{grade_id.removeprefix(EXERCISE_PREFIX)}"
    return None


def student_version(source: Path, lab_id: str) -> nbformat.NotebookNode:
    """The learner's copy of the instructor notebook `source` (which is not changed)."""
    notebook = nbformat.read(source, as_version=4)
    stubs = {i: exercise_id(lab_id, cell) for i, cell in enumerate(notebook.cells)}
    resources = ResourcesDict(nbgrader={"notebook": source.stem, "assignment": lab_id})
    for step in _RELEASE:
        processor = step(enabled=True)
        if isinstance(processor, ClearSolutions):
            processor.enforce_metadata = True
        notebook, resources = processor.preprocess(notebook, resources)
        if isinstance(processor, ClearSolutions):
            for index, exercise in stubs.items():
                if exercise:  # the same stub, naming the exercise's solution
                    notebook.cells[index].source = STUB.format(exercise_id=exercise)
    return notebook
