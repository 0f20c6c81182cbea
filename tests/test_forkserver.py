"""The app twins' fork server (labs/embedded/apps/forkserver.py, runtime/forkserver.py): does a
forked twin behave for the runtime as `python -I -m twin` would — session, environment, working
directory, stdout/stderr, exit codes, signals — and does a crash of the fork server take its
twins with it and leave the next start working?"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import urllib.request
from pathlib import Path

from conftest import wait_until
from runtime_support import run

from labs.embedded.apps.forkserver import ECHO_MODULE, twin_command
from labs.embedded.loopback import free_port
from labs.embedded.runtime.forkserver import ForkedTwin, ForkServer
from labs.embedded.runtime.process import kill_leftovers

SLEEPER = "labs.embedded.apps.sleeper"


def get_json(port: int) -> dict[str, object]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/", timeout=5) as response:
        return json.loads(response.read())


async def answers(port: int) -> dict[str, object] | None:
    try:
        return await asyncio.to_thread(get_json, port)
    except OSError:
        return None


async def output(twin: ForkedTwin) -> tuple[int, str, str]:
    out, err = await asyncio.gather(twin.stdout.read(), twin.stderr.read())
    return await twin.wait(), out.decode(), err.decode()


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for its reaper)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_only_twin_commands_go_to_the_fork_server() -> None:
    """Is a twin's `python -I -m labs.embedded.apps.X` recognised, and nothing else?"""
    assert twin_command([sys.executable, "-I", "-m", ECHO_MODULE, "--port", "1"]) == [
        ECHO_MODULE, "--port", "1"]
    assert twin_command([sys.executable, "-I", "-m", "labs.embedded.mesh.istio.sidecar"]) is None
    assert twin_command(["/usr/bin/prometheus", "--config.file=x"]) is None


def test_forked_twin_runs_like_its_own_process(tmp_path: Path) -> None:
    """Does a forked echo twin lead its own session, see its environment and working
    directory, log to its stdout, stop with 0 on SIGTERM and report -9 on SIGKILL; and does a
    failing twin's stderr and exit code come back as `python -m` gives them?"""
    pod_dir = tmp_path / "pods" / "default_web_1234-uid"
    workdir = pod_dir / "web"
    workdir.mkdir(parents=True)

    async def scenario() -> None:
        forks = ForkServer()
        try:
            port = free_port()
            env = {"PATH": os.defpath, "MESHLAB_POD_NAME": "web-1",
                   "MESHLAB_POD_NAMESPACE": "default", "HOME": str(workdir)}
            echo = await forks.spawn([ECHO_MODULE, "--port", str(port)], env, workdir)
            deadline = asyncio.get_running_loop().time() + 15
            while (reply := await answers(port)) is None:
                assert asyncio.get_running_loop().time() < deadline, "the echo twin answers"
                await asyncio.sleep(0.05)
            assert reply["hostname"] == "web-1" and reply["namespace"] == "default"
            assert os.getsid(echo.pid) == echo.pid == os.getpgid(echo.pid)
            assert Path(os.readlink(f"/proc/{echo.pid}/cwd")) == workdir
            (pod_dir / "web.pid").write_text(f"{echo.pid}\n")
            sleeper = await forks.spawn([SLEEPER], env, workdir)
            os.kill(echo.pid, signal.SIGTERM)
            code, out, _ = await output(echo)
            assert code == 0 and "listening on" in out
            os.kill(sleeper.pid, signal.SIGKILL)
            assert await sleeper.wait() == -signal.SIGKILL

            for _ in range(5):  # exits at once: reported even before spawn() has returned
                failing = await forks.spawn([ECHO_MODULE, "--port", "not-a-port"], env, workdir)
                code, _, err = await asyncio.wait_for(output(failing), 15)
                assert code == 2 and "invalid int value" in err
        finally:
            await forks.stop()

    run(scenario())


def test_leftover_forked_twin_is_found_by_its_working_directory(tmp_path: Path) -> None:
    """A forked twin's /proc environment is the fork server's: is it still killed at start-up
    after a `kill -9` of the daemon, by its working directory in the pod's folder?"""
    pod_dir = tmp_path / "pods" / "default_old_1234-uid"
    workdir = pod_dir / "app"
    workdir.mkdir(parents=True)

    async def scenario() -> None:
        forks = ForkServer()
        try:
            twin = await forks.spawn([SLEEPER], {"PATH": os.defpath}, workdir)
            (pod_dir / "app.pid").write_text(f"{twin.pid}\n")
            await wait_until(lambda: Path(os.readlink(f"/proc/{twin.pid}/cwd")) == workdir,
                             "the twin in its working directory")
            assert await asyncio.to_thread(kill_leftovers, tmp_path / "pods") == [twin.pid]
            assert await twin.wait() == -signal.SIGKILL
        finally:
            await forks.stop()

    run(scenario())


def test_twins_die_with_the_fork_server_and_a_new_one_starts(tmp_path: Path) -> None:
    """When the fork server is killed, do its twins die with it (their exits reported as
    SIGKILL), and does the next twin start in a fresh fork server?"""
    async def scenario() -> None:
        forks = ForkServer()
        try:
            twin = await forks.spawn([SLEEPER], {"PATH": os.defpath}, tmp_path)
            server = _parent(twin.pid)
            os.kill(server, signal.SIGKILL)
            assert await twin.wait() == -signal.SIGKILL
            await wait_until(lambda: not alive(twin.pid), "the twin gone")
            again = await forks.spawn([ECHO_MODULE, "--port", "x"], {"PATH": os.defpath},
                                      tmp_path)
            assert _parent(again.pid) != server
            assert await again.wait() == 2  # argparse's verdict: it ran
        finally:
            await forks.stop()

    run(scenario())


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
