"""The instructor board (`meshlab board`): rosters, the board's data, its HTTP endpoints, the
check workers, and the live page as headless Chromium shows it."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import aiohttp
import pytest
from conftest import poll
from jupyterlab_browser import chromium_path

from labs.board import Board, show
from labs.board.plan import build_plan
from labs.board.refresh import Refresher
from labs.board.render import duration, fragment
from labs.board.server import make_app, start
from labs.checks import Check, Outcome, Report, Result, failed, passed, registry, skipped
from labs.cli import main as meshlab
from labs.cluster import ClusterAddress, EmbeddedCluster
from labs.cluster.roster import RosterError, Student, load_roster

FIXTURES = Path(__file__).parent / "fixtures" / "board"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
LAB = "day1.install"


# --------------------------------------------------------------------------------- rosters

def test_yaml_roster_lists_embedded_clusters_and_contexts() -> None:
    """Are relative paths taken from the roster's folder, and the top-level state_dir used only
    where a student names none?"""
    alice, bob, carol = load_roster(FIXTURES / "roster.yaml")
    assert alice == Student("alice", ClusterAddress("alice", str(FIXTURES / "clusters")))
    assert bob == Student("bob", ClusterAddress("bob", "/srv/meshlab"))
    assert carol == Student("carol", ClusterAddress(
        context="kind-carol", kubeconfig=str(FIXTURES / "kube" / "config")))
    assert carol.address.ref().context == "kind-carol"
    assert alice.address.ref().kubeconfig == (
        FIXTURES / "clusters" / "clusters" / "alice" / "kubeconfig")
    assert [s.target for s in (alice, carol)] == ["embedded alice", "context kind-carol"]


def test_csv_rosters_name_clusters_or_contexts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Do both CSV forms parse, with empty optional columns meaning 'the default'?"""
    monkeypatch.setenv("KUBECONFIG", "/tmp/meshlab-kubeconfig")
    alice, bob = load_roster(FIXTURES / "roster.csv")
    assert alice.address.state_dir == str(FIXTURES / "clusters")
    assert bob.address.state_dir is None
    carol, dan = load_roster(FIXTURES / "roster-contexts.csv")
    assert carol.address.kubeconfig == str(FIXTURES / "kube" / "config")
    assert dan.address.ref().kubeconfig == Path("/tmp/meshlab-kubeconfig")


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("r.yaml", "students:\n  - name: a\n    cluster: a\n    contxt: x\n",
     "r.yaml, line 4: unknown field 'contxt'"),
    ("r.yaml", "students:\n  - name: a\n  - name: b\n    cluster: b\n",
     "r.yaml, line 2: student 'a' needs exactly one of 'cluster'"),
    ("r.yaml", "students:\n  - name: a\n    cluster: a\n    context: k\n",
     "line 2: student 'a' needs exactly one of"),
    ("r.yaml", "students:\n  - name: a\n    cluster: Bad_Name\n",
     "line 2: field 'cluster': cluster name 'Bad_Name' is not valid"),
    ("r.yaml", "students:\n  - name: a\n    cluster: a\n  - name: a\n    cluster: b\n",
     "student 'a' is listed twice"),
    ("r.yaml", "students:\n  - name: a\n    cluster: [a, b]\n",
     "line 3: field 'cluster' must be a non-empty string"),
    ("r.yaml", "students: []\n", "line 1: `students` must be a non-empty list"),
    ("r.yaml", "studnets:\n  - name: a\n", "line 1: unknown field 'studnets'"),
    ("r.yaml", "students: [\n", "not valid YAML"),
    ("r.yaml", "- a\n", "expected a mapping with a `students:` list"),
    ("r.csv", "name,cluster\na,a\n", "line 1: the header must be `student,cluster"),
    ("r.csv", "student,context,kubeconfig\na,ctx,cfg,extra\n",
     "r.csv, line 2: more columns than the header has"),
    ("r.csv", "student,cluster\n,a\n", "line 2: field 'name' (the student) is required"),
    ("r.csv", "student,cluster\n", "the roster lists no students"),
])
def test_a_bad_roster_names_the_line_and_field(tmp_path: Path, name: str, text: str,
                                               expected: str) -> None:
    """Does every mistake come back as one message naming where it is?"""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(RosterError) as caught:
        load_roster(path)
    assert expected in str(caught.value)


