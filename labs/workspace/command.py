"""`meshlab progress`, `meshlab solve` and `meshlab reset`: the learner's course from a
terminal (registered in labs/cli.py through its `add_command`)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from labs.catalog import load_catalog
from labs.checks.command import add_context_option, selected, target
from labs.cluster import CLUSTER_VARIABLES, ClusterError
from labs.workspace.catchup import reset, solve

PROGRESS_HELP = "your progress per lab: checks passed, points, solutions shown"
SOLVE_HELP = ("catch up: run a lab's instructor notebook (papermill) against your cluster, so it "
              "is where that lab leaves it")
RESET_HELP = "start a lab over: delete what it created (every lab's, without LAB)"


def _common(parser: argparse.ArgumentParser) -> None:
    add_context_option(parser)
    parser.add_argument("--workspace", help="the learner workspace (default: "
                        "$MESHLAB_WORKSPACE or ~/meshlab/course)")


def configure_progress(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")


def configure_solve(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("lab", metavar="LAB", help="the lab to catch up on, e.g. day1.traffic")
    parser.add_argument("--through", metavar="LAB",
                        help="also every lab after LAB up to this one, in course order")


def configure_reset(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("lab", metavar="LAB", nargs="?",
                        help="the lab to start over, e.g. day1.traffic (default: every lab)")
    parser.add_argument("--lab", dest="lab_option", metavar="LAB", help="the same as LAB")
    parser.add_argument("--student", metavar="NAME", help="instructor: reset this student's "
                        "cluster, found in --roster (embedded or kube context)")
    parser.add_argument("--roster", metavar="FILE", help="with --student: the YAML or CSV "
                        "roster of `meshlab board` and `meshlab workshop`")


def workspace_root(explicit: str | None) -> Path:
    """labs.workspace.sync's, imported on use: the workspace modules read notebooks (nbformat,
    nbgrader: about a second of imports), which every `meshlab up` would otherwise pay for."""
    from labs.workspace.sync import workspace_root as root

    return root(explicit)


def cmd_progress(args: argparse.Namespace) -> int:
    from labs.workspace.progress import progress, render_text

    rows = progress(load_catalog(), target(args), workspace_root(args.workspace))
    if args.output == "json":
        print(json.dumps({"labs": [row.as_dict() for row in rows]}, indent=1))
    else:
        print(render_text(rows))
    return 0


def cmd_solve(args: argparse.Namespace) -> int:
    catalog = load_catalog()
    labs = catalog.through(args.lab, args.through)
    with selected(args):
        target(args)  # fails early, with `meshlab up` in the message, if it is not running
        selection = {k: os.environ[k] for k in CLUSTER_VARIABLES if k in os.environ}
    output_dir = workspace_root(args.workspace) / "solved"
    print(f"solving {', '.join(lab.id for lab in labs)} on your cluster; executed notebooks "
          f"go to {output_dir}", flush=True)
    for path in solve(labs, catalog.source, selection, output_dir):
        print(f"done: {path}")
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    from labs.workspace.student_reset import student_cluster

    if args.lab and args.lab_option and args.lab != args.lab_option:
        raise ClusterError(f"two labs given ({args.lab}, {args.lab_option}): give one")
    if args.student and (args.name or args.context or args.state_dir):
        raise ClusterError("--student finds the cluster in --roster: leave out --name, "
                           "--context and --state-dir")
    if args.roster and not args.student:
        raise ClusterError("--roster goes with --student NAME (whose cluster to reset)")
    catalog = load_catalog()
    chosen = args.lab or args.lab_option
    labs = [catalog.lab(chosen)] if chosen else catalog.labs
    cluster = student_cluster(args.roster, args.student) if args.student else target(args)
    reset(labs, cluster)
    who = f"student {args.student}: " if args.student else ""
    print(f"{who}reset {', '.join(lab.id for lab in labs)}: run the lab again from its first "
          "cell")
    return 0
