"""Benchmark of `meshlab grade` in replay mode.

Prints the wall time to grade STUDENTS synthetic submissions of the sample assignment
(tests/fixtures/grading: correct, partial and empty in turn), each against a fresh embedded
cluster: sequentially without a sandbox (the baseline), sequentially sandboxed (kernel and
daemon in bubblewrap; per student uids, a network namespace and a cgroup) and sandboxed with
`--parallel 2`; then the sandbox's cost per student-notebook as a ratio to the baseline, and
the parallel speed-up (target >= 1.6x on 2 cores, <= 15 s per student-notebook). Every run
grades the same submissions into the same course (nbgrader's --force), through the real
`meshlab grade`.

Run: `.venv/bin/python bench/grading.py [STUDENTS]` (default 20)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for `labs` and `grader`
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "grading"))

from build import ASSIGNMENT, SUBMISSIONS, generate, grading_env, hand_in

KINDS = ("correct", "partial", "empty")


def grade(course: Path, env: dict[str, str], parallel: int, *flags: str) -> float:
    """Seconds `meshlab grade` takes, failing loudly unless every student was graded."""
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "labs.cli", "grade", ASSIGNMENT,
                          "--course-dir", str(course), "--parallel", str(parallel), *flags],
                         env=env, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"meshlab grade --parallel {parallel} failed:\n{run.stderr[-2000:]}")
    return seconds


def main() -> None:
    students = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    with tempfile.TemporaryDirectory() as root:
        source, course = generate(Path(root))
        for i in range(students):
            hand_in(course, f"student-{i:02d}", SUBMISSIONS[KINDS[i % len(KINDS)]])
        env = grading_env(source)
        unsandboxed = grade(course, env, 1, "--unsafe-no-sandbox")
        sequential = grade(course, env, 1)
        parallel = grade(course, env, 2)
    print(f"replay, {students} students x 1 notebook, sample assignment (2 hidden-test cells)")
    print(f"sequential, no sandbox (baseline): {unsandboxed:6.1f} s  "
          f"({unsandboxed / students:.1f} s per student-notebook)")
    print(f"sequential, sandboxed:             {sequential:6.1f} s  "
          f"({sequential / students:.1f} s per student-notebook; target <= 15 s)")
    print(f"--parallel 2, sandboxed:           {parallel:6.1f} s  "
          f"({parallel / students:.1f} s per student-notebook)")
    print(f"sandbox cost, sandboxed / baseline: {sequential / unsandboxed:.2f}x")
    print(f"ratio sequential / parallel: {sequential / parallel:.2f}x (target >= 1.6x)")


if __name__ == "__main__":
    main()
