"""Where the course lives: the assignment sources (`day1/`, `day2/` at the repository root) and
the course working directory nbgrader writes to (release, submitted, autograded, feedback,
gradebook). Both can be moved by environment variables, so tests and instructors can grade a
course outside the repository without editing the config."""

from __future__ import annotations

import os
from pathlib import Path

GRADER_DIR = Path(__file__).resolve().parent
REPO_ROOT = GRADER_DIR.parent
SOURCE_ENV = "MESHLAB_COURSE_SOURCE"
COURSE_DIR_ENV = "MESHLAB_COURSE_DIR"
COURSE_ID = "meshlab"


def source_root() -> Path:
    """The directory holding one folder per assignment (default: the repository root)."""
    return Path(os.environ.get(SOURCE_ENV) or REPO_ROOT).expanduser().resolve()


def course_dir() -> Path:
    """nbgrader's working directory for this course (default: `grader/course/`, gitignored)."""
    return Path(os.environ.get(COURSE_DIR_ENV) or GRADER_DIR / "course").expanduser().resolve()


def gradebook_path(root: Path | None = None) -> Path:
    return (root or course_dir()) / "gradebook.db"


def gradebook_url(root: Path | None = None) -> str:
    return f"sqlite:///{gradebook_path(root)}"
