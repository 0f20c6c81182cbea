"""Where nbgrader works: the course working directory it writes to (release, submitted,
autograded, feedback, gradebook), movable by `$MESHLAB_COURSE_DIR` so tests and instructors can
grade outside the repository. The assignment sources are the catalog's day folders
(`labs.catalog.source_root`, movable by `$MESHLAB_COURSE_SOURCE`)."""

from __future__ import annotations

import os
from pathlib import Path

GRADER_DIR = Path(__file__).resolve().parent
REPO_ROOT = GRADER_DIR.parent
COURSE_DIR_ENV = "MESHLAB_COURSE_DIR"
COURSE_ID = "meshlab"


def course_dir() -> Path:
    """nbgrader's working directory for this course (default: `grader/course/`, gitignored)."""
    return Path(os.environ.get(COURSE_DIR_ENV) or GRADER_DIR / "course").expanduser().resolve()


def gradebook_path(root: Path | None = None) -> Path:
    return (root or course_dir()) / "gradebook.db"


def gradebook_url(root: Path | None = None) -> str:
    return f"sqlite:///{gradebook_path(root)}"