def test_meshlab_board_rejects_a_bad_roster_without_a_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Does the CLI print the roster's mistake and exit 2 before serving anything?"""
    roster = tmp_path / "roster.yaml"
    roster.write_text("students:\n  - name: a\n")
    assert meshlab(["board", "--roster", str(roster), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("meshlab board: ") and "line 2" in err and "Traceback" not in err
    assert meshlab(["board", "--roster", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read the roster" in capsys.readouterr().err
    assert meshlab(["board", "--labs", "day9.nothing", "--name", "x"]) == 2
    assert "no check or lab is called 'day9.nothing'" in capsys.readouterr().err


def test_hidden_checks_come_after_the_public_ones_or_are_refused_clearly(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Does --hidden add the grader's checks behind each lab's public ones (so a fatal public
    check still leads), and say what is missing when the grader is not importable?"""
    checks = build_plan([LAB], hidden=True)[LAB]
    assert any(c.hidden for c in checks) and checks[0].id == "day1.install.namespace"
    assert [c.hidden for c in checks] == sorted(c.hidden for c in checks)
    assert not any(c.hidden for c in build_plan([LAB])[LAB])
    monkeypatch.setattr(registry, "HIDDEN_CHECKS_GROUP", "meshlab.no_such_checks")
    assert meshlab(["board", "--hidden", "--labs", LAB, "--name", "x"]) == 2
    err = capsys.readouterr().err
    assert "--hidden needs the grader's hidden checks" in err
    assert "meshlab.no_such_checks" in err and "leave out --hidden" in err


# ------------------------------------------------------------------- the board's data model

def _noop(ctx: object) -> Outcome:
    return passed()


CHECKS = [Check("lab.a.first", "first holds", _noop, points=2, fatal=True),
          Check("lab.a.second", "second holds", _noop),
          Check("lab.a.third", "third holds", _noop)]
PLAN = {"lab.a": CHECKS}


def _report(*outcomes: Outcome) -> dict[str, Report]:
    return {"lab.a": Report("lab.a", [Result(c, o, 0.1) for c, o in zip(CHECKS, outcomes,
                                                                        strict=True)])}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _board(clock: Clock) -> Board:
    students = [Student(n, ClusterAddress(n)) for n in ("ann", "ben", "cat", "dov")]
    return Board(students, PLAN, interval=10, clock=clock)


def test_cells_count_checks_and_points_and_colour_by_state() -> None:
    """Is each cell's state, count and points what its report says, with unreachable and
    not-yet-checked students told apart?"""
    clock = Clock()
    board = _board(clock)
    board.record("ann", _report(passed(), passed(), passed()))
    board.record("ben", _report(passed(), failed("no label"), passed()))
    board.record("cat", _report(failed("no namespace"), skipped("skipped"), skipped("skipped")))
    board.record_problem("dov", "unreachable", "cluster unreachable: connection refused")
    cells = {s["name"]: s["labs"]["lab.a"] for s in board.snapshot()["students"]}
    assert {n: c["state"] for n, c in cells.items()} == {
        "ann": "complete", "ben": "partial", "cat": "failing", "dov": "unreachable"}
    assert (cells["ann"]["passed"], cells["ann"]["total"], cells["ann"]["earned"],
            cells["ann"]["possible"]) == (3, 3, 4.0, 4.0)
    assert (cells["ben"]["passed"], cells["ben"]["earned"]) == (2, 3.0)
    assert [(f["id"], f["reason"]) for f in cells["ben"]["failing"]] == [
        ("lab.a.second", "no label")]
    assert [o["status"] for o in cells["cat"]["other"]] == ["skip", "skip"]
    dov = board.snapshot()["students"][3]
    assert (dov["state"], dov["reason"]) == ("unreachable",
                                              "cluster unreachable: connection refused")
    fresh = Board([Student("eve", ClusterAddress("eve"))], PLAN).snapshot()
    assert fresh["students"][0]["labs"]["lab.a"]["state"] == "pending"


def test_the_board_tracks_since_when_a_check_has_been_failing() -> None:
    """Does a failing check keep its first-failed time across rounds (and a skip or an
    unreachable round), and lose it once it passes?"""
    clock = Clock()
    board = _board(clock)
    board.record("ben", _report(passed(), failed("no label"), passed()))
    clock.now += 90
    board.record("ben", _report(passed(), failed("still no label"), passed()))
    failing = board.snapshot()["students"][1]["labs"]["lab.a"]["failing"]
    assert (failing[0]["failing_for"], failing[0]["reason"]) == (90.0, "still no label")
    board.record_problem("ben", "unreachable", "cluster unreachable: down")
    clock.now += 30
    board.record("ben", _report(failed("namespace gone"), skipped("skipped"), skipped("s")))
    clock.now += 30
    board.record("ben", _report(passed(), failed("no label"), passed()))
    assert board.snapshot()["students"][1]["labs"]["lab.a"]["failing"][0]["failing_for"] == 150
    board.record("ben", _report(passed(), passed(), passed()))
    clock.now += 5
    board.record("ben", _report(passed(), failed("broke again"), passed()))
    assert board.snapshot()["students"][1]["labs"]["lab.a"]["failing"][0]["failing_for"] == 0


def test_stuck_lists_the_checks_most_students_fail_longest_first() -> None:
    """Are stuck checks ordered by how many students fail them, students by how long?"""
    clock = Clock()
    board = _board(clock)
    board.record("ann", _report(passed(), failed("x"), failed("y")))
    clock.now += 60
    board.record("ben", _report(passed(), failed("x"), passed()))
    board.record("cat", _report(passed(), passed(), passed()))
    clock.now += 60
    stuck = board.snapshot()["labs"][0]["stuck"]
    assert [(s["id"], s["failing"]) for s in stuck] == [("lab.a.second", 2), ("lab.a.third", 1)]
    assert [(s["name"], s["failing_for"]) for s in stuck[0]["students"]] == [
        ("ann", 120.0), ("ben", 60.0)]
    html = fragment(board.snapshot())
    assert "<code>lab.a.second</code> — 2 of 4: ann (2m 00s), ben (1m 00s)" in html


def test_the_grid_escapes_what_students_and_checks_say() -> None:
    """Can a student name or a failure reason inject markup into the instructor's page?"""
    board = Board([Student("<b>x</b>", ClusterAddress("x"))], PLAN)
    board.record("<b>x</b>", _report(passed(), failed("<script>alert(1)</script>"), passed()))
    html = fragment(board.snapshot())
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>x</b>" not in html
    assert [duration(s) for s in (5, 75, 3700)] == ["5s", "1m 15s", "1h 01m"]


# -------------------------------------------------------------------- the HTTP endpoints

def test_the_json_endpoints_serve_the_board_from_a_real_server() -> None:
    """Do `/board.json`, `/api/board` and `/` answer over real HTTP on 127.0.0.1?"""
    clock = Clock()
    board = _board(clock)
    board.record("ben", _report(passed(), failed("no label"), passed()))

    async def scenario() -> tuple[dict, dict, str, str]:  # type: ignore[type-arg]
        runner, port = await start(make_app(board), 0)
        try:
            async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
                async with http.get("/board.json") as response:
                    data = await response.json()
                async with http.get("/api/board") as response:
                    api = await response.json()
                    cache = response.headers["Cache-Control"]
                async with http.get("/") as response:
                    page = await response.text()
            return data, api, cache, page
        finally:
            await runner.cleanup()

    data, api, cache, page = asyncio.run(scenario())
    assert data == board.snapshot()
    assert api["board"] == data and api["html"] == fragment(data) and cache == "no-store"
    ben = data["students"][1]
    assert ben["labs"]["lab.a"]["passed"] == 2 and ben["labs"]["lab.a"]["failing"][0]["id"] \
        == "lab.a.second"
    assert "fetch('/api/board'" in page and 'id="board"' in page


# ------------------------------------------------------------------ real clusters, workers

ROSTER_STATES = {
    "alice": [],                                                     # no bookinfo namespace
    "bob": [("create", "namespace", "bookinfo")],                    # no injection label
    "carol": [("create", "namespace", "bookinfo"),
              ("label", "namespace", "bookinfo", "istio-injection=enabled")],
}


@pytest.fixture(scope="module")
def classroom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Three embedded clusters in different states, and a roster naming them plus `dave`, whose
    cluster was never started. Yields the roster; stops every cluster at the end."""
    root = tmp_path_factory.mktemp("board")
    clusters = [EmbeddedCluster(name, root) for name in ROSTER_STATES]
    try:
        starting = [subprocess.Popen([sys.executable, "-m", "labs.cli", "up", "--name", c.name,
                                      "--state-dir", str(root)], stdout=subprocess.DEVNULL)
                    for c in clusters]
        assert all(p.wait(timeout=60) == 0 for p in starting)
        for cluster in clusters:
            for args in ROSTER_STATES[cluster.name]:
                done = subprocess.run(
                    [_kubectl(), f"--kubeconfig={cluster.kubeconfig}", *args],
                    capture_output=True, text=True, timeout=30)
                assert done.returncode == 0, done.stderr
        roster = root / "roster.yaml"
        roster.write_text(f"state_dir: {root}\nstudents:\n" + "".join(
            f"  - name: {n}\n    cluster: {n}\n" for n in [*ROSTER_STATES, "dave"]))
        yield roster
    finally:
        for cluster in clusters:
            cluster.down()


def _kubectl() -> str:
    from labs.cluster import kubectl_binary

    return kubectl_binary()


def test_an_unreachable_context_is_shown_with_kubectl_s_reason(tmp_path: Path) -> None:
    """Does a kube context whose API server is gone show as 'cluster unreachable' with the
    reason, from the worker's probe, instead of failing every check?"""
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "gone",
        "clusters": [{"name": "gone", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "u"}}]}))
    students = [Student("zed", ClusterAddress(context="gone", kubeconfig=str(kubeconfig)))]
    board = Board(students, build_plan([LAB]))
    asyncio.run(Refresher(board, students).refresh_once())
    zed = board.snapshot()["students"][0]
    assert zed["state"] == "unreachable"
    assert zed["reason"].startswith("cluster unreachable: ") and "127.0.0.1:9" in zed["reason"]
    assert board.rounds == 1


@pytest.fixture
def slow_checks(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The fixture lab `boardtest.slow`, registered for one test only (the worker imports the
    same module through the board's sys.path)."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.syspath_prepend(str(FIXTURES))
    sys.modules.pop("board_slow_checks", None)
    importlib.import_module("board_slow_checks")
    yield "boardtest.slow"
    sys.modules.pop("board_slow_checks", None)


def test_a_hanging_check_is_stopped_and_the_rest_reported(classroom: Path,
                                                          slow_checks: str) -> None:
    """Does the board kill a check that runs past --check-timeout, mark the checks after it as
    not run, and keep the verdicts that came before?"""
    student = load_roster(classroom)[0]
    board = Board([student], build_plan([slow_checks]))
    asyncio.run(Refresher(board, [student], check_timeout=1.5).refresh_once())
    cell = board.snapshot()["students"][0]["labs"][slow_checks]
    assert (cell["passed"], cell["total"]) == (1, 3)
    assert cell["failing"][0]["id"] == "boardtest.slow.hangs"
    assert "the board stopped this check" in cell["failing"][0]["reason"]
    assert cell["other"] == [{"id": "boardtest.slow.after", "status": "skip",
                              "reason": "not run: boardtest.slow.hangs timed out"}]
    assert board.last_round_seconds is not None and board.last_round_seconds < 30
    left = subprocess.run(["pgrep", "-f", "boardtest.slow.hangs"], capture_output=True)
    assert left.stdout == b"", "the killed worker is still running"


def test_the_notebook_board_runs_the_same_checks(classroom: Path) -> None:
    """Does `labs.board.show` check the students once and render the same grid?"""
    fast = classroom.parent / "fast.csv"  # carol's productpage check takes its full deadline
    fast.write_text(f"student,cluster,state_dir\nalice,alice,{classroom.parent}\n"
                    f"bob,bob,{classroom.parent}\n")
    shown = show(fast, [LAB])
    assert "namespace bookinfo does not exist" in shown.data
    assert "namespace bookinfo has no istio-injection label" in shown.data
    assert 'class="mlb-cell mlb-failing" data-student="alice"' in shown.data


# ------------------------------------------------------------------------ headless Chromium

class Cells(HTMLParser):
    """Text of every board cell (`td[data-student]`, by student and lab) and of the stuck row."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str], str] = {}
        self.classes: dict[tuple[str, str], str] = {}
        self.stuck = ""
        self.status = ""
        self._key: tuple[str, str] | None = None
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "td" and found.get("data-student"):
            self._key = (found["data-student"] or "", found.get("data-lab") or "")
            self.cells[self._key] = ""
            self.classes[self._key] = found.get("class") or ""
            self._in = "cell"
        elif tag == "td" and "mlb-stuck" in (found.get("class") or ""):
            self._in = "stuck"
        elif found.get("id") == "status":
            self._in = "status"

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "p"):
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "cell" and self._key:
            self.cells[self._key] += data
        elif self._in == "stuck":
            self.stuck += data
        elif self._in == "status":
            self.status += data


def _browse(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [chromium_path(), "--headless=new", "--disable-gpu", "--no-first-run",
               f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args, url]
    if os.geteuid() == 0:
        command.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    return subprocess.run(command, capture_output=True, text=True, timeout=90)


def _board_json(url: str) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(url + "board.json", timeout=5) as response:
        return json.load(response)  # type: ignore[no-any-return]


def test_chromium_shows_each_student_s_progress(classroom: Path, tmp_path: Path) -> None:
    """Loaded in headless Chromium, does `meshlab board` show for each student the checks
    passed, the failing check ids with reasons, who is stuck, and an unreachable cluster?"""
    chromium_path()  # skip (or fail, as root) before starting anything
    board = subprocess.Popen(
        [sys.executable, "-m", "labs.cli", "board", "--roster", str(classroom), "--labs", LAB,
         "--port", "0", "--interval", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert board.stdout is not None
        banner = board.stdout.readline()
        assert "http://127.0.0.1:" in banner, board.stderr.read() if board.stderr else banner
        url = banner[banner.index("http://"):].split()[0]
        poll(lambda: _board_json(url)["rounds"] >= 1, "the board's first round", timeout=60,
             interval=0.5)
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "board.png"
        shot.unlink(missing_ok=True)
        dom = _browse(url, tmp_path / "profile", "--window-size=1400,900",
                      f"--screenshot={shot}", "--dump-dom")
        assert dom.returncode == 0, dom.stderr[-2000:]
    finally:
        board.terminate()
        assert board.wait(timeout=20) == 0, "the board did not stop cleanly on SIGTERM"
    (ARTIFACTS / "board.html").write_text(dom.stdout)
    page = Cells()
    page.feed(dom.stdout)
    assert page.status.startswith("updated"), f"the page did not load /api/board: {page.status}"
    total = len(build_plan([LAB])[LAB])
    cell = {name: page.cells[(name, LAB)] for name in ROSTER_STATES}
    assert f"0/{total} checks" in cell["alice"] and f"0/{total} checks" in cell["bob"]
    assert f"1/{total} checks" in cell["carol"]
    assert "day1.install.namespace" in cell["alice"] and "does not exist" in cell["alice"]
    assert "day1.install.namespace" in cell["bob"] and "no istio-injection label" in cell["bob"]
    assert "day1.install.namespace" not in cell["carol"]
    assert "day1.install.workloads" in cell["carol"] and "missing: productpage-v1" in cell["carol"]
    assert "mlb-failing" in page.classes[("alice", LAB)]
    assert "mlb-partial" in page.classes[("carol", LAB)]
    assert page.cells[("dave", "")].startswith("cluster unreachable: embedded cluster 'dave' "
                                               "is not running")
    assert "day1.install.namespace — 2 of 4: " in page.stuck
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
