"""Grading with the real nbgrader: a sample assignment in a temporary course directory,
generated with `nbgrader generate_assignment`, nineteen submissions (correct, partial, empty,
one per tampering case and one per attack on the grader or other students) graded together by
`meshlab grade` in replay mode with --parallel 2 — each kernel and cluster in a sandbox and a
network namespace of its own, against a fresh embedded cluster — then scores read back from the
gradebook, feedback HTML and the CSV export inspected."""

from __future__ import annotations

import csv
import os
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
import yaml
from conftest import HOST_WIDE_WAIT_S, poll
from nbgrader.api import Gradebook
from nbgrader.preprocessors import ClearHiddenTests, Execute, SaveAutoGrades
from traitlets.config.loader import PyFileConfigLoader

from grader.course import GRADER_DIR, gradebook_url
from grader.preprocessors import (
    CapOutput,
    ExportStudentEnv,
    GuardedExecute,
    VerifyHiddenTests,
    hidden_test_lab,
)
from grader.sandbox import cgroup, netns
from grader.sandbox.accounts import end_processes, new_uid
from grader.sandbox.cgroup import CgroupLimits, StudentCgroup
from grader.sandbox.jail import Jail
from grader.workspace import Workspace
from labs.checks import find
from labs.checks.registry import load_checks
from labs.cluster import ClusterRef

FIXTURES = Path(__file__).parent / "fixtures" / "grading"
sys.path.insert(0, str(FIXTURES))  # for `build` and `sample_checks`

from build import ASSIGNMENT, SUBMISSIONS, cell, generate, grading_env, hand_in  # noqa: E402
from sample_checks import SECRET_HINT, SECRET_REASON  # noqa: E402

SANDBOXED = ("sandboxed (bubblewrap; per student, a network namespace and uids of its own for "
             "the kernel, the cluster and its execs)")
# What no student may see: hidden test source, a hidden check's reason and unshared hint.
HIDDEN_TEXT = ("BEGIN HIDDEN TESTS", 'verify("sample.config', SECRET_HINT, SECRET_REASON)


# The grading run counts the host's network namespaces: no other file that makes them (the hub's
# live grading) runs meanwhile; its first test may wait up to HOST_WIDE_WAIT_S for that.
pytestmark = [pytest.mark.usefixtures("host_wide_lock"),
              pytest.mark.timeout(300 + HOST_WIDE_WAIT_S)]


@dataclass(frozen=True)
class Graded:
    source: Path
    course: Path
    csv: Path
    run: subprocess.CompletedProcess[str]
    namespaces_left: set[str]  # network namespaces the run made and left behind
    canary_reached: bool  # a connection reached the listener the run's host network held


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> Graded:
    """Generate the sample assignment, hand in every submission, grade them all once — while a
    listener of the host's (a canary the `cross-cluster` attacker must not reach) is open."""
    tmp = tmp_path_factory.mktemp("grading")
    source, course = generate(tmp)
    for student, spec in SUBMISSIONS.items():
        hand_in(course, student, spec)
    grades_csv = tmp / "grades.csv"
    before = network_namespaces()
    with socket.create_server(("127.0.0.1", 0)) as canary:
        run = subprocess.run(
            [sys.executable, "-m", "labs.cli", "grade", ASSIGNMENT, "--parallel", "2",
             "--course-dir", str(course), "--export", str(grades_csv), "--feedback",
             "--timeout", "240"],
            env={**grading_env(source), "INSTRUCTOR_TOKEN": "s3cret"}, capture_output=True,
            text=True, timeout=1200)
        canary_reached = has_pending_connection(canary)
    left = network_namespaces() - before
    for name in left:  # asserted below; never left on the machine
        netns.delete(str(netns.RUN_DIR / name))
    return Graded(source, course, grades_csv, run, left, canary_reached)


def has_pending_connection(server: socket.socket) -> bool:
    server.setblocking(False)
    try:
        server.accept()[0].close()
    except BlockingIOError:
        return False
    return True


