"""Does `meshlab lab --no-browser` bring up the cluster and a JupyterLab serving the learner's
workspace (instructor tools off), and `--instructor` one serving the sources?"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from jupyterlab_browser import free_port, stop_group

from labs.cluster import EmbeddedCluster


def _get(url: str, token: str = "") -> tuple[int, dict | None]:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


def _token(runtime: Path) -> str:
    """The server's token, from the file JupyterLab writes into its runtime directory."""
    found = sorted(runtime.glob("jpserver-*.json"))
    return str(json.loads(found[0].read_text())["token"]) if found else ""


@pytest.mark.parametrize("mode", ["learner", "instructor"])
def test_lab_starts_cluster_and_jupyterlab(tmp_path: Path, mode: str) -> None:
    """Is the named cluster running and JupyterLab answering on 127.0.0.1 once `lab` starts,
    serving the workspace without the formgrader (learner) or the sources with it?"""
    port = free_port()
    runtime, workspace = tmp_path / "jupyter-runtime", tmp_path / "workspace"
    env = {**os.environ, "MESHLAB_STATE_DIR": str(tmp_path), "JUPYTER_RUNTIME_DIR":
           str(runtime), "JUPYTER_CONFIG_DIR": str(tmp_path / "jconf"),
           "MESHLAB_WORKSPACE": str(workspace)}
    lab = subprocess.Popen(
        [sys.executable, "-m", "labs.cli", "lab", "--name", "lab", "--no-browser",
         "--port", str(port), *(["--instructor"] if mode == "instructor" else [])],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    cluster = EmbeddedCluster("lab", tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        info = None
        while time.monotonic() < deadline and info is None and lab.poll() is None:
            info = _get(f"{base}/api")[1]
            time.sleep(0.3)
        assert info is not None, f"JupyterLab did not answer on port {port}"
        assert "version" in info
        assert cluster.status().running
        token = _token(runtime)
        status, listing = _get(f"{base}/api/contents/", token)
        assert status == 200 and listing is not None
        names = {item["name"] for item in listing["content"]}
        formgrader = _get(f"{base}/formgrader", token)[0]
        if mode == "learner":
            assert {"course-home.ipynb", "day1", "day2"} <= names
            assert "BEGIN SOLUTION" not in (workspace / "day1" / "02-traffic.ipynb").read_text()
            assert formgrader == 404
        else:
            assert {"day1", "grader", "labs", "course.yaml"} <= names
            assert not workspace.exists()
            assert formgrader != 404
    finally:
        stop_group(lab)
        cluster.down()
    output = lab.stdout.read().decode(errors="replace") if lab.stdout else ""
    assert "cluster lab is up" in output
    assert ("instructor sources" if mode == "instructor" else f"workspace {workspace}") in output
