"""The `meshlab grade` subcommand, which joins `meshlab` through the entry point group
`meshlab.commands` (pyproject.toml names `register`)."""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

GRADE_HELP = ("autograde an assignment with nbgrader, each student against its own cluster "
              "(replay: a fresh embedded cluster; live: the student's running one), in "
              "parallel; then export grades and generate feedback")


def register(add_command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add `meshlab grade`, given labs.cli's `add_command` bound to its subcommands."""
    configure_grade(add_command("grade", cmd_grade, GRADE_HELP, one_cluster=False))


def configure_grade(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("assignment", help="assignment id, e.g. day1")
    parser.add_argument("--mode", choices=("replay", "live"), default="replay",
                        help="replay (default): re-execute each submission against a fresh "
                        "embedded cluster; live: check each student's own cluster")
    parser.add_argument("--students", help="comma-separated student ids (default: every "
                        "student with a submission)")
    parser.add_argument("--parallel", type=int, default=1, metavar="N",
                        help="students graded at the same time (default 1)")
    parser.add_argument("--roster", help="live mode: the students' clusters, the same YAML "
                        "or CSV roster as `meshlab board` (default: the embedded cluster named "
                        "after each student, under --state-dir)")
    parser.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                        help="per-student limit for the whole autograde (default 600)")
    parser.add_argument("--export", metavar="CSV", help="also export all grades to this CSV")
    parser.add_argument("--feedback", action="store_true",
                        help="also generate feedback HTML (course dir feedback/)")
    parser.add_argument("--course-dir", help="nbgrader course working directory "
                        "(default: $MESHLAB_COURSE_DIR or grader/course)")
    parser.add_argument("--unsafe-no-sandbox", action="store_true",
                        help="run submissions unsandboxed, as this user (they can then change "
                        "any grade); needed to grade in parallel where no sandbox can be made")


def cmd_grade(args: argparse.Namespace) -> int:
    from grader.course import course_dir
    from grader.driver import Plan, grade, mode_line, submitted_students, table
    from grader.gradebook import GradebookError
    from labs.cluster import ClusterAddress
    from labs.cluster.roster import RosterError, load_roster

    course = Path(args.course_dir).expanduser().resolve() if args.course_dir else course_dir()
    if args.parallel < 1:
        return _usage("--parallel must be 1 or more")
    students = ([s.strip() for s in args.students.split(",") if s.strip()] if args.students
                else submitted_students(course, args.assignment))
    if not students:
        return _usage(f"no submissions of {args.assignment!r} in {course / 'submitted'}: "
                      f"collect them first (nbgrader collect, or copy to "
                      f"submitted/STUDENT/{args.assignment}/)")
    missing = [s for s in students
               if not (course / "submitted" / s / args.assignment).is_dir()]
    if missing:
        return _usage(f"no submission of {args.assignment!r} for: {', '.join(missing)}")
    try:
        roster = {s.name: s.address for s in load_roster(args.roster)} \
            if args.roster else {}
    except RosterError as exc:
        return _usage(str(exc))
    if args.mode == "live" and not args.roster:
        roster = {s: ClusterAddress(cluster=s, state_dir=args.state_dir) for s in students}
    if args.mode == "live" and (unknown := [s for s in students if s not in roster]):
        return _usage(f"the roster has no cluster for: {', '.join(unknown)}")
    sandboxed = not args.unsafe_no_sandbox and _sandbox_ready(args.parallel)
    if sandboxed is None:
        return 2
    plan = Plan(args.assignment, course, students, args.mode, args.parallel, roster,
                args.timeout, sandboxed)
    try:
        graded = grade(plan)
    except GradebookError as exc:
        return _usage(str(exc))
    print(f"grading: {mode_line(sandboxed, args.mode)}")
    print(table(course, args.assignment, graded))
    ok = all(g.ok for g in graded)
    if args.export:
        csv_file = Path(args.export).resolve()
        ok &= _follow_up(course, "export", f"--to={csv_file}")
        if csv_file.exists():
            mark_mode(csv_file, args.assignment, students, mode_line(sandboxed, args.mode))
    if args.feedback:
        ok &= _follow_up(course, "generate_feedback", args.assignment, "--force")
    return 0 if ok else 1


def _sandbox_ready(parallel: int) -> bool | None:
    """True when sandboxes (each with a network namespace of its own) can be made; else
    say so, and None (refuse) when grading in parallel (one student's code could then change
    another's grade while it runs)."""
    from grader.sandbox import cgroup, jail, netns

    why = jail.problem() or netns.problem()
    if why is None:
        if no_cgroup := cgroup.problem():
            print(f"meshlab grade: note: {no_cgroup}; memory and tasks are limited per process "
                  "and per uid only, not per student", file=sys.stderr)
        return True
    print(f"meshlab grade: NO SANDBOX: {why}; student code would run as this user and could "
          f"change any grade", file=sys.stderr)
    if parallel > 1:
        print("meshlab grade: refusing to grade in parallel without a sandbox; use "
              "--parallel 1, or --unsafe-no-sandbox for trusted submissions", file=sys.stderr)
        return None
    return False


def mark_mode(csv_file: Path, assignment: str, students: list[str], mode: str) -> None:
    """Add a `sandbox` column to nbgrader's CSV export: how this run graded each of its rows
    (empty for rows it did not grade)."""
    with csv_file.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return
    for row in rows:
        graded = row.get("assignment") == assignment and row.get("student_id") in students
        row["sandbox"] = mode if graded else row.get("sandbox", "")
    with csv_file.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _follow_up(course: Path, *args: str) -> bool:
    from grader.nbgrader_run import nbgrader

    with tempfile.NamedTemporaryFile(suffix=".log") as log:
        run = nbgrader(*args, course=course, log=Path(log.name))
        if not run.ok:
            print(f"meshlab grade: nbgrader {args[0]} failed:\n{run.tail()}", file=sys.stderr)
        return run.ok


def _usage(message: str) -> int:
    print(f"meshlab grade: {message}", file=sys.stderr)
    return 2
