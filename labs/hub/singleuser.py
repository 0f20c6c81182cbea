"""The command JupyterHub spawns for a participant, as that participant: start their own
embedded cluster, create or update their workspace, run `jupyterhub-singleuser` on it, and stop
the cluster when the server stops (the hub's stop, idle culling, or a crash).

`python -m labs.hub.singleuser [jupyterhub-singleuser options]`: the options the spawner
passes (port, base URL...) go through unchanged. The cluster is `$MESHLAB_CLUSTER` (the spawner
sets the user name) under `$MESHLAB_STATE_DIR` (default ~/.meshlab, so in their home).

The server runs as a child, not in place of this process (exec), so that a stop can be
followed by `meshlab down`: SIGINT/SIGTERM from LocalProcessSpawner are passed to the server,
then the cluster is stopped. A SIGKILL (the spawner's last resort) leaves the cluster running;
the spawner (grader/hub/spawner.py) then ends what is left in the server's control group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from types import FrameType

from labs.catalog import CatalogError
from labs.cli import learner_workspace
from labs.cluster import ClusterError, EmbeddedCluster

# `jupyterhub-singleuser` of this Python (PATH may hold another)
SINGLEUSER = (sys.executable, "-m", "jupyterhub.singleuser")


def server_command(argv: list[str], env: dict[str, str]) -> list[str]:
    """jupyterhub-singleuser on the learner workspace (learner mode, course home first)."""
    from labs.workspace.home import HOME_NOTEBOOK

    where = learner_workspace(None, env)
    return [*SINGLEUSER, *where, f"--ServerApp.default_url=/lab/tree/{HOME_NOTEBOOK}", *argv]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cluster = EmbeddedCluster(os.environ.get("MESHLAB_CLUSTER"),
                              os.environ.get("MESHLAB_STATE_DIR"))
    try:
        kubeconfig = cluster.up()
    except ClusterError as exc:
        print(f"meshlab hub: cannot start your cluster: {exc}", file=sys.stderr)
        return 1
    print(f"meshlab hub: cluster {cluster.name} is up (KUBECONFIG={kubeconfig})", flush=True)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "MESHLAB_CLUSTER": cluster.name,
           "MESHLAB_STATE_DIR": str(cluster.paths.root)}
    try:
        server = subprocess.Popen(server_command(argv, env), env=env)
    except (CatalogError, OSError) as exc:
        cluster.down()
        print(f"meshlab hub: cannot start your server: {exc}", file=sys.stderr)
        return 1

    def forward(signum: int, _frame: FrameType | None) -> None:
        server.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    try:
        code = server.wait()
    finally:
        stopped = cluster.down()
        print(f"meshlab hub: cluster {cluster.name} "
              f"{'stopped' if stopped else 'was not running'}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
