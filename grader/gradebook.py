"""One gradebook, many parallel autograders.

nbgrader's SQLite gradebook is not safe for concurrent writers, and nbgrader has no parallel
autograde. So each student is autograded into a private course directory holding a copy of
the gradebook, and the results are merged into the one gradebook afterwards, one student at a
time, under a lock (a thread lock for this process, an flock for other `meshlab grade` runs).
"""

from __future__ import annotations

import fcntl
import shutil
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from nbgrader.api import Gradebook, MissingEntry
from sqlalchemy.exc import SAWarning

from grader.course import gradebook_path, gradebook_url

_THREAD_LOCK = threading.Lock()


class GradebookError(RuntimeError):
    """The gradebook lacks what grading needs; the message says which command fixes it."""


@contextmanager
def locked(course: Path) -> Iterator[None]:
    """Exclusive use of `course`'s gradebook across threads and processes."""
    with _THREAD_LOCK, open(course / ".gradebook.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def require_assignment(course: Path, assignment: str) -> list[str]:
    """The assignment's notebook names; a clear error when it was never generated."""
    if not gradebook_path(course).exists():
        raise GradebookError(f"no gradebook in {course}: generate the assignment first "
                             f"(cd grader && nbgrader generate_assignment {assignment} --force)")
    with Gradebook(gradebook_url(course)) as gb:
        try:
            return [nb.name for nb in gb.find_assignment(assignment).notebooks]
        except MissingEntry:
            raise GradebookError(
                f"assignment {assignment!r} is not in the gradebook {gradebook_path(course)}: "
                f"run `cd grader && nbgrader generate_assignment {assignment} --force`") from None


def private_copy(course: Path, private: Path, assignment: str, student: str) -> None:
    """A course directory for one student's autograde: the gradebook and the submission."""
    submitted = Path("submitted") / student / assignment
    private.mkdir(parents=True, exist_ok=True)
    with locked(course):
        shutil.copy2(gradebook_path(course), gradebook_path(private))
    shutil.copytree(course / submitted, private / submitted)


def merge(private: Path, course: Path, assignment: str, student: str) -> None:
    """Copy one student's autograde results (scores, comments, flags, the autograded files)
    from the private course directory into the course."""
    autograded = Path("autograded") / student / assignment
    with locked(course), warnings.catch_warnings(), Gradebook(gradebook_url(private)) as src, \
            Gradebook(gradebook_url(course)) as dst:
        # nbgrader's own add_submission trips SQLAlchemy autoflush warnings; they are harmless
        warnings.simplefilter("ignore", SAWarning)
        done = src.find_submission(assignment, student)
        dst.update_or_create_student(student)
        dst.update_or_create_submission(
            assignment, student, **({"timestamp": done.timestamp} if done.timestamp else {}))
        for notebook in done.notebooks:
            target = dst.find_submission_notebook(notebook.name, assignment, student)
            target.flagged = notebook.flagged
            target.late_submission_penalty = notebook.late_submission_penalty
            for grade in notebook.grades:
                into = dst.find_grade(grade.name, notebook.name, assignment, student)
                # bounded by the course's own points, whatever the private copy says
                into.auto_score = (None if grade.auto_score is None
                                   else max(0.0, min(grade.auto_score, into.max_score)))
                into.manual_score = grade.manual_score
                into.extra_credit = grade.extra_credit
                into.needs_manual_grade = grade.needs_manual_grade
            for comment in notebook.comments:
                into_comment = dst.find_comment(comment.name, notebook.name, assignment, student)
                into_comment.auto_comment = comment.auto_comment
                into_comment.manual_comment = comment.manual_comment
        dst.db.commit()
        shutil.rmtree(course / autograded, ignore_errors=True)
        shutil.copytree(private / autograded, course / autograded)


def record_zero(course: Path, assignment: str, student: str) -> None:
    """A submission whose autograde could not finish earns nothing automatically."""
    with locked(course), warnings.catch_warnings(), Gradebook(gradebook_url(course)) as gb:
        warnings.simplefilter("ignore", SAWarning)
        gb.update_or_create_student(student)
        submission = gb.update_or_create_submission(assignment, student)
        for notebook in submission.notebooks:
            for grade in notebook.grades:
                grade.auto_score = 0
                grade.needs_manual_grade = False
        gb.db.commit()


@dataclass(frozen=True)
class Score:
    student: str
    notebooks: dict[str, tuple[float, float]]  # notebook → (score, max)

    @property
    def total(self) -> tuple[float, float]:
        return (sum(s for s, _ in self.notebooks.values()),
                sum(m for _, m in self.notebooks.values()))


def scores(course: Path, assignment: str, students: list[str]) -> list[Score]:
    """Scores per student and notebook, read back from the gradebook."""
    found = []
    with Gradebook(gradebook_url(course)) as gb:
        for student in students:
            try:
                submission = gb.find_submission(assignment, student)
            except MissingEntry:
                continue
            found.append(Score(student, {nb.name: (nb.score, nb.max_score)
                                         for nb in submission.notebooks}))
    return found