def network_namespaces() -> set[str]:
    return set(os.listdir(netns.RUN_DIR)) if netns.RUN_DIR.exists() else set()


def test_config_loads_with_the_course_settings(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    """Does nbgrader_config.py load (nbgrader would silently ignore a broken one), with the
    assignment sources outside the course directory and our preprocessors in order?"""
    monkeypatch.setenv("MESHLAB_COURSE_DIR", str(tmp_path / "course"))
    monkeypatch.setenv("MESHLAB_COURSE_SOURCE", str(tmp_path / "src"))
    monkeypatch.setenv("MESHLAB_CELL_TIMEOUT", "7")
    config = PyFileConfigLoader("nbgrader_config.py", path=str(GRADER_DIR)).load_config()
    assert config.CourseDirectory.root == str(tmp_path / "course")
    assert config.CourseDirectory.source_directory == str(tmp_path / "src")
    assert config.CourseDirectory.db_url == f"sqlite:///{tmp_path / 'course' / 'gradebook.db'}"
    assert config.Execute.timeout == 7
    steps = config.Autograde.autograde_preprocessors
    assert Execute not in steps
    at = steps.index(GuardedExecute)
    assert steps[at - 1] is ExportStudentEnv
    assert steps[at + 1:at + 3] == [VerifyHiddenTests, CapOutput]
    assert steps.index(SaveAutoGrades) > at + 2
    assert config.OverwriteCells.add_missing_cells is True
    assert ClearHiddenTests in config.GenerateFeedback.preprocessors


def test_release_has_no_solutions_and_no_hidden_tests(graded: Graded) -> None:
    """Does the student version keep the tasks but lose every solution and hidden test?"""
    release = (graded.course / "release" / ASSIGNMENT / "lab.ipynb").read_text()
    assert "Create namespace `bookinfo`" in release
    for text in ("BEGIN SOLUTION", "istio-injection=enabled\\\"", "--from-literal",
                 *HIDDEN_TEXT):
        assert text not in release, text


def test_every_submission_gets_exactly_the_points_it_earned(graded: Graded) -> None:
    """Read back from the gradebook after a --parallel 2 run (private gradebooks merged):
    does each student, honest or tampering, have the score its cluster earned?"""
    assert graded.run.returncode == 0, graded.run.stderr[-3000:]
    print(graded.run.stderr)  # the progress lines: timings per student, shown with -s
    with Gradebook(gradebook_url(graded.course)) as gb:
        found = {s: gb.find_submission(ASSIGNMENT, s).score for s in SUBMISSIONS}
        assert len(gb.assignment_submissions(ASSIGNMENT)) == len(SUBMISSIONS)
    assert found == {s: spec["expected"] for s, spec in SUBMISSIONS.items()}


def test_progress_and_final_table(graded: Graded) -> None:
    """Does the run report progress on stderr and end with a table of scores?"""
    total = len(SUBMISSIONS)  # none stopped its cluster, so none is graded twice
    assert f"[{total}/{total}]" in graded.run.stderr
    assert "(failures so far: 0)" in graded.run.stderr
    assert "its cluster stopped" not in graded.run.stderr
    lines = graded.run.stdout.splitlines()
    assert lines[0] == "grading: " + SANDBOXED
    rows = {line.split()[0]: line.split() for line in lines[3:]}
    assert set(rows) == set(SUBMISSIONS)
    assert rows["correct"][-1] == "3/3" and rows["partial"][-1] == "1/3"


def test_feedback_shows_descriptions_but_nothing_hidden(graded: Graded) -> None:
    """Does the feedback name the failed checks (and shareable hints) while leaking no hidden
    test source, hidden reason or unshared hint?"""
    pages = {s: (graded.course / "feedback" / s / ASSIGNMENT / "lab.html").read_text()
             for s in SUBMISSIONS}
    for student, page in pages.items():
        for text in HIDDEN_TEXT:
            assert text not in page, (student, text)
    assert "ConfigMap settings in namespace bookinfo selects the mode" in pages["partial"]
    assert "namespace bookinfo exists and is labelled istio-injection=enabled" in pages["empty"]
    assert "kubectl label namespace bookinfo istio-injection=enabled" in pages["empty"]


def test_grades_are_exported_to_csv(graded: Graded) -> None:
    """Does --export write nbgrader's CSV with every student's score?"""
    with graded.csv.open() as handle:
        rows = {r["student_id"]: r for r in csv.DictReader(handle)}
    assert {s: float(rows[s]["score"]) for s in SUBMISSIONS} == {
        s: float(spec["expected"]) for s, spec in SUBMISSIONS.items()}
    assert {r["max_score"] for r in rows.values()} == {"3.0"}
    assert {r["sandbox"] for r in rows.values()} == {SANDBOXED}


def shown(graded: Graded, student: str, grade_id: str = "answer-namespace") -> str:
    """What one of the student's cells printed while it was graded."""
    notebook = nbformat.read(graded.course / "autograded" / student / ASSIGNMENT /
                             "lab.ipynb", as_version=4)
    return "".join(o.get("text", "") for o in cell(notebook, grade_id).outputs)


def test_a_submission_can_write_nothing_but_its_own_scratch(graded: Graded) -> None:
    """Did the submission that rewrites every *.db and appends to every file it reaches find
    no gradebook (nor any file) it could change outside its own work directory and /tmp?
    (That every score is intact is asserted above.)"""
    assert shown(graded, "db-writer").splitlines() == ["rewritten []", "writable []"]


def test_a_submission_cannot_see_other_students_or_the_grader(graded: Graded) -> None:
    """Through /proc it finds no other cluster, it reads no kubeconfig, token or gradebook but
    its own cluster's, and its environment holds none of the grader's variables; it sees its
    own uid's processes only, is not root, and cannot signal the others."""
    assert shown(graded, "credentials").splitlines() == ["clusters []", "read []", "env False off"]
    assert shown(graded, "killer").splitlines() == ["uids True True", "kill 1: PermissionError"]


def test_a_submission_cannot_take_its_api_servers_place(graded: Graded) -> None:
    """Neither its kernel nor a command it runs in a pod (`kubectl exec`, as a uid of its own
    without capabilities) can kill its daemon or read the daemon's keys and state; and trying
    to stop its own cluster says why that fails."""
    assert shown(graded, "forger").splitlines() == ["kill daemon: PermissionError", "read []"]
    assert shown(graded, "forger", "answer-settings").splitlines() == [
        "kill 1 read 1 ['CapEff:', '0000000000000000'] True"]
    assert "runs as another user" in shown(graded, "stops-cluster", "answer-settings")


def test_a_submission_reaches_no_listener_but_its_own(graded: Graded) -> None:
    """Scanning all 65535 loopback ports and sending each listener a DELETE and a POST
    /quitquitquit, did the submission reach its own API server but not the canary this test
    listens on in the host's network? (Other students' scores, asserted above, are intact.)"""
    assert shown(graded, "cross-cluster").splitlines() == ["own API reached True"]
    assert not graded.canary_reached


def test_every_student_network_namespace_is_deleted(graded: Graded) -> None:
    """Did the run delete the network namespace it made for each student (19 + 2 graded
    again, and the one `meshlab grade` makes to test that it can)?"""
    assert graded.namespaces_left == set()


def test_a_network_namespace_holds_only_its_own_listeners() -> None:
    """Is the host's listening port free in a student's namespace, does a connection made
    inside (loopback up) reach only the listener inside and one made outside only the host's —
    and is the namespace gone after?"""
    with socket.create_server(("127.0.0.1", 0)) as host:
        port = host.getsockname()[1]
        path = netns.create()
        try:
            with netns.entered(path):
                inside = socket.create_server(("127.0.0.1", port))
            with inside:
                with netns.entered(path), socket.create_connection(("127.0.0.1", port), 5):
                    assert only_one_accepts(inside, host)
                with socket.create_connection(("127.0.0.1", port), 5):
                    assert only_one_accepts(host, inside)
        finally:
            netns.delete(path)
    assert not Path(path).exists()


FORK_FIFTY = """
import os, time
forked = 0
try:
    for _ in range(50):
        if os.fork() == 0:
            time.sleep(1)
            os._exit(0)
        forked += 1
except OSError as exc:
    print("fork refused after", forked, exc.strerror)
"""


def test_a_students_processes_share_one_memory_and_task_limit() -> None:
    """In a student's cgroup (here 96 MiB and 16 tasks), does a process allocating 200 MiB —
    well under its own 4 GiB address-space limit — get killed, and forking stop at the
    student's task limit?"""
    group = StudentCgroup.create(CgroupLimits(memory_bytes=96 << 20, tasks=16))
    assert group is not None, cgroup.problem()
    uid = new_uid()
    try:
        jail = Jail(uid, cgroup_procs=group.procs_files)
        hog = subprocess.run(jail.command([sys.executable, "-c", "x = bytearray(200 << 20)"],
                                          "/"), capture_output=True, timeout=60)
        forks = subprocess.run(jail.command([sys.executable, "-c", FORK_FIFTY], "/"),
                               capture_output=True, text=True, timeout=60)
    finally:
        end_processes(uid)
        group.remove()
    assert hog.returncode in (-9, 137), hog
    refused = forks.stdout.split()
    assert refused[:3] == ["fork", "refused", "after"] and int(refused[3]) < 16, forks
    assert not any(Path(d).exists() for d in group.directories)


def only_one_accepts(reached: socket.socket, other: socket.socket) -> bool:
    """`reached` has a connection waiting, `other` none."""
    reached.settimeout(5)
    reached.accept()[0].close()
    other.setblocking(False)
    try:
        other.accept()[0].close()
    except BlockingIOError:
        return True
    return False


def test_a_memory_hog_gets_memory_errors(graded: Graded) -> None:
    """Does a 20 GB allocation fail inside the kernel? (Its unbounded one then starves that
    kernel alone: every other score is asserted above.)"""
    assert "20 GB: MemoryError" in shown(graded, "memory-hog").splitlines()


def test_flooding_output_is_capped(graded: Graded) -> None:
    """Does a submission printing megabytes leave a graded notebook of a sane size?"""
    notebook = graded.course / "autograded" / "flood" / ASSIGNMENT / "lab.ipynb"
    assert notebook.stat().st_size < 200_000


def test_a_submission_cannot_find_other_clusters_by_guessing(graded: Graded) -> None:
    """Did every guess at another student's cluster (classmates' names, directories around its
    own state) miss? (Their scores are asserted above.)"""
    notebook = nbformat.read(graded.course / "autograded" / "other-cluster" / ASSIGNMENT /
                             "lab.ipynb", as_version=4)
    shown = "".join(o.get("text", "") for o in cell(notebook, "answer-settings").outputs)
    assert shown.count("not found") == 20 and "stopped" not in shown


def test_the_kernel_knows_the_student_and_its_cluster_only(graded: Graded) -> None:
    """Does the kernel get the student id and its own fresh cluster (nbgrader gives neither),
    but not the grader's targets file?"""
    notebook = nbformat.read(graded.course / "autograded" / "partial" / ASSIGNMENT /
                             "lab.ipynb", as_version=4)
    shown = "".join(o.get("text", "") for o in cell(notebook, "answer-namespace").outputs)
    student, cluster_name, sees_targets = shown.split()
    assert (student, sees_targets) == ("partial", "False")
    assert cluster_name.startswith("g-") and len(cluster_name) == 18


def test_hidden_test_cells_are_recognised_by_their_verify_call() -> None:
    """Is a cell a hidden test only when it is a locked grade cell calling verify(LAB)?"""
    def code(source: str, **nbgrader: object) -> nbformat.NotebookNode:
        return nbformat.v4.new_code_cell(source, metadata={"nbgrader": {
            "grade": True, "locked": True, "grade_id": "t", "points": 1, **nbgrader}})

    assert hidden_test_lab(code('from grader.verify import verify\n\nverify("day1.mtls")')) \
        == "day1.mtls"
    assert hidden_test_lab(code("from grader.verify import verify; verify('day2.x')")) == "day2.x"
    assert hidden_test_lab(code('verify("day1.mtls")', solution=True)) is None  # an answer
    assert hidden_test_lab(code('verify("day1.mtls")', grade=False)) is None
    assert hidden_test_lab(code('print(verify("day1.mtls"))')) is None


def test_hidden_checks_join_their_lab_after_the_public_ones() -> None:
    """Does loading the hidden checks (grader.hidden, found through its entry point) register
    them under their lab, hidden from learners and run after the lab's public (and fatal)
    checks?"""
    load_checks(hidden=True)
    checks = find("day1.install", include_hidden=True)
    hidden = [c for c in checks if c.hidden]
    assert [c.id for c in hidden] == ["day1.install.reviews-versions"]
    assert checks.index(hidden[0]) > max(i for i, c in enumerate(checks) if not c.hidden)
    assert hidden[0] not in find("day1.install")


def test_workspace_hides_student_state() -> None:
    """Are the per-run directories holding students' course copies and clusters unlistable
    (enter by exact name only) with random names, and removed afterwards?"""
    workspace = Workspace()
    try:
        for folder in (workspace.courses, workspace.states):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o300
        first, second = workspace.private_course(), workspace.private_course()
        assert first.parent == second.parent == workspace.courses
        assert first.name != second.name and len(first.name) == 24
    finally:
        workspace.cleanup()
    assert not workspace.root.exists()


@contextmanager
def bookinfo_done(cluster: ClusterRef) -> Iterator[None]:
    """The sample assignment's work, done by hand on `cluster`; undone (and gone) afterwards."""
    try:
        for args in (("create", "namespace", "bookinfo"),
                     ("label", "namespace", "bookinfo", "istio-injection=enabled"),
                     ("create", "configmap", "settings", "--namespace=bookinfo",
                      "--from-literal=mode=strict")):
            done = cluster.kubectl(*args)
            assert done.returncode == 0, done.stderr
        yield
    finally:
        cluster.kubectl("delete", "namespace", "bookinfo", "--wait=false")
        poll(lambda: "NotFound" in cluster.kubectl("get", "namespace", "bookinfo").stderr,
             "namespace bookinfo to be deleted")


def test_verify_runs_the_checks_in_a_fresh_process(cluster: ClusterRef) -> None:
    """Is the hidden test line silent on stderr when the checks pass, and does it fail with
    the check's description — not its source — when they do not?"""
    assert cluster.embedded is not None
    env = {**os.environ, "MESHLAB_CLUSTER": cluster.context,
           "MESHLAB_STATE_DIR": str(cluster.embedded.paths.root),
           "MESHLAB_GRADER_CHECKS": str(FIXTURES / "sample_checks.py")}
    env.pop("NBGRADER_EXECUTION", None)
    line = "from grader.verify import verify; verify('sample.config')"
    failing = subprocess.run([sys.executable, "-c", line], env=env, capture_output=True,
                             text=True, timeout=120)
    assert failing.returncode == 1
    assert "AssertionError: 1 check(s) of sample.config failed" in failing.stderr
    assert "namespace bookinfo does not exist" in failing.stderr
    assert "def namespace" not in failing.stderr
    with bookinfo_done(cluster):
        passing = subprocess.run([sys.executable, "-c", line], env=env, capture_output=True,
                                 text=True, timeout=120)
    assert (passing.returncode, passing.stderr, passing.stdout) == (0, "", "")


# Lists the loopback ports that accept, without sending them anything (the cluster is shared).
LIVE_SCAN = {"answers": {"answer-namespace": """
import os, socket
from labs.cluster import EmbeddedCluster
accepting = set()
for port in range(1, 65536):
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0 and \\
                probe.getsockname() != probe.getpeername():
            accepting.add(port)
cluster = EmbeddedCluster(os.environ["MESHLAB_CLUSTER"], os.environ["MESHLAB_STATE_DIR"])
print("own API reached", cluster.paths.read_endpoint()["port"] in accepting)
print("canary reached", int(os.environ["MESHLAB_TEST_CANARY_PORT"]) in accepting)
"""}}


def test_live_mode_grades_against_the_students_own_cluster(graded: Graded, cluster: ClusterRef,
                                                           tmp_path: Path) -> None:
    """In live mode, is a student graded against its own running cluster, named in a
    `meshlab board` roster — so an untouched notebook earns what that cluster shows — from a
    network namespace where that cluster's ports are relayed, but not a listener of the
    host's (a canary)?"""
    assert cluster.embedded is not None
    course = tmp_path / "course"
    course.mkdir()
    shutil.copy2(graded.course / "gradebook.db", course / "gradebook.db")
    hand_in(course, "lively", SUBMISSIONS["empty"], release=graded.course)
    hand_in(course, "scanner", LIVE_SCAN, release=graded.course)
    roster = tmp_path / "roster.yaml"
    roster.write_text(yaml.safe_dump({"students": [
        {"name": name, "cluster": cluster.context, "state_dir": str(cluster.embedded.paths.root)}
        for name in ("lively", "scanner")]}))
    with bookinfo_done(cluster), socket.create_server(("127.0.0.1", 0)) as canary:
        run = subprocess.run(
            [sys.executable, "-m", "labs.cli", "grade", ASSIGNMENT, "--mode", "live",
             "--roster", str(roster), "--course-dir", str(course)],
            env={**grading_env(graded.source, cell_timeout=120),
                 "MESHLAB_TEST_CANARY_PORT": str(canary.getsockname()[1])},
            capture_output=True, text=True, timeout=600)
        canary_reached = has_pending_connection(canary)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "reaching its own cluster's ports only" in run.stdout
    with Gradebook(gradebook_url(course)) as gb:
        assert gb.find_submission(ASSIGNMENT, "lively").score == 3
    notebook = nbformat.read(course / "autograded" / "scanner" / ASSIGNMENT / "lab.ipynb",
                             as_version=4)
    shown = "".join(o.get("text", "") for o in cell(notebook, "answer-namespace").outputs)
    assert shown.splitlines() == ["own API reached True", "canary reached False"]
    assert not canary_reached
    assert cluster.embedded.status().running  # live mode leaves the student's cluster alone


def test_grading_without_submissions_says_what_to_do(tmp_path: Path) -> None:
    """Does `meshlab grade` on an empty course explain itself instead of a traceback?"""
    run = subprocess.run([sys.executable, "-m", "labs.cli", "grade", "day9", "--course-dir",
                          str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "no submissions of 'day9'" in run.stderr and "Traceback" not in run.stderr


def test_without_a_sandbox_grading_in_parallel_is_refused(graded: Graded, tmp_path: Path) -> None:
    """Where no sandbox can be made (here: bubblewrap missing from PATH), does `meshlab grade
    --parallel 2` say why and refuse before grading anything, unless told it is unsafe?"""
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("prlimit", "unshare", "setpriv", "nsenter", "ip", "sh"):
        found = shutil.which(tool)
        assert found, tool
        (tools / tool).symlink_to(found)
    command = [sys.executable, "-m", "labs.cli", "grade", ASSIGNMENT, "--parallel", "2",
               "--course-dir", str(graded.course)]
    env = {**grading_env(graded.source), "PATH": str(tools)}
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stderr
    assert "NO SANDBOX: bwrap not found" in run.stderr
    assert "refusing to grade in parallel without a sandbox" in run.stderr
    assert "graded" not in run.stderr  # no progress line: nothing was graded
