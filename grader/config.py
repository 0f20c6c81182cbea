"""The nbgrader settings of the course, applied by grader/nbgrader_config.py (kept in a module
so the config file stays one call and tests can check the same function)."""

from __future__ import annotations

import os
from typing import Any

from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
from nbgrader.converters import Autograde
from nbgrader.preprocessors import ClearHiddenTests, Execute, GetGrades

from grader.course import COURSE_ID, course_dir, gradebook_url
from grader.preprocessors import CapOutput, ExportStudentEnv, GuardedExecute, VerifyHiddenTests
from grader.sandbox.student import SANDBOX_ENV
from grader.targets import TARGETS_ENV
from labs.catalog import source_root  # the assignments are the catalog's day folders

CELL_TIMEOUT_ENV = "MESHLAB_CELL_TIMEOUT"
DEFAULT_CELL_TIMEOUT_S = 120


def autograde_preprocessors() -> list[type]:
    """nbgrader's default list with Execute swapped for GuardedExecute, ExportStudentEnv before
    it and VerifyHiddenTests + CapOutput right after it."""
    default = list(Autograde.class_traits()["autograde_preprocessors"].default())
    at = default.index(Execute)
    return [*default[:at], ExportStudentEnv, GuardedExecute, VerifyHiddenTests, CapOutput,
            *default[at + 1:]]


def configure(c: Any) -> None:
    """Fill the traitlets config `c` (what `get_config()` returns in nbgrader_config.py)."""
    c.CourseDirectory.course_id = COURSE_ID
    root = course_dir()
    root.mkdir(parents=True, exist_ok=True)  # nbgrader chdirs into it before creating anything
    c.CourseDirectory.root = str(root)
    # `{root}/{source}/./{assignment}`: an absolute source directory wins over the root, so the
    # assignments are `day1/`, `day2/` at the repository root and nothing is copied.
    c.CourseDirectory.source_directory = str(source_root())
    c.CourseDirectory.db_url = gradebook_url()
    c.Execute.timeout = int(os.environ.get(CELL_TIMEOUT_ENV) or DEFAULT_CELL_TIMEOUT_S)
    c.Autograde.autograde_preprocessors = autograde_preprocessors()
    # a deleted grade cell comes back from the gradebook (and is graded) instead of vanishing
    c.OverwriteCells.add_missing_cells = True
    c.ExportStudentEnv.targets_file = os.environ.get(TARGETS_ENV, "")
    c.GuardedExecute.sandbox_file = c.VerifyHiddenTests.sandbox_file = \
        os.environ.get(SANDBOX_ENV, "")
    # feedback: no hidden test source; the verdict outputs carry only shareable text
    c.GenerateFeedback.preprocessors = [ClearHiddenTests, GetGrades, CSSHTMLHeaderPreprocessor]
