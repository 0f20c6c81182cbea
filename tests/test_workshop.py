"""`meshlab workshop up|down|status`: three real embedded clusters from a CSV roster, two at a
time (each API server answers kubectl; status shows them; down leaves no process); the kind
backend's 20-participant `--dry-run` pinned by tests/golden/workshop_kind_20.txt (regenerate
after an intended change with `MESHLAB_UPDATE_GOLDEN=1 pytest tests/test_workshop.py` and
review the diff); kind's down through the command doubles; roster rows that do not fit."""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import poll
from provision_support import REPO, Doubles

from labs.cluster import EmbeddedCluster, kubectl_binary
from labs.cluster.roster import load_roster
from labs.provision.kind import Options
from labs.provision.workshop import Progress, participants, run_all, summary, up

GOLDEN = Path(__file__).parent / "golden" / "workshop_kind_20.txt"
NAMES = ("alice", "bob", "carol")


def kind_roster(folder: Path, count: int) -> Path:
    roster = folder / "kind.csv"
    roster.write_text("student,context\n" + "".join(
        f"s{i:02d},kind-meshlab-s{i:02d}\n" for i in range(1, count + 1)))
    return roster


@pytest.fixture
def embedded_roster(tmp_path: Path) -> Iterator[Path]:
    """Three participants with their clusters under `state` beside the roster; whatever a
    test leaves running is stopped."""
    roster = tmp_path / "roster.csv"
    roster.write_text("student,cluster,state_dir\n" + "".join(
        f"{name},ws-{name},state\n" for name in NAMES))
    yield roster
    for name in NAMES:
        EmbeddedCluster(f"ws-{name}", tmp_path / "state").down()


