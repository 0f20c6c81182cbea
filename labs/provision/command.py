"""`meshlab cluster create|delete` (the kind backend) and `meshlab workshop up|down|status`
(registered in labs/cli.py). The modules that do the work are imported when a command runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from labs.provision.steps import RETRY_DELAY_S
from labs.setup.figures import KIND_API_PORT, KIND_INGRESS_PORT

if TYPE_CHECKING:
    from labs.provision.workshop import Participant

CLUSTER_HELP = ("a student's kind cluster with the pinned Kubernetes, Gateway API CRDs, mesh, "
                "add-ons and Flagger (embedded clusters: `meshlab up`/`down`)")
WORKSHOP_HELP = ("one environment per roster participant: a capacity plan, then clusters "
                 "started in parallel with live progress and a summary table")


def _error(message: object) -> int:
    print(f"meshlab: {message}", file=sys.stderr)
    return 1


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError("run from 1 to 256 at once")
    return value


def _slot(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= 1000:
        raise argparse.ArgumentTypeError("slots run from 0 to 1000")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 600:
        raise argparse.ArgumentTypeError("give 0 to 600 seconds")
    return value


def _creation_options(parser: argparse.ArgumentParser) -> None:
    from labs.provision.kind_plan import MESHES

    parser.add_argument("--mesh", choices=MESHES, default="istio",
                        help="the mesh to install (default: istio; ambient: Istio's ambient "
                        "profile; none: Gateway API CRDs only)")
    parser.add_argument("--image-cache", type=Path, metavar="DIR",
                        help="a folder of `docker save` archives of the sample images, loaded "
                        "and preloaded into each node with `kind load docker-image`")
    parser.add_argument("--keep-on-failure", action="store_true",
                        help="keep a half-created cluster for debugging (default: delete it)")
    parser.add_argument("--retry-delay", type=_seconds, default=RETRY_DELAY_S,
                        metavar="SECONDS", help="pause between attempts of a readiness check "
                        f"(default: {RETRY_DELAY_S:g})")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the commands, in order, and run nothing")


def configure_cluster(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser(
        "create", help="create a student's kind cluster and install the mesh",
        description="Create the kind cluster meshlab-<student> (its own API server port and "
        "ingress port on 127.0.0.1), install the Gateway API CRDs, the mesh, the add-ons and "
        "Flagger, verify each, and print the MESHLAB_CONTEXT line that points the labs at it.")
    for action in (create, actions.add_parser("delete", help="delete a student's kind "
                                              "cluster (`kind delete cluster`)")):
        action.add_argument("--backend", choices=("kind",), default="kind",
                            help="kind (the only backend these commands manage)")
        action.add_argument("--student", required=True, metavar="NAME",
                            help="the student; the cluster is meshlab-NAME, its context "
                            "kind-meshlab-NAME")
        action.add_argument("--kubeconfig", type=Path, metavar="FILE",
                            help="the kubeconfig kind writes the context to (default: "
                            "$KUBECONFIG or ~/.kube/config)")
    create.add_argument("--slot", type=_slot, default=0, metavar="N",
                        help="the student's number on this host: API server on port "
                        f"{KIND_API_PORT}+N, ingress on {KIND_INGRESS_PORT}+N (default: 0)")
    _creation_options(create)
    create.set_defaults(func=cmd_cluster_create)
    actions.choices["delete"].add_argument("--dry-run", action="store_true",
                                           help="print the command and run nothing")
    actions.choices["delete"].set_defaults(func=cmd_cluster_delete)


def _progress(line: str) -> None:
    print(line, flush=True)


def cmd_cluster_create(args: argparse.Namespace) -> int:
    from labs.provision.kind import Options, ProvisionError, create, script
    from labs.provision.kind_plan import KindTarget, PlanError, create_plan
    from labs.provision.run import ToolNotFound
    from labs.versions import VersionsError

    try:
        target = KindTarget(args.student, args.slot, args.mesh, args.image_cache,
                            args.kubeconfig)
        if args.dry_run:
            print(script(create_plan(target)))
            return 0
        options = Options(args.keep_on_failure, args.retry_delay)
        line = create(target, _progress, options)
    except (PlanError, ProvisionError, ToolNotFound, VersionsError) as exc:
        return _error(exc)
    print(f"kind cluster {target.cluster} is ready; ingress on http://localhost:"
          f"{target.ingress_port}/\nuse it in the labs with:\n  export {line}")
    return 0


def cmd_cluster_delete(args: argparse.Namespace) -> int:
    from labs.provision.kind import ProvisionError, delete, script
    from labs.provision.kind_plan import KindTarget, PlanError, delete_plan
    from labs.provision.run import ToolNotFound

    try:
        target = KindTarget(args.student, kubeconfig=args.kubeconfig)
        if args.dry_run:
            print(script(delete_plan(target)))
            return 0
        delete(target, _progress)
    except (PlanError, ProvisionError, ToolNotFound) as exc:
        return _error(exc)
    print(f"kind cluster {target.cluster} deleted")
    return 0


def _default_parallel() -> int:
    from labs.setup.host import cpu_cores

    return max(1, int(cpu_cores()))


def configure_workshop(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    up = actions.add_parser("up", help="start every participant's environment",
                            description="Check the host can hold the class (the capacity "
                            "plan; refused when it cannot), then start one cluster per roster "
                            "participant, N at a time, and print each one's access details.")
    down = actions.add_parser("down", help="stop (embedded) or delete (kind) every "
                              "participant's cluster")
    status = actions.add_parser("status", help="each participant's cluster: is its API "
                                "answering, how many pods are ready")
    for action in (up, down, status):
        action.add_argument("--roster", required=True, type=Path, metavar="FILE",
                            help="the class roster, YAML or CSV (as `meshlab board --roster`)")
        action.add_argument("--parallel", type=_count, default=None, metavar="N",
                            help="how many at once (default: this host's cores)")
    up.add_argument("--backend", choices=("embedded", "kind"), required=True,
                    help="embedded clusters (`cluster` rows) or kind clusters (`context` rows "
                    "naming kind-meshlab-<student>)")
    _creation_options(up)
    down.add_argument("--dry-run", action="store_true", help="print what would be stopped or "
                      "deleted, and do nothing")
    up.set_defaults(func=cmd_workshop_up)
    down.set_defaults(func=cmd_workshop_down)
    status.set_defaults(func=cmd_workshop_status)


def _participants(args: argparse.Namespace, backend: str | None) -> list[Participant]:
    from labs.cluster.roster import load_roster
    from labs.provision.workshop import participants

    return participants(load_roster(args.roster), backend, getattr(args, "mesh", "istio"),
                        getattr(args, "image_cache", None))


def cmd_workshop_up(args: argparse.Namespace) -> int:
    from labs.cluster.roster import RosterError
    from labs.provision import capacity, kind
    from labs.provision.kind_plan import create_plan, delete_plan
    from labs.provision.run import ToolNotFound, resolve
    from labs.provision.workshop import Progress, WorkshopError, dry_run, run_all, summary, up
    from labs.versions import VersionsError

    try:
        found = _participants(args, args.backend)
        if args.backend == "embedded":
            checks = capacity.embedded_plan([p.embedded.paths.root for p in found])
        else:
            checks = capacity.kind_plan(len(found))
        plan = capacity.describe(checks, args.backend, len(found))
        if args.dry_run:
            print(plan + "\n(dry run: nothing is refused or started)\n", file=sys.stderr)
            print(dry_run(found))
            return 0
        print(plan, flush=True)
        if not capacity.fits(checks):
            return _error(f"refusing to start {len(found)} {args.backend} environments: this "
                          "host cannot hold them (the failures above); fix them or use a "
                          "shorter roster")
        if args.backend == "kind":  # tools and images found before anything is created
            first = found[0].kind
            assert first is not None
            steps = create_plan(first) + delete_plan(first)
            resolve(tool for step in steps for tool in step.tools)
            kind.check_image_cache(first)
    except (RosterError, WorkshopError, ToolNotFound, VersionsError,
            kind.ProvisionError) as exc:
        return _error(exc)
    options = kind.Options(args.keep_on_failure, args.retry_delay)
    progress = Progress(sys.stdout)
    parallel = args.parallel or _default_parallel()
    print(f"starting {len(found)} {args.backend} environments, {parallel} at a time",
          flush=True)
    results = run_all(found, lambda p: up(p, progress, options), parallel)
    print(summary(results))
    return 0 if all(result.ok for result in results) else 1


def cmd_workshop_down(args: argparse.Namespace) -> int:
    from labs.cluster.roster import RosterError
    from labs.provision.workshop import (
        Progress,
        WorkshopError,
        down,
        down_script,
        run_all,
        summary,
    )

    try:
        found = _participants(args, None)
    except (RosterError, WorkshopError) as exc:
        return _error(exc)
    if args.dry_run:
        print(down_script(found))
        return 0
    progress = Progress(sys.stdout)
    results = run_all(found, lambda p: down(p, progress), args.parallel or _default_parallel())
    print(summary(results))
    return 0 if all(result.ok for result in results) else 1


def cmd_workshop_status(args: argparse.Namespace) -> int:
    from labs.cluster.roster import RosterError
    from labs.provision.workshop import WorkshopError, health, run_all, status_table

    try:
        found = _participants(args, None)
    except (RosterError, WorkshopError) as exc:
        return _error(exc)
    healths = run_all(found, health, args.parallel or _default_parallel())
    print(status_table(healths))
    return 0 if all(h.ok for h in healths) else 3
