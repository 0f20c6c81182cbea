"""The `meshlab` command and cluster selection, run as a learner runs them (a subprocess).

Uses its own state directory with clusters `alpha` and `beta` (the session cluster is not
touched), so `up`/`down` can be exercised for real.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import ssl
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import poll

from labs.cluster import ClusterRef, EmbeddedCluster, current_cluster


def meshlab(*args: str, state: Path, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    """Run `python -m labs.cli` with MESHLAB_STATE_DIR pointing at `state`."""
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("MESHLAB_CLUSTER", "MESHLAB_CONTEXT")}
    environment.update({"MESHLAB_STATE_DIR": str(state), **(env or {})})
    return subprocess.run([sys.executable, "-m", "labs.cli", *args], capture_output=True,
                          text=True, timeout=60, env=environment)


def endpoint(state: Path, name: str) -> dict[str, int]:
    found = EmbeddedCluster(name, state).paths.read_endpoint()
    assert found is not None, f"cluster {name} has no endpoint.json"
    return found


def running(pid: int) -> bool:
    """A live process (not a zombie left for its parent to reap)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def get(url: str, ca: Path, token: str | None) -> tuple[int, Any]:
    """GET over HTTPS trusting the cluster CA; returns (status, parsed JSON body or text)."""
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            status, body = response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read().decode()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A state directory with cluster `alpha` running (started through the CLI)."""
    root = tmp_path_factory.mktemp("cli-state")
    started = meshlab("up", "--name", "alpha", state=root)
    assert started.returncode == 0, started.stderr
    try:
        yield root
    finally:
        for name in ("alpha", "beta", "gamma"):
            EmbeddedCluster(name, root).down()


def test_up_is_idempotent(state: Path) -> None:
    """Does a second `meshlab up` print the same kubeconfig path without starting another
    daemon?"""
    first_pid = endpoint(state, "alpha")["pid"]
    again = meshlab("up", "--name", "alpha", state=state)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == str(state / "clusters" / "alpha" / "kubeconfig")
    assert endpoint(state, "alpha")["pid"] == first_pid


def test_status_text_and_json(state: Path) -> None:
    """Does `meshlab status` say where the cluster runs, in text and as JSON?"""
    where = endpoint(state, "alpha")
    text = meshlab("status", "--name", "alpha", state=state)
    assert text.returncode == 0, text.stderr
    kubeconfig = state / "clusters" / "alpha" / "kubeconfig"
    assert text.stdout == (f"cluster alpha: running (pid {where['pid']}, API on "
                           f"127.0.0.1:{where['port']})\nkubeconfig: {kubeconfig}\n")
    as_json = meshlab("status", "--name", "alpha", "-o", "json", state=state)
    assert json.loads(as_json.stdout) == {
        "name": "alpha", "running": True, "pid": where["pid"], "port": where["port"],
        "kubeconfig": str(kubeconfig), "stateDir": str(state / "clusters" / "alpha")}
    stopped = meshlab("status", "--name", "nothere", "-o", "json", state=state)
    assert stopped.returncode == 3
    assert json.loads(stopped.stdout)["running"] is False


def test_kubeconfig_is_private_and_works(state: Path) -> None:
    """Does `meshlab kubeconfig` print a 0600 kubeconfig whose context reaches the cluster?"""
    printed = meshlab("kubeconfig", "--name", "alpha", state=state)
    assert printed.returncode == 0, printed.stderr
    path = Path(printed.stdout.strip())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    config = yaml.safe_load(path.read_text())
    assert config["current-context"] == "alpha"
    assert config["clusters"][0]["cluster"]["server"] == (
        f"https://127.0.0.1:{endpoint(state, 'alpha')['port']}")
    ref = ClusterRef(path, "alpha")
    namespaces = ref.kubectl("get", "namespaces", "-o", "name")
    assert "namespace/default" in namespaces.stdout.split(), namespaces.stderr
    missing = meshlab("kubeconfig", "--name", "nothere", state=state)
    assert missing.returncode == 1
    assert "cluster nothere has no kubeconfig yet: run `meshlab up --name nothere`" in (
        missing.stderr)


def test_requests_need_the_token(state: Path) -> None:
    """Is a request without the bearer token (or with a wrong one) refused with 401, while the
    health endpoint stays open?"""
    cluster = EmbeddedCluster("alpha", state)
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    server, token = (config["clusters"][0]["cluster"]["server"],
                     config["users"][0]["user"]["token"])
    ca = cluster.paths.ca_cert
    for sent in (None, "wrong-token", f"{token}x"):
        status, body = get(f"{server}/api/v1/namespaces", ca, sent)
        assert status == 401, (sent, body)
        assert (body["kind"], body["reason"], body["code"]) == ("Status", "Unauthorized", 401)
    assert get(f"{server}/api/v1/namespaces/default", ca, token)[0] == 200
    assert get(f"{server}/readyz", ca, None) == (200, "ok")


def test_two_clusters_side_by_side(state: Path) -> None:
    """Do two named clusters run at once in one state directory, each with its own port and
    its own objects?"""
    started = meshlab("up", "--name", "beta", state=state)
    assert started.returncode == 0, started.stderr
    alpha_ep, beta_ep = endpoint(state, "alpha"), endpoint(state, "beta")
    assert alpha_ep["port"] != beta_ep["port"] and alpha_ep["pid"] != beta_ep["pid"]
    alpha = ClusterRef(state / "clusters" / "alpha" / "kubeconfig", "alpha")
    beta = ClusterRef(Path(started.stdout.strip()), "beta")
    made = alpha.kubectl("create", "configmap", "only-in-alpha", "-n", "default")
    assert made.returncode == 0, made.stderr
    assert "NotFound" in beta.kubectl("get", "configmap", "only-in-alpha", "-n",
                                      "default").stderr
    assert alpha.kubectl("get", "configmap", "only-in-alpha", "-n",
                         "default").returncode == 0
    both = [json.loads(meshlab("status", "--name", n, "-o", "json", state=state).stdout)
            for n in ("alpha", "beta")]
    assert [s["running"] for s in both] == [True, True]


def test_down(state: Path) -> None:
    """Does `meshlab down` stop the daemon (and say so), leave its state on disk, and report a
    second stop as not running?"""
    assert meshlab("up", "--name", "gamma", state=state).returncode == 0
    pid = endpoint(state, "gamma")["pid"]
    stopped = meshlab("down", "--name", "gamma", state=state)
    assert (stopped.returncode, stopped.stdout) == (0, "cluster gamma stopped\n")
    assert not running(pid)
    status = meshlab("status", "--name", "gamma", state=state)
    assert status.returncode == 3
    assert status.stdout == ("cluster gamma: not running (start it with `meshlab up --name "
                             "gamma`)\n")
    assert (state / "clusters" / "gamma" / "state.db").exists()
    again = meshlab("down", "--name", "gamma", state=state)
    assert (again.returncode, again.stdout) == (0, "cluster gamma was not running\n")


@pytest.mark.parametrize("name", ["Bad_Name", "-lead", "x" * 41, "a/b"])
def test_invalid_name(state: Path, name: str) -> None:
    """Does an invalid `--name` give one clear line and exit 1, creating nothing?"""
    result = meshlab("up", f"--name={name}", state=state)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert re.fullmatch(
        rf"meshlab: cluster name {re.escape(repr(name))} is not valid: use 1-40 lower-case "
        r"letters, digits and '-', starting and ending with a letter or digit "
        r"\(e\.g\. 'student-07'\)\n", result.stderr), result.stderr
    assert {p.name for p in (state / "clusters").iterdir()} <= {"alpha", "beta", "gamma"}


def test_environment_selects_the_cluster(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Do MESHLAB_CLUSTER / MESHLAB_STATE_DIR / MESHLAB_CONTEXT select the cluster that
    `current_cluster()` and the CLI use?"""
    monkeypatch.delenv("MESHLAB_CONTEXT", raising=False)
    monkeypatch.setenv("MESHLAB_STATE_DIR", str(state))
    monkeypatch.setenv("MESHLAB_CLUSTER", "alpha")
    pid = endpoint(state, "alpha")["pid"]
    ref = current_cluster()
    assert (ref.context, ref.kubeconfig) == ("alpha", state / "clusters" / "alpha" / "kubeconfig")
    assert ref.embedded is not None and ref.embedded.status().running
    assert endpoint(state, "alpha")["pid"] == pid  # reused, not restarted
    assert ref.kubectl("get", "ns", "default", "-o", "name").stdout == "namespace/default\n"

    monkeypatch.setenv("MESHLAB_CLUSTER", "delta")
    lazy = current_cluster(start=False)
    assert (lazy.context, lazy.kubeconfig) == ("delta", state / "clusters" / "delta" / "kubeconfig")
    assert lazy.embedded is not None and not lazy.embedded.status().running
    assert not (state / "clusters" / "delta" / "endpoint.json").exists()

    monkeypatch.delenv("MESHLAB_CLUSTER")
    assert current_cluster(start=False).context == "meshlab"

    monkeypatch.setenv("MESHLAB_CONTEXT", "kind-student-1")
    monkeypatch.setenv("KUBECONFIG", f"/tmp/one.yaml{os.pathsep}/tmp/two.yaml")
    assert current_cluster() == ClusterRef(Path("/tmp/one.yaml"), "kind-student-1")

    by_env = meshlab("status", "-o", "json", state=state, env={"MESHLAB_CLUSTER": "alpha"})
    assert json.loads(by_env.stdout)["name"] == "alpha"
    assert json.loads(by_env.stdout)["pid"] == pid


def test_daemon_stops_when_its_state_dir_is_deleted(tmp_path: Path) -> None:
    """Does a daemon whose state directory disappears stop by itself (nothing lingers)?"""
    cluster = EmbeddedCluster("orphan", tmp_path)
    cluster.up()
    pid = endpoint(tmp_path, "orphan")["pid"]
    try:
        # The running daemon and its Envoys keep writing files while the tree goes, as they would
        # while pytest removes an old temp dir: delete until nothing is left.
        poll(lambda: shutil.rmtree(cluster.paths.dir, ignore_errors=True)
             or not cluster.paths.dir.exists(), "the state directory to be deleted", timeout=10)
        deadline = time.monotonic() + 60  # shutdown stops pods, Envoys, Prometheus
        while running(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not running(pid), "the daemon kept running without its state directory"
    finally:
        if running(pid):
            os.kill(pid, signal.SIGKILL)
