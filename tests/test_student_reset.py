"""`meshlab reset --student NAME --roster FILE [--lab LAB]`: the instructor resets one
student's lab on that student's cluster, found in the roster; mistakes get a message, not a
traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from labs.cluster import ClusterRef


def meshlab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "labs.cli", *args], capture_output=True,
                          text=True, timeout=180)


@pytest.fixture
def roster(cluster: ClusterRef, tmp_path: Path) -> Path:
    """dora's cluster is the test cluster; eve's was never started."""
    assert cluster.embedded is not None
    path = tmp_path / "roster.csv"
    path.write_text(f"student,cluster,state_dir\ndora,{cluster.context},"
                    f"{cluster.embedded.paths.root}\neve,eve,{tmp_path / 'eve-state'}\n")
    return path


def test_reset_deletes_what_the_lab_owns_on_the_student_s_cluster(cluster: ClusterRef,
                                                                   roster: Path) -> None:
    created = cluster.kubectl("create", "namespace", "bookinfo")
    assert created.returncode == 0, created.stderr
    done = meshlab("reset", "--roster", str(roster), "--student", "dora", "--lab",
                   "day1.install")
    assert done.returncode == 0, done.stderr
    assert "student dora: reset day1.install" in done.stdout
    found = cluster.kubectl("get", "namespace", "bookinfo", "--ignore-not-found", "-o", "name")
    assert found.stdout.strip() == ""


@pytest.mark.parametrize(("args", "message"), [
    (["--student", "zed"], "has no student 'zed' (it lists: dora, eve)"),
    (["--student", "eve"], "student eve: embedded cluster 'eve' is not running"),
    (["--student", "dora", "--name", "x"], "leave out --name"),
    (["--student", "dora", "day1.install", "--lab", "day1.traffic"], "two labs given"),
])
def test_mistakes_are_explained(roster: Path, args: list[str], message: str) -> None:
    done = meshlab("reset", "--roster", str(roster), *args)
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr


def test_student_needs_a_roster_and_a_roster_needs_a_student(roster: Path) -> None:
    alone = meshlab("reset", "--student", "dora")
    assert alone.returncode == 1 and "--student needs --roster FILE" in alone.stderr
    unused = meshlab("reset", "--roster", str(roster))
    assert unused.returncode == 1 and "--roster goes with --student" in unused.stderr


def test_a_context_row_is_reset_through_its_kube_context(cluster: ClusterRef,
                                                         tmp_path: Path) -> None:
    """A kind (or any) student is a `student,context,kubeconfig` row: the reset goes through
    that context — here the test cluster's own, as a kind cluster's would."""
    roster = tmp_path / "roster.csv"
    roster.write_text(f"student,context,kubeconfig\nkim,{cluster.context},{cluster.kubeconfig}\n")
    created = cluster.kubectl("create", "namespace", "bookinfo")
    assert created.returncode == 0, created.stderr
    done = meshlab("reset", "--roster", str(roster), "--student", "kim", "day1.install")
    assert done.returncode == 0, done.stderr
    found = cluster.kubectl("get", "namespace", "bookinfo", "--ignore-not-found", "-o", "name")
    assert found.stdout.strip() == ""