def processes_under(folder: Path) -> list[str]:
    """Command lines of running processes that mention `folder` (the clusters' daemons)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if str(folder) in command and state != "Z":
            found.append(command)
    return found


def test_embedded_workshop_up_status_down(embedded_roster: Path, tmp_path: Path) -> None:
    doubles = Doubles(tmp_path / "doubles")
    up = doubles.meshlab("workshop", "up", "--roster", str(embedded_roster), "--backend",
                         "embedded", "--parallel", "2")
    assert up.returncode == 0, up.stdout + up.stderr
    out = up.stdout.splitlines()
    assert out[0] == "capacity plan: embedded backend, 3 participants"
    assert "starting 3 embedded environments, 2 at a time" in out
    # two at a time: the third starts only after one of the first two is ready
    starts = [i for i, line in enumerate(out) if ": starting embedded cluster" in line]
    readies = [i for i, line in enumerate(out) if line.split("] ", 1)[-1].split(": ", 1)[-1]
               .startswith("ready in ")]
    assert len(starts) == 3 and len(readies) == 3
    assert starts[2] > readies[0]
    table = out[out.index(next(line for line in out if line.startswith("STUDENT"))):]
    assert table[0].split() == ["STUDENT", "BACKEND", "CLUSTER/CONTEXT", "STATUS", "TIME",
                                "ACCESS"]
    state = tmp_path / "state"
    for name, row in zip(NAMES, table[1:4], strict=True):
        assert row.split()[:4] == [name, "embedded", f"ws-{name}", "ready"]
        kubeconfig = state / "clusters" / f"ws-{name}" / "kubeconfig"
        assert f"MESHLAB_CLUSTER=ws-{name} MESHLAB_STATE_DIR={state}" in row
        assert f"kubeconfig {kubeconfig}" in row
        assert "ingress http://localhost:3" in row  # a node port, 30000-32767
        namespaces = subprocess.run(
            [kubectl_binary(), f"--kubeconfig={kubeconfig}", "get", "ns", "-o", "name"],
            capture_output=True, text=True, timeout=30)
        assert namespaces.returncode == 0, namespaces.stderr
        assert {"namespace/default", "namespace/istio-system"} <= set(
            namespaces.stdout.split())
    assert table[-1] == "3 of 3 ok"

    status = doubles.meshlab("workshop", "status", "--roster", str(embedded_roster))
    assert status.returncode == 0, status.stdout + status.stderr
    rows = status.stdout.splitlines()
    assert rows[0].split() == ["STUDENT", "BACKEND", "CLUSTER/CONTEXT", "API", "PODS", "READY"]
    for name, row in zip(NAMES, rows[1:], strict=True):
        cells = row.split()
        assert cells[:4] == [name, "embedded", f"ws-{name}", "answering"]
        ready, total = map(int, cells[4].split("/"))
        assert total > 0 and 0 <= ready <= total

    down = doubles.meshlab("workshop", "down", "--roster", str(embedded_roster))
    assert down.returncode == 0, down.stdout + down.stderr
    lines = down.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("STUDENT"))
    assert [line.split()[:4] for line in lines[header + 1:header + 4]] == [
        [name, "embedded", f"ws-{name}", "stopped"] for name in NAMES]
    poll(lambda: not processes_under(state), "no process of the three clusters left",
         timeout=15)
    after = doubles.meshlab("workshop", "status", "--roster", str(embedded_roster))
    assert after.returncode == 3
    assert [line.split()[3:] for line in after.stdout.splitlines()[1:]] == [
        ["not", "running", "-"]] * 3


def test_kind_dry_run_for_twenty_matches_the_golden_file(tmp_path: Path) -> None:
    doubles = Doubles(tmp_path)
    done = doubles.meshlab("workshop", "up", "--roster", str(kind_roster(tmp_path, 20)),
                           "--backend", "kind", "--dry-run")
    assert done.returncode == 0, done.stderr
    # nothing ran but the capacity plan's question to Docker (not even `kind get clusters`)
    assert doubles.calls() == ["docker info --format {{.ServerVersion}} {{.DockerRootDir}}"]
    assert done.stderr.startswith("capacity plan: kind backend, 20 participants\n")
    assert "(dry run: nothing is refused or started)" in done.stderr
    plan = done.stdout.replace(str(REPO), "<repo>")
    if os.environ.get("MESHLAB_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(plan, encoding="utf-8")
    assert plan == GOLDEN.read_text(encoding="utf-8")
    assert plan.count("kind create cluster --name meshlab-s") == 20
    assert "# s20: kind cluster meshlab-s20, API 127.0.0.1:16462, ingress " \
        "http://localhost:18099/, then MESHLAB_CONTEXT=kind-meshlab-s20" in plan


def test_kind_workshop_down_deletes_each_cluster(tmp_path: Path) -> None:
    doubles = Doubles(tmp_path)
    done = doubles.meshlab("workshop", "down", "--roster", str(kind_roster(tmp_path, 3)),
                           "--parallel", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert doubles.calls() == [f"kind delete cluster --name meshlab-s{i:02d}"
                               for i in (1, 2, 3)]
    assert done.stdout.splitlines()[-1] == "3 of 3 ok"


def test_roster_rows_that_do_not_fit_the_backend(embedded_roster: Path,
                                                 tmp_path: Path) -> None:
    doubles = Doubles(tmp_path / "doubles")
    kind_on_embedded = doubles.meshlab("workshop", "up", "--roster", str(embedded_roster),
                                       "--backend", "kind", "--dry-run")
    assert kind_on_embedded.returncode == 1
    assert kind_on_embedded.stderr.strip() == (
        "meshlab: student 'alice' has an embedded cluster row; for --backend kind the roster "
        "needs `student,context` rows (context kind-meshlab-alice), so the board and the "
        "grader find the kind cluster")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("student,context\nalice,kind-alice\n")
    done = doubles.meshlab("workshop", "up", "--roster", str(wrong), "--backend", "kind",
                           "--dry-run")
    assert done.returncode == 1
    assert "the roster's context is kind-alice, but meshlab names this student's kind " \
        "cluster's context kind-meshlab-alice: write that in the roster" in done.stderr
    missing = doubles.meshlab("workshop", "status", "--roster", str(tmp_path / "none.csv"))
    assert missing.returncode == 1
    assert missing.stderr.startswith("meshlab: cannot read the roster")
    assert doubles.calls() == []


def test_kind_participants_get_their_roster_slot(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The kind path of `up` (the CLI's capacity plan refuses kind on a host without Docker, so
    the participants are started here through the same functions): three at two at a time,
    each with the ports of its place in the roster."""
    doubles = Doubles(tmp_path)
    for key, value in doubles.env().items():
        monkeypatch.setenv(key, value)
    found = participants(load_roster(kind_roster(tmp_path, 3)), "kind")
    lines = io.StringIO()
    results = run_all(found, lambda p: up(p, Progress(lines), Options(retry_delay_s=0)), 2)
    assert [(r.participant.name, r.status) for r in results] == [
        ("s01", "ready"), ("s02", "ready"), ("s03", "ready")]
    for slot, result in enumerate(results):
        name = f"meshlab-s{slot + 1:02d}"
        assert result.access == (f"MESHLAB_CONTEXT=kind-{name}  ingress "
                                 f"http://localhost:{18080 + slot}/")
        config = yaml.safe_load((doubles.state / f"config-{name}.yaml").read_text())
        assert config["networking"]["apiServerPort"] == 16443 + slot
        assert config["nodes"][0]["extraPortMappings"][0]["hostPort"] == 18080 + slot
    assert sorted(line.split("] ", 1)[1] for line in lines.getvalue().splitlines()
                  if "creating kind cluster" in line) == [
        f"s{i:02d}: creating kind cluster meshlab-s{i:02d} (API 127.0.0.1:{16442 + i}, "
        f"ingress localhost:{18079 + i})" for i in (1, 2, 3)]
    table = summary(results).splitlines()
    assert table[0].split() == ["STUDENT", "BACKEND", "CLUSTER/CONTEXT", "STATUS", "TIME",
                                "ACCESS"]
    assert table[1].split()[:4] == ["s01", "kind", "kind-meshlab-s01", "ready"]
    assert table[-1] == "3 of 3 ok"


