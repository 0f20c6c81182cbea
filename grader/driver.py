"""`meshlab grade`: autograde every submission of an assignment with the real nbgrader, in
parallel, each student against its own cluster, then merge, export and generate feedback.

replay: each submission re-executed against a fresh embedded cluster of its own (reproducible);
live: each student's own running cluster (roster), as left after a workshop.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from grader.gradebook import merge, private_copy, record_zero, require_assignment, scores
from grader.nbgrader_run import nbgrader
from grader.sandbox.relay import LoopbackRelay, cluster_ports
from grader.sandbox.student import SANDBOX_ENV, StudentSandbox
from grader.targets import TARGETS_ENV, write_targets
from grader.workspace import Workspace, cluster_pid
from labs.cluster import ClusterAddress, ClusterError

DEFAULT_STUDENT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Plan:
    assignment: str
    course: Path
    students: list[str]
    mode: str = "replay"  # or "live"
    parallel: int = 1
    roster: dict[str, ClusterAddress] = field(default_factory=dict)
    student_timeout: float = DEFAULT_STUDENT_TIMEOUT_S
    sandboxed: bool = True  # each kernel (and replay daemon) in a sandbox of its own


@dataclass(frozen=True)
class Graded:
    student: str
    ok: bool
    seconds: float
    problem: str = ""
    cluster_lost: bool = False  # its cluster stopped during grading: graded again, alone


def submitted_students(course: Path, assignment: str) -> list[str]:
    """Every student with a submission of `assignment` in the course directory."""
    root = course / "submitted"
    return sorted(p.parent.name for p in root.glob(f"*/{assignment}") if p.is_dir())


def grade_one(plan: Plan, workspace: Workspace, student: str) -> Graded:
    """Autograde one student; anything unexpected fails that student only, never the run."""
    start = time.monotonic()
    try:
        return _grade_one(plan, workspace, student, start)
    except Exception as exc:
        record_zero(plan.course, plan.assignment, student)
        return Graded(student, False, time.monotonic() - start, f"{type(exc).__name__}: {exc}")


def _grade_one(plan: Plan, workspace: Workspace, student: str, start: float) -> Graded:
    """Autograde one student into a private course copy, against its cluster; merge."""
    private = workspace.private_course()
    private_copy(plan.course, private, plan.assignment, student)
    sandbox = workspace.sandbox() if plan.sandboxed else None
    cluster = None
    lost = False
    try:
        if plan.mode == "replay":
            if sandbox:
                cluster, target, sandbox = workspace.sandboxed_cluster(sandbox)
            else:
                cluster, target = workspace.fresh_cluster()
            pid = cluster_pid(cluster)
        else:
            target = plan.roster[student]
            if sandbox:
                sandbox, target = sandbox.with_live_cluster(target)
        targets = private / "targets.json"
        write_targets(targets, {student: target})
        env = {TARGETS_ENV: str(targets)}
        if sandbox:
            sandbox.save(private / "sandbox.json")
            env[SANDBOX_ENV] = str(private / "sandbox.json")
        with _relay(sandbox, plan.mode, target):
            run = nbgrader("autograde", plan.assignment, f"--student={student}", "--force",
                           course=private, log=private / "autograde.log", env=env,
                           timeout=plan.student_timeout,
                           netns=sandbox.netns if sandbox else None)
        if cluster is not None:
            lost = cluster_pid(cluster) != pid
    except ClusterError as exc:
        record_zero(plan.course, plan.assignment, student)
        return Graded(student, False, time.monotonic() - start, f"no cluster: {exc}")
    finally:
        if sandbox:
            workspace.discard_sandbox(sandbox)
        elif cluster is not None:
            workspace.discard_cluster(cluster)
    try:
        if not run.ok:
            record_zero(plan.course, plan.assignment, student)
            why = (f"timed out after {plan.student_timeout:g}s" if run.timed_out
                   else f"nbgrader autograde failed:\n{run.tail()}")
            return Graded(student, False, time.monotonic() - start, why, lost)
        merge(private, plan.course, plan.assignment, student)
        return Graded(student, True, time.monotonic() - start, cluster_lost=lost)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _relay(sandbox: StudentSandbox | None, mode: str, target: ClusterAddress
           ) -> AbstractContextManager[object]:
    """In live mode, the student's cluster's ports, relayed into the sandbox's namespace."""
    if sandbox is None or sandbox.netns is None or mode != "live":
        return nullcontext()
    return LoopbackRelay(sandbox.netns, cluster_ports(target))


