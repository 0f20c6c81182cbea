"""`linkerd viz ...` flags and dispatch (linkerd/linkerd2 `viz/cmd/root.go` and one file per
command). Errors are raised as `VizError`/`ResourceError`; labs/linkerd/cli.py prints them
cobra's way (`Error: ...`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from labs.cluster import ClusterRef
from labs.embedded.workload import host_ports
from labs.linkerd.kube import Kube
from labs.linkerd.viz import authz, edges, manifest, routes, stat, tap, top
from labs.linkerd.viz.prom import VizError
from labs.linkerd.viz.resources import ResourceError, build_resource, build_resources

DEFAULT_WINDOW = "1m"


def add_parser(sub: Any, common: argparse.ArgumentParser,
               duration: Any) -> None:
    """`viz` and its subcommands under the root parser's subcommands `sub`."""
    viz = sub.add_parser("viz", parents=[common], help="Manage the linkerd-viz extension")
    viz_sub = viz.add_subparsers(dest="viz_command", required=True,
                                 parser_class=type(common))
    viz_sub.add_parser("install", parents=[common],
                       help="Output Kubernetes resources to install linkerd-viz extension")
    viz_sub.add_parser("uninstall", parents=[common],
                       help="Output Kubernetes resources to uninstall the linkerd-viz extension")
    check = viz_sub.add_parser("check", parents=[common],
                               help="Check the Linkerd Viz extension for potential problems")
    check.add_argument("--proxy", action="store_true", help="Also run data-plane checks")
    check.add_argument("-n", "--namespace", default="",
                       help="Namespace to use for --proxy checks (default: all namespaces)")
    check.add_argument("-o", "--output", default="table", choices=["table", "json", "short"])
    check.add_argument("--wait", type=duration, default=300.0,
                       help="Maximum allowed time for all tests to pass (default 5m0s)")

    one = viz_sub.add_parser("stat", parents=[common],
                             help="Display traffic stats about one or many resources")
    one.add_argument("resources", nargs="*")
    one.add_argument("-n", "--namespace", default="", help="Namespace of the specified resource")
    one.add_argument("-A", "--all-namespaces", action="store_true",
                     help="If present, returns stats across all namespaces, ignoring the "
                     "\"--namespace\" flag")
    one.add_argument("-t", "--time-window", default=DEFAULT_WINDOW,
                     help='Stat window (for example: "15s", "1m", "10m", "1h"). Needs to be '
                     "at least 15s.")
    one.add_argument("--to", default="", help="If present, restricts outbound stats to the "
                     "specified resource name")
    one.add_argument("--to-namespace", default="")
    one.add_argument("--from", dest="from_", default="", help="If present, restricts "
                     "outbound stats from the specified resource name")
    one.add_argument("--from-namespace", default="")
    one.add_argument("--unmeshed", action="store_true",
                     help="If present, include unmeshed resources in the output")
    one.add_argument("-o", "--output", default="table", choices=["table", "json", "wide"],
                     help='Output format; one of: "table" or "json" or "wide"')

    edge = viz_sub.add_parser("edges", parents=[common], help="Display connections between "
                              "resources, and Linkerd proxy identities")
    edge.add_argument("resources", nargs="*")
    edge.add_argument("-n", "--namespace", default="", help="Namespace of the specified resource")
    edge.add_argument("-A", "--all-namespaces", action="store_true")
    edge.add_argument("-o", "--output", default="table", choices=["table", "json", "wide"])

    per_route = viz_sub.add_parser("routes", parents=[common],
                                   help="Display route stats (ServiceProfile routes)")
    per_route.add_argument("resources", nargs=1)
    per_route.add_argument("-n", "--namespace", default="",
                           help="Namespace of the specified resource")
    per_route.add_argument("-t", "--time-window", default=DEFAULT_WINDOW,
                           help='Stat window (for example: "10s", "1m", "10m", "1h")')

    policy = viz_sub.add_parser("authz", parents=[common], help="Display stats for server "
                                "authorizations for a resource")
    policy.add_argument("resources", nargs="+")
    policy.add_argument("-n", "--namespace", default="", help="Namespace of the specified "
                        "resource")
    policy.add_argument("-t", "--time-window", default=DEFAULT_WINDOW,
                        help='Stat window (for example: "15s", "1m", "10m", "1h"). Needs to '
                        "be at least 15s.")

    live = viz_sub.add_parser("tap", parents=[common], help="Listen to a traffic stream (on "
                              "the embedded cluster a request's events print once it ended)")
    _tap_flags(live)
    live.add_argument("-o", "--output", default="", choices=["", "wide", "json"],
                      help='Output format. One of: "wide", "json"')
    busiest = viz_sub.add_parser("top", parents=[common], help="Display sorted information "
                                 "about live traffic (without a terminal: printed at the end)")
    _tap_flags(busiest)
    busiest.add_argument("--hide-sources", action="store_true", help="Hide the source column")


