"""Running the `linkerd` console script and kubectl against a test cluster, as a learner's shell
would: only KUBECONFIG selects the cluster (no MESHLAB_* variable leaks in from the test run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from labs.cluster import ClusterRef

LINKERD = str(Path(sys.executable).parent / "linkerd")
TIMEOUT_S = 120


def run(cluster: ClusterRef, *args: str, input: str | None = None,
        timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MESHLAB_") and k != "KUBECONFIG"}
    env["KUBECONFIG"] = str(cluster.kubeconfig)
    return subprocess.run([LINKERD, *args], capture_output=True, text=True, input=input,
                          timeout=timeout, env=env)


def kubectl(cluster: ClusterRef, *args: str, input: str | None = None,
            timeout: float = TIMEOUT_S) -> str:
    done = cluster.kubectl(*args, input=input, timeout=timeout)
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done.stdout


def install_linkerd(cluster: ClusterRef) -> None:
    """Linkerd's control plane as getting-started installs it (the cluster starts without it),
    its Deployments Available; running it again changes nothing."""
    for args in (("install", "--crds"), ("install",)):
        rendered = run(cluster, *args)
        assert rendered.returncode == 0, f"linkerd {' '.join(args)}: {rendered.stderr}"
        kubectl(cluster, "apply", "-f", "-", input=rendered.stdout)
    kubectl(cluster, "wait", "-n", "linkerd", "--for=condition=Available", "deployment",
            "--all", f"--timeout={TIMEOUT_S}s", timeout=TIMEOUT_S + 10)
