"""Does `meshlab lab --no-browser` bring up the cluster and a JupyterLab serving the course?"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from labs.cluster import EmbeddedCluster


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get_json(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def test_lab_starts_cluster_and_jupyterlab(tmp_path: Path) -> None:
    """Is the named cluster running and JupyterLab answering on 127.0.0.1 once `lab` starts?"""
    port = _free_port()
    env = {**os.environ, "MESHLAB_STATE_DIR": str(tmp_path), "JUPYTER_RUNTIME_DIR":
           str(tmp_path / "jupyter-runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "jconf")}
    lab = subprocess.Popen(
        [sys.executable, "-m", "labs.cli", "lab", "--name", "lab", "--no-browser",
         "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    cluster = EmbeddedCluster("lab", tmp_path)
    try:
        deadline = time.monotonic() + 90
        info = None
        while time.monotonic() < deadline and info is None and lab.poll() is None:
            info = _get_json(f"http://127.0.0.1:{port}/api")
            time.sleep(0.3)
        assert info is not None, f"JupyterLab did not answer on port {port}"
        assert "version" in info
        assert cluster.status().running
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(lab.pid, signal.SIGTERM)
        try:
            lab.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(lab.pid, signal.SIGKILL)
            lab.wait(timeout=10)
        cluster.down()
    output = lab.stdout.read().decode(errors="replace") if lab.stdout else ""
    assert "cluster lab is up" in output