def _tap_flags(live: argparse.ArgumentParser) -> None:
    """The request filters tap and top share (viz/tap/pkg TapRequestParams)."""
    live.add_argument("resources", nargs="+")
    live.add_argument("-n", "--namespace", default="", help="Namespace of the specified resource")
    live.add_argument("--to", default="", help="Display requests to this resource")
    live.add_argument("--to-namespace", default="")
    live.add_argument("--method", default="", help="Display requests with this HTTP method")
    live.add_argument("--path", default="", help="Display requests with paths that start with "
                      "this prefix")
    live.add_argument("--max-rps", type=float, default=100.0,
                      help="Maximum requests per second to tap.")


def _window_s(text: str, duration: Any) -> float:
    try:
        return float(duration(text))
    except (argparse.ArgumentTypeError, ValueError):
        raise ResourceError(f'time: invalid duration "{text}"') from None


def run(args: argparse.Namespace, kube: Kube, ref: ClusterRef, namespace: str,
        duration: Any) -> int:
    """Everything but `check` (labs/linkerd/cli.py runs the checks); namespace is `-n` or the
    kubeconfig context's."""
    command = args.viz_command
    if command == "install":
        sys.stdout.write(manifest.install_text())
        return 0
    if command == "uninstall":
        try:
            sys.stdout.write(manifest.uninstall_text(kube))
        except ValueError as err:
            raise VizError(str(err)) from None
        return 0
    targets = build_resources(namespace, list(args.resources))
    if command in ("tap", "top"):
        return cmd_tap(args, kube, ref, namespace, targets)
    if command == "authz":
        resource = build_resource(namespace, "/".join(args.resources[:2]))
        found = authz.rows(kube, resource, args.time_window,
                           _window_s(args.time_window, duration))
        sys.stdout.write(authz.render(found))
        return 0
    if command == "routes":
        options = stat.Options(namespace=namespace, all_namespaces=False,
                               window=args.time_window,
                               window_s=_window_s(args.time_window, duration), output="table")
        sys.stdout.write(routes.render(routes.route_rows(kube, targets[0], options),
                                       options.window_s))
        return 0
    if command == "edges":
        edges.validate(targets, args.output)
        rows = [e for t in targets
                for e in edges.edges(kube, t, args.all_namespaces, args.linkerd_namespace)]
        out, err = edges.render(rows, args.output)
    else:
        options = stat.Options(
            namespace=namespace, all_namespaces=args.all_namespaces,
            window=args.time_window, window_s=_window_s(args.time_window, duration),
            output=args.output, unmeshed=args.unmeshed,
            control_plane_ns=args.linkerd_namespace,
            from_res=(build_resource(args.from_namespace or namespace, args.from_)
                      if args.from_ else None),
            to_res=(build_resource(args.to_namespace or namespace, args.to)
                    if args.to else None))
        out, err = stat.stat(kube, options, targets)
    sys.stdout.write(out)
    sys.stderr.write(err)
    return 0


def cmd_tap(args: argparse.Namespace, kube: Kube, ref: ClusterRef, namespace: str,
            targets: list[Any]) -> int:
    if len(targets) != 1:
        raise ResourceError("please specify one resource to tap")
    to_ports = None
    if args.to:
        to = build_resource(args.to_namespace or namespace, args.to)
        to_ports = {port for pod in tap.meshed_pods(kube, to, args.linkerd_namespace)
                    for port in host_ports(pod).values()}
    filters = tap.Filters(to_ports=to_ports, method=args.method, path=args.path,
                          max_rps=args.max_rps)
    if args.viz_command == "top":
        return top.top(ref, kube, targets[0], filters, args.hide_sources, args.linkerd_namespace)
    return tap.tap(ref, kube, targets[0], filters, args.output, args.linkerd_namespace)
