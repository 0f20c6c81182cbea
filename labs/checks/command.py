"""`meshlab check LAB_ID`: run a lab's public checks against a cluster from the terminal.

Exit codes: 0 when no check failed (warnings do not fail), 1 when a check failed or the cluster
cannot be reached, 2 for an unknown lab id or bad options. Hidden checks are never run or listed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from labs.checks.context import CheckContext
from labs.checks.registry import UnknownCheck, find
from labs.checks.render import TextLines, render_json
from labs.checks.runner import Result, run_checks
from labs.cluster import ClusterError, ClusterRef, current_cluster

SELECTION_VARIABLES = ("MESHLAB_CONTEXT", "MESHLAB_CLUSTER", "MESHLAB_STATE_DIR")


def add_context_option(parser: argparse.ArgumentParser) -> None:
    """`--context`, the kube-context alternative to the shared `--name`."""
    parser.add_argument("--context", help="use the cluster of this kube context (in "
                        "$KUBECONFIG), as MESHLAB_CONTEXT does; instead of --name")


@contextmanager
def selected(args: argparse.Namespace) -> Iterator[None]:
    """The options as the environment `current_cluster` reads (one rule for every reader),
    restored afterwards: `--context` is MESHLAB_CONTEXT; `--name`/`--state-dir` pick an
    embedded cluster even when MESHLAB_CONTEXT is set."""
    if args.context and args.name:
        raise ClusterError("use --name (an embedded cluster) or --context (a kube context), "
                           "not both")
    saved = {key: os.environ.get(key) for key in SELECTION_VARIABLES}
    try:
        if args.context:
            os.environ["MESHLAB_CONTEXT"] = args.context
        elif args.name or args.state_dir:
            os.environ.pop("MESHLAB_CONTEXT", None)
            for key, value in (("MESHLAB_CLUSTER", args.name),
                               ("MESHLAB_STATE_DIR", args.state_dir)):
                if value:
                    os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def target(args: argparse.Namespace) -> ClusterRef:
    """The cluster the options select, which must be running."""
    with selected(args):
        ref = current_cluster(start=False)
    if ref.embedded is not None and not ref.embedded.status().running:
        raise ClusterError(f"cluster {ref.embedded.name} is not running: start it with "
                           f"`meshlab up --name {ref.embedded.name}`")
    return ref


def cmd_check(args: argparse.Namespace) -> int:
    try:
        checks = find(args.lab_id)
    except UnknownCheck as exc:
        print(f"meshlab check: {exc}", file=sys.stderr)
        return 2
    context = CheckContext(target(args))
    lines = TextLines()

    def show(result: Result) -> None:
        if args.output == "text":
            print("\n".join(lines.result(result)), flush=True)

    report = run_checks(args.lab_id, checks, context, on_result=show)
    if args.output == "json":
        sys.stdout.write(render_json(report))
    else:
        print("\n".join(lines.summary(report)))
    return 0 if report.ok else 1


def configure_check(parser: argparse.ArgumentParser) -> None:
    """The options `meshlab check` adds to the shared --name/--state-dir."""
    parser.add_argument("lab_id", metavar="LAB_ID",
                        help="a lab such as day1.mtls (or one check id, or a prefix: day1)")
    add_context_option(parser)
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text",
                        help="text (each check as it completes) or JSON (at the end)")


CHECK_HELP = "check your work: run a lab's checks against your cluster (✔ / ‼ / × with hints)"