class Progress:
    """One stderr line per finished student: done/total, elapsed, failures so far."""

    def __init__(self, total: int, out: Callable[[str], None]) -> None:
        self.total, self.done, self.failed = total, 0, 0
        self.start = time.monotonic()
        self.out = out

    def record(self, graded: Graded, again: bool = False) -> None:
        self.done += 1
        self.failed += not graded.ok
        status = "graded" if graded.ok else f"FAILED ({graded.problem.splitlines()[0]})"
        lost = ""
        if graded.cluster_lost:
            lost = ("; its cluster stopped again while graded alone: this grade stands"
                    if again else "; its cluster stopped during grading: grading it again, "
                    "alone, at the end")
        self.out(f"[{self.done}/{self.total}] {time.monotonic() - self.start:5.1f}s  "
                 f"{graded.student}: {status} in {graded.seconds:.1f}s{lost}  "
                 f"(failures so far: {self.failed})")


def grade(plan: Plan, log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)
          ) -> list[Graded]:
    """Grade every student of the plan; a student whose cluster stopped while it was graded
    (another submission may have stopped it) is graded once more, alone, at the end."""
    require_assignment(plan.course, plan.assignment)
    workspace = Workspace()
    progress = Progress(len(plan.students), log)
    results: dict[str, Graded] = {}
    try:
        with ThreadPoolExecutor(max_workers=max(1, plan.parallel)) as pool:
            futures = [pool.submit(grade_one, plan, workspace, s) for s in plan.students]
            for future in as_completed(futures):
                graded = future.result()
                results[graded.student] = graded
                progress.record(graded)
        for student in [s for s, g in results.items() if g.cluster_lost]:
            progress.total += 1
            results[student] = grade_one(plan, workspace, student)
            progress.record(results[student], again=True)
    finally:
        workspace.cleanup()
    return [results[s] for s in plan.students]


def mode_line(sandboxed: bool, mode: str) -> str:
    """How the submissions ran: first line of the table, and the CSV's `sandbox` column."""
    if not sandboxed:
        return "NOT sandboxed (student code ran as the grader's user)"
    if mode == "replay":
        return ("sandboxed (bubblewrap; per student, a network namespace and uids of its own for "
                "the kernel, the cluster and its execs)")
    return ("sandboxed (bubblewrap; per student, uids and a network namespace of its own, "
            "reaching its own cluster's ports only)")


def table(course: Path, assignment: str, graded: list[Graded]) -> str:
    """Scores per student and notebook, read back from the gradebook."""
    found = {s.student: s for s in scores(course, assignment, [g.student for g in graded])}
    notebooks = sorted({n for s in found.values() for n in s.notebooks})
    width = max([7, *(len(g.student) for g in graded)])
    header = f"{'student':{width}}  " + "  ".join(f"{n:>10}" for n in notebooks) + \
        f"  {'total':>10}"
    rows = [header, "-" * len(header)]
    for g in graded:
        score = found.get(g.student)
        cells = [_fraction(*score.notebooks[n]) if score and n in score.notebooks else "-"
                 for n in notebooks]
        total = _fraction(*score.total) if score else "-"
        note = "" if g.ok else f"  ({g.problem.splitlines()[0]})"
        rows.append(f"{g.student:{width}}  " + "  ".join(f"{c:>10}" for c in cells) +
                    f"  {total:>10}{note}")
    return "\n".join(rows)


def _fraction(score: float, possible: float) -> str:
    return f"{score:g}/{possible:g}"
