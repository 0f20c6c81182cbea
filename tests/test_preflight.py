"""`meshlab preflight`: one verdict per item with its fix, from this host's real facts (memory,
CPUs, inotify, ports, disk) and from fake `docker` commands (small shell scripts on PATH)."""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from labs.setup import figures, host, preflight
from labs.setup.preflight import (
    Check,
    check_docker,
    check_inotify_embedded,
    check_ports,
    check_tools,
    render,
)
from labs.setup.releases import TOOLS
from labs.versions import version


def meshlab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "labs.cli", "preflight", *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fake_docker(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    docker = folder / "docker"
    docker.write_text(f"#!/bin/sh\n{body}\n")
    docker.chmod(0o755)
    return docker


def by_name(checks: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {check["name"]: check for check in checks}


def test_embedded_items_and_exit_status(tmp_path: Path) -> None:
    done = meshlab("--students", "2", "--port", str(free_port()), "-o", "json",
                   env={"MESHLAB_STATE_DIR": str(tmp_path / "state")})
    result = json.loads(done.stdout)
    checks = by_name(result["checks"])
    assert list(checks) == ["memory", "cpu", "inotify instances", "ports", "disk"]
    assert result["backend"] == "embedded" and result["students"] == 2
    assert checks["ports"]["status"] == "pass"
    assert "712 MB (356 MB each, PSS measured by bench/memory.py" in checks["memory"]["detail"]
    assert "0.04 cores (0.02 each" in checks["cpu"]["detail"]
    assert "90 instances (45 each" in checks["inotify instances"]["detail"]
    assert f"free at {tmp_path}" in checks["disk"]["detail"]  # the nearest existing folder
    failed = any(check["status"] == "fail" for check in result["checks"])
    assert result["ok"] is not failed and done.returncode == (1 if failed else 0)


def test_too_many_students_fail_with_the_number_that_fits() -> None:
    memory = host.memory()
    assert memory is not None  # Linux
    students = int(memory.total * figures.MEMORY_SHARE // figures.EMBEDDED_MEMORY.value) + 1
    done = meshlab("--students", str(students), "--port", str(free_port()))
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    memory_line = next(i for i, line in enumerate(lines) if line.startswith("FAIL    memory"))
    assert lines[memory_line + 1].strip() == \
        f"fix: run at most {students - 1} clusters on this host, or add memory"
    assert any(line.startswith("FAIL    cpu") for line in lines)
    assert lines[-1].endswith("fix the failures above and run meshlab preflight again")


def test_a_taken_port_fails(busy_port: int) -> None:
    done = meshlab("--port", str(busy_port), "-o", "json")
    ports = by_name(json.loads(done.stdout)["checks"])["ports"]
    assert done.returncode == 1
    assert ports == {"name": "ports", "status": "fail",
                     "detail": f"in use on 127.0.0.1: {busy_port} (JupyterLab)",
                     "fix": f"see what listens: ss -ltnp 'sport = :{busy_port}', and stop it; "
                            "or give JupyterLab another port: meshlab lab --port N"}


def test_bad_student_count_is_a_usage_error() -> None:
    for option, value, said in (("--students", "0", "student counts run from 1 to 10000"),
                                ("--students", "ten", "'ten' is not a whole number"),
                                ("--port", "70000", "ports run from 1 to 65535")):
        done = meshlab(option, value)
        assert done.returncode == 2 and said in done.stderr
        assert "Traceback" not in done.stderr


def test_inotify_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Instances already held count against the limit, and the fix gives enough for both."""
    monkeypatch.setattr(host, "sysctl", lambda name: 128)
    monkeypatch.setattr(host, "inotify_instances_in_use", lambda: 40)
    assert check_inotify_embedded(1).status == "pass"  # 40 + 45 <= 128
    two = check_inotify_embedded(2)  # 40 + 90 > 128
    assert (two.status, two.fix) == ("fail", "sudo sysctl -w fs.inotify.max_user_instances=1024")
    assert check_inotify_embedded(30).fix == "sudo sysctl -w fs.inotify.max_user_instances=1390"


def test_inotify_instances_are_counted_per_process() -> None:
    me = Path(f"/proc/{os.getpid()}")
    before = host.inotify_instances_of(me)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init()
    assert fd >= 0
    try:
        assert host.inotify_instances_of(me) == before + 1
        assert host.inotify_instances_in_use() >= before + 1
    finally:
        os.close(fd)
    assert host.inotify_instances_of(me) == before


def test_docker_states(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    sleep = shutil.which("sleep")
    monkeypatch.setenv("PATH", str(bin_dir))
    check, _ = check_docker()
    assert (check.status, check.fix) == ("fail", "install Docker Engine: "
                                         "https://docs.docker.com/engine/install/")
    fake_docker(bin_dir, 'echo "permission denied while trying to connect to the Docker daemon '
                'socket at unix:///var/run/docker.sock" >&2; exit 1')
    check, _ = check_docker()
    assert check.status == "fail" and "permission denied" in check.detail
    assert check.fix == "let this user use Docker: sudo usermod -aG docker $USER, then log in again"
    fake_docker(bin_dir, 'echo "Cannot connect to the Docker daemon at unix:///var/run/'
                'docker.sock. Is the docker daemon running?" >&2; exit 1')
    check, _ = check_docker()
    assert check.fix == "start the daemon: sudo systemctl start docker"
    fake_docker(bin_dir, '[ "$1 $2" = "info --format" ] && echo "27.3.1 /srv/docker"')
    check, root = check_docker()
    assert check.status == "pass" and "Docker 27.3.1" in check.detail
    assert root == Path("/srv/docker")
    fake_docker(bin_dir, f"exec {sleep} 30")
    monkeypatch.setattr(preflight, "DOCKER_TIMEOUT_S", 0.5)
    check, _ = check_docker()
    assert check.status == "fail" and "did not answer within 0.5 s" in check.detail


def test_tools_checks_name_the_install_command(tmp_path: Path) -> None:
    root = tmp_path / "tools"
    (root / "bin").mkdir(parents=True)
    kind = root / "bin" / "kind"
    kind.write_text("#!/bin/sh\necho kind\n")
    digest = hashlib.sha256(kind.read_bytes()).hexdigest()
    (root / "manifest.json").write_text(json.dumps({"tools": {"kind": {
        "version": version("KIND_VERSION"), "binarySha256": digest}}}))
    checks = {check.name: check for check in check_tools(root)}
    assert list(checks) == list(TOOLS)
    assert checks["kind"].status == "pass"
    assert (checks["helm"].status, checks["helm"].fix) == ("fail", "meshlab tools install helm")
    assert checks["helm"].detail == f"helm {version('HELM_VERSION')} is not installed in " \
                                    f"{root / 'bin'}"


def test_kind_backend(tmp_path: Path, busy_port: int) -> None:
    """kind's items: Docker, the four tools, documented figures (warnings at most), kind's
    inotify values, and the JupyterLab, API server and ingress ports of each student."""
    fake_docker(tmp_path / "bin", f'echo "27.3.1 {tmp_path}"')
    done = meshlab("--backend", "kind", "--students", "2", "--port", str(busy_port), "-o",
                   "json", env={"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
                                "MESHLAB_TOOLS_DIR": str(tmp_path / "tools")})
    checks = by_name(json.loads(done.stdout)["checks"])
    assert done.returncode == 1
    assert list(checks) == ["docker", "kind", "istioctl", "linkerd", "helm", "memory", "cpu",
                            "inotify instances", "inotify watches", "ports", "disk"]
    assert checks["docker"]["status"] == "pass"
    assert checks["kind"]["fix"] == "meshlab tools install kind"
    assert checks["memory"]["status"] in ("pass", "warn")  # a documented figure never fails
    assert "istio.io's Docker Desktop guide" in checks["memory"]["detail"]
    assert "16.0 GB (8.0 GB each" in checks["memory"]["detail"]
    watches = host.sysctl("fs.inotify.max_user_watches")
    assert checks["inotify watches"]["status"] == (
        "pass" if watches is not None and watches >= 524288 else "fail")
    assert checks["ports"]["detail"].startswith(f"in use on 127.0.0.1: {busy_port} (JupyterLab)")
    spans = check_ports([(range(65530, 65540), "kind API servers")])
    assert (spans.status, spans.detail) == (
        "fail", "needs 65530-65539 (kind API servers): ports run from 1 to 65535")
    clash = check_ports([(range(16443, 16444), "JupyterLab"), (range(16443, 16445), "kind")])
    assert (clash.status, clash.detail) == (
        "fail", "needs 16443 (JupyterLab), 16443-16444 (kind), which overlap")
    assert f"free at {tmp_path}" in checks["disk"]["detail"]
    assert figures.kind_ports(1) == (16444, 18081)


def test_table_shows_the_fix_under_each_problem() -> None:
    checks = [Check("memory", "pass", "fine"),
              Check("inotify watches", "fail", "too low", "sudo sysctl -w x=1"),
              Check("cpu", "warn", "slow", "use fewer")]
    assert render(checks, "kind", 1).splitlines() == [
        "meshlab preflight: kind backend, 1 student cluster",
        "STATUS  CHECK            DETAIL",
        "PASS    memory           fine",
        "FAIL    inotify watches  too low",
        "                         fix: sudo sysctl -w x=1",
        "WARN    cpu              slow",
        "                         fix: use fewer",
        "1 failure, 1 warning: fix the failures above and run meshlab preflight again"]
