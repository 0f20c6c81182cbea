"""The `meshlab` command: start and stop embedded clusters, open the course in JupyterLab (the
learner's workspace, or the instructor sources), and the course commands around them. Commands
of other packages (the grader's `meshlab grade`) join through the entry point group
`meshlab.commands`, so `labs` does not import them."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

from labs.board.command import BOARD_HELP, cmd_board, configure_board
from labs.catalog import CatalogError, load_catalog
from labs.checks.command import CHECK_HELP, cmd_check, configure_check
from labs.cluster import ClusterError, EmbeddedCluster
from labs.provision.command import (
    CLUSTER_HELP,
    WORKSHOP_HELP,
    configure_cluster,
    configure_workshop,
)
from labs.setup.command import (
    PREFLIGHT_HELP,
    TOOLS_HELP,
    cmd_preflight,
    configure_preflight,
    configure_tools,
)
from labs.workspace.catchup import CatchUpError
from labs.workspace.command import (
    PROGRESS_HELP,
    RESET_HELP,
    SOLVE_HELP,
    cmd_progress,
    cmd_reset,
    cmd_solve,
    configure_progress,
    configure_reset,
    configure_solve,
)

COURSE_ROOT = Path(__file__).resolve().parents[1]
COMMANDS_GROUP = "meshlab.commands"


def _cluster(args: argparse.Namespace) -> EmbeddedCluster:
    return EmbeddedCluster(args.name or os.environ.get("MESHLAB_CLUSTER"),
                           args.state_dir or os.environ.get("MESHLAB_STATE_DIR"))


def cmd_up(args: argparse.Namespace) -> int:
    print(_cluster(args).up())
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    stopped = cluster.down()
    print(f"cluster {cluster.name} {'stopped' if stopped else 'was not running'}")
    return 0


def cmd_kubeconfig(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    if not cluster.kubeconfig.exists():
        print(f"cluster {cluster.name} has no kubeconfig yet: run `meshlab up --name "
              f"{cluster.name}`", file=sys.stderr)
        return 1
    print(cluster.kubeconfig)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = _cluster(args).status()
    if args.output == "json":
        print(json.dumps({"name": status.name, "running": status.running, "pid": status.pid,
                          "port": status.port, "kubeconfig": str(status.kubeconfig),
                          "stateDir": str(status.state_dir)}))
    elif status.running:
        print(f"cluster {status.name}: running (pid {status.pid}, API on 127.0.0.1:"
              f"{status.port})\nkubeconfig: {status.kubeconfig}")
    else:
        print(f"cluster {status.name}: not running (start it with `meshlab up --name "
              f"{status.name}`)")
    return 0 if status.running else 3


def learner_workspace(workspace: str | None, env: dict[str, str]) -> list[str]:
    """Create or update the learner's workspace; the JupyterLab options that open it in
    learner mode (instructor tools off, the course home first). Also used by the JupyterHub
    single-user launcher (labs/hub/singleuser.py)."""
    from labs.workspace.home import HOME_NOTEBOOK
    from labs.workspace.jupyter import learner_config_dir
    from labs.workspace.sync import WORKSPACE_ENV, Workspace, workspace_root

    root = workspace_root(workspace)
    for line in Workspace(root).sync(load_catalog()).messages():
        print(line, flush=True)
    config = learner_config_dir(root)
    env[WORKSPACE_ENV] = str(root)
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(
        [str(config), *filter(None, [os.environ.get("JUPYTER_CONFIG_PATH")])])
    return [f"--ServerApp.root_dir={root}", f"--LabApp.default_url=/lab/tree/{HOME_NOTEBOOK}"]


def cmd_lab(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    kubeconfig = cluster.up()
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "MESHLAB_CLUSTER": cluster.name,
           "MESHLAB_STATE_DIR": str(cluster.paths.root)}
    where = ([f"--ServerApp.root_dir={COURSE_ROOT}"] if args.instructor
             else learner_workspace(args.workspace, env))
    command = [sys.executable, "-m", "jupyterlab", *where,
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={args.port}"]
    if args.no_browser:
        command.append("--no-browser")
    if os.geteuid() == 0:  # containers and JupyterHub pods often run as root
        command.append("--allow-root")
    mode = "instructor sources" if args.instructor else f"workspace {env['MESHLAB_WORKSPACE']}"
    print(f"cluster {cluster.name} is up (KUBECONFIG={kubeconfig}); starting JupyterLab on the "
          f"{mode}", flush=True)
    os.execve(sys.executable, command, env)
    return 0  # not reached: execve replaces this process


def add_command(sub: argparse._SubParsersAction, name: str,
                func: Callable[[argparse.Namespace], int],
                help_text: str, *, one_cluster: bool = True) -> argparse.ArgumentParser:
    """A subcommand with the cluster-selection options the commands share (`--name` only for
    commands that act on one cluster)."""
    p = sub.add_parser(name, help=help_text, description=help_text)
    if one_cluster:
        p.add_argument("--name", help="cluster name (default: $MESHLAB_CLUSTER or 'meshlab')")
    p.add_argument("--state-dir", help="where clusters keep their state "
                   "(default: $MESHLAB_STATE_DIR or ~/.meshlab)")
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_command(sub, "up", cmd_up, "start an embedded cluster in the background and print its "
                "kubeconfig path (does nothing if it is running)")
    add_command(sub, "down", cmd_down, "stop an embedded cluster and its pods; its objects stay "
                "on disk")
    add_command(sub, "kubeconfig", cmd_kubeconfig, "print the path of a cluster's kubeconfig")
    status = add_command(sub, "status", cmd_status, "say whether a cluster runs, and where")
    status.add_argument("-o", "--output", choices=("text", "json"), default="text")
    lab = add_command(sub, "lab", cmd_lab, "start the cluster and open the course in JupyterLab: "
                      "your workspace of student notebooks (created or updated first)")
    lab.add_argument("--no-browser", action="store_true",
                     help="do not open a browser (servers, containers, CI)")
    lab.add_argument("--port", type=int, default=8888, help="JupyterLab port on 127.0.0.1")
    where = lab.add_mutually_exclusive_group()
    where.add_argument("--workspace", help="the learner workspace (default: "
                       "$MESHLAB_WORKSPACE or ~/meshlab/course)")
    where.add_argument("--instructor", action="store_true", help="open the instructor sources "
                       "(solutions, hidden tests, nbgrader's instructor tools) instead")
    configure_check(add_command(sub, "check", cmd_check, CHECK_HELP))
    configure_progress(add_command(sub, "progress", cmd_progress, PROGRESS_HELP))
    configure_solve(add_command(sub, "solve", cmd_solve, SOLVE_HELP))
    configure_reset(add_command(sub, "reset", cmd_reset, RESET_HELP))
    configure_board(add_command(sub, "board", cmd_board, BOARD_HELP))
    configure_tools(sub.add_parser("tools", help=TOOLS_HELP, description=TOOLS_HELP))
    configure_preflight(add_command(sub, "preflight", cmd_preflight, PREFLIGHT_HELP,
                                    one_cluster=False))
    configure_cluster(sub.add_parser("cluster", help=CLUSTER_HELP, description=CLUSTER_HELP))
    configure_workshop(sub.add_parser("workshop", help=WORKSHOP_HELP, description=WORKSHOP_HELP))
    for hook in entry_points(group=COMMANDS_GROUP):
        hook.load()(functools.partial(add_command, sub))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ClusterError, CatalogError, CatchUpError) as exc:
        print(f"meshlab: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `meshlab check ... | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a shell reports a command killed by SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