def test_embedded_dry_runs_print_the_meshlab_commands(embedded_roster: Path,
                                                      tmp_path: Path) -> None:
    doubles = Doubles(tmp_path / "doubles")
    state = tmp_path / "state"
    up_plan = doubles.meshlab("workshop", "up", "--roster", str(embedded_roster), "--backend",
                              "embedded", "--dry-run")
    assert up_plan.returncode == 0, up_plan.stderr
    assert up_plan.stdout.splitlines() == [
        line for name in NAMES for line in (
            f"# {name}: embedded cluster ws-{name}, then MESHLAB_CLUSTER=ws-{name} "
            f"MESHLAB_STATE_DIR={state}", f"meshlab up --name ws-{name} --state-dir {state}")]
    down_plan = doubles.meshlab("workshop", "down", "--roster", str(embedded_roster),
                                "--dry-run")
    assert down_plan.returncode == 0, down_plan.stderr
    assert down_plan.stdout.splitlines() == [
        f"meshlab down --name ws-{name} --state-dir {state}" for name in NAMES]
    assert not (state / "clusters").exists()  # nothing was started


def test_one_failing_kind_participant_fails_alone(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    doubles = Doubles(tmp_path)
    for key, value in doubles.env(DOUBLE_KIND_CREATE="fail:meshlab-s02").items():
        monkeypatch.setenv(key, value)
    found = participants(load_roster(kind_roster(tmp_path, 3)), "kind")
    results = run_all(found, lambda p: up(p, Progress(io.StringIO()), Options()), 3)
    assert [r.status for r in results] == ["ready", "failed", "ready"]
    assert results[1].error.startswith("step 2 (create kind cluster meshlab-s02) failed")
    assert "the half-created cluster meshlab-s02 was deleted" in results[1].error
    assert [c for c in doubles.calls() if c.startswith("kind delete")] == [
        "kind delete cluster --name meshlab-s02"]
    table = summary(results).splitlines()
    assert table[2].split()[:4] == ["s02", "kind", "kind-meshlab-s02", "failed"]
    assert "s02: step 2 (create kind cluster meshlab-s02) failed: exit 1;" in table[5]
    assert table[-1] == "2 of 3 ok, 1 failed: see above"


def test_a_failing_embedded_participant_makes_up_exit_non_zero(tmp_path: Path) -> None:
    (tmp_path / "not-a-folder").write_text("")
    roster = tmp_path / "roster.csv"
    roster.write_text("student,cluster,state_dir\nalice,ws-alice,state\n"
                      "bob,ws-bob,not-a-folder\n")
    try:
        done = Doubles(tmp_path / "doubles").meshlab(
            "workshop", "up", "--roster", str(roster), "--backend", "embedded")
    finally:
        EmbeddedCluster("ws-alice", tmp_path / "state").down()
    assert done.returncode == 1, done.stdout + done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()
            if line.startswith(("alice ", "bob "))}
    assert rows["alice"][3] == "ready" and rows["bob"][3] == "failed"
    assert (f"bob: cannot use {tmp_path / 'not-a-folder' / 'clusters' / 'ws-bob'} (Not a "
            "directory): give bob a state_dir in the roster that is a folder you can write"
            in done.stdout)
    assert done.stdout.splitlines()[-1] == "1 of 2 ok, 1 failed: see above"
    assert "Traceback" not in done.stdout + done.stderr
