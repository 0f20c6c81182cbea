"""The `linkerd` console script: parse linkerd's flags, serve the embedded cluster, hand any
other cluster to the real binary. Errors print as cobra does (`Error: ...` on stderr), exit 1.

Commands (linkerd/linkerd2 `cli/cmd/`): `version`, `install [--crds]`, `check`, `inject`,
`uninject`, `identity`, `diagnostics proxy-metrics`, and the viz extension's (`viz/cmd/`,
labs/linkerd/viz): `viz install|uninstall|check|stat|edges|routes|authz|tap|top`.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from labs.cluster import ClusterError, ClusterRef
from labs.duration import parse_go_duration
from labs.embedded.mesh.linkerd.injection import (
    CONFIG_MAP,
    TRUST_ROOTS_CONFIGMAP,
    InjectionError,
    ProxyValues,
    config_values,
    values_from_objects,
)
from labs.istioctl.cli import _context_namespace  # the kubeconfig context's namespace
from labs.istioctl.handover import select
from labs.linkerd import (
    diagnostics,
    handover,
    healthcheck,
    identity,
    inject,
    install,
    viz_checks,
)
from labs.linkerd.checks import Context
from labs.linkerd.kube import Kube, KubeError
from labs.linkerd.viz import cli as viz_cli
from labs.linkerd.viz.prom import VizError
from labs.linkerd.viz.resources import ResourceError, build_resource
from labs.versions import version

EXIT_ERROR = 1
DEFAULT_WAIT_S = 300.0  # `linkerd check --wait` default: 5m0s
PROXY_NOTE = ("note: on the embedded cluster each linkerd-proxy is a real Envoy playing "
              "linkerd2-proxy's part; its version is the pinned Linkerd version\n")


class UsageError(Exception):
    """Bad flags or arguments."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # raise, don't exit 2
        raise UsageError(message)


def _duration(text: str) -> float:
    """Go durations as `--wait` takes them: 5m, 300s, 1m30s."""
    try:
        return parse_go_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def build_parser() -> Parser:
    common = Parser(add_help=False)
    common.add_argument("--kubeconfig", help="Path to the kubeconfig file")
    common.add_argument("--context", help="Name of the kubeconfig context to use")
    common.add_argument("-L", "--linkerd-namespace", default="linkerd",
                        help="Namespace in which Linkerd is installed")
    root = Parser(prog="linkerd", parents=[common],
                  description="linkerd manages the Linkerd service mesh (meshlab embedded "
                  "cluster; other clusters are handed to the real linkerd)")
    sub = root.add_subparsers(dest="command", required=True, parser_class=Parser)

    ver = sub.add_parser("version", parents=[common],
                         help="Print the client and server version information")
    ver.add_argument("--client", action="store_true", help="Print the client version only")
    ver.add_argument("--short", action="store_true",
                     help="Print the version number(s) only, with no additional output")
    ver.add_argument("--proxy", action="store_true", help="Print data-plane versions")
    ver.add_argument("-n", "--namespace", default="",
                     help="Namespace to use for --proxy versions (default: all namespaces)")

    install = sub.add_parser("install", parents=[common],
                             help="Output Kubernetes configs to install Linkerd")
    install.add_argument("--crds", action="store_true",
                         help="Install Linkerd CRDs")
    check = sub.add_parser("check", parents=[common],
                           help="Check the Linkerd installation for potential problems")
    check.add_argument("--pre", action="store_true",
                       help="Only run pre-installation checks")
    check.add_argument("--proxy", action="store_true", help="Only run data-plane checks")
    check.add_argument("-n", "--namespace", default="",
                       help="Namespace to use for --proxy checks (default: all namespaces)")
    check.add_argument("-o", "--output", default="table", choices=["table", "json", "short"])
    check.add_argument("--wait", type=_duration, default=DEFAULT_WAIT_S,
                       help="Maximum allowed time for all tests to pass (default 5m0s)")

    for name, text in (("inject", "Add the Linkerd proxy to a Kubernetes config"),
                       ("uninject", "Remove the Linkerd proxy from a Kubernetes config")):
        one = sub.add_parser(name, parents=[common], help=text)
        one.add_argument("config", nargs="?", help="file, folder, https URL, or - for stdin")
        one.add_argument("-o", "--output", default="yaml", choices=["yaml", "json"])
        if name == "inject":
            one.add_argument("--manual", action="store_true",
                             help="Include the proxy sidecar container spec in the YAML output")
            one.add_argument("--ignore-cluster", action="store_true",
                             help="Ignore the current Kubernetes cluster")

    ident = sub.add_parser("identity", parents=[common],
                           help="Display the certificate(s) of one or more selected pod(s)")
    ident.add_argument("pods", nargs="*")
    ident.add_argument("-n", "--namespace", default="", help="Namespace of the pod")
    ident.add_argument("-l", "--selector", default="", help="Selector (label query)")
    diag = sub.add_parser("diagnostics", parents=[common],
                          help="Commands used to diagnose Linkerd components")
    diag_sub = diag.add_subparsers(dest="diagnostics_command", required=True,
                                   parser_class=Parser)
    metrics = diag_sub.add_parser("proxy-metrics", parents=[common],
                                  help="Fetch metrics directly from Linkerd proxies")
    metrics.add_argument("resource", help="po/NAME, deploy/NAME, ...")
    metrics.add_argument("-n", "--namespace", default="", help="Namespace of resource")
    viz_cli.add_parser(sub, common, _duration)
    return root


def _peek(argv: list[str]) -> argparse.Namespace:
    """Only --kubeconfig and --context, wherever they are, to pick the cluster first."""
    peek = Parser(add_help=False)
    peek.add_argument("--kubeconfig")
    peek.add_argument("--context")
    return peek.parse_known_args(argv)[0]


def main(argv: list[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        peek = _peek(args_list)
        selection = select(peek.kubeconfig, peek.context)
        if selection.ref is None:
            return handover.hand_over(args_list)
        args = build_parser().parse_args(namespace_after_command(args_list))
        return run(args, selection.ref)
    except UsageError as exc:
        print(f"Error: {exc}\nRun 'linkerd --help' for usage.", file=sys.stderr)
        return EXIT_ERROR
    except install.InstallError as exc:  # printed bare, as install.go does
        print(exc, file=sys.stderr)
        return EXIT_ERROR
    except (ClusterError, KubeError, InjectionError, inject.InjectError,
            identity.IdentityError, VizError, ResourceError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_ERROR


GROUPS = ("viz", "diagnostics")  # commands whose subcommand comes next
VALUE_FLAGS = ("--kubeconfig", "--context", "-L", "--linkerd-namespace")


def namespace_after_command(argv: list[str]) -> list[str]:
    """cobra finds the (sub)command first and then parses every flag wherever it stands, so
    Linkerd's docs write `linkerd -n emojivoto check --proxy` (getting-started) and `linkerd viz
    -n linkerd edges deployment` (validating-your-traffic); argparse wants a subcommand's flags
    after it, so a `-n NS` / `--namespace NS` given before the command moves to the end."""
    out: list[str] = []
    moved: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token in ("-n", "--namespace") and i + 1 < len(argv):
            moved += argv[i:i + 2]
            i += 2
            continue
        if token.startswith("--namespace="):
            moved.append(token)
        else:
            out.append(token)
            if token in VALUE_FLAGS and i + 1 < len(argv):
                out.append(argv[i + 1])
                i += 1
            elif not token.startswith("-") and token not in GROUPS:
                return out + argv[i + 1:] + moved  # the command: its own flags follow
        i += 1
    return out + moved


def _require_running(ref: ClusterRef) -> None:
    if ref.embedded is not None and not ref.embedded.status().running:
        raise ClusterError(f"the embedded cluster {ref.context!r} is not running: start it with "
                           f"`meshlab up --name {ref.context}` (or labs.connect() in a notebook)")


def run(args: argparse.Namespace, ref: ClusterRef) -> int:
    command = args.command
    if command in ("inject", "uninject"):
        return cmd_transform(args, ref)
    if command == "version" and args.client:
        return cmd_version(args, None)
    _require_running(ref)
    kube = Kube(ref)
    if command == "version":
        return cmd_version(args, kube)
    if command == "check":
        return cmd_check(args, kube)
    if command == "install":
        sys.stdout.write(install.crds_text() if args.crds else install.control_plane_text(kube))
        return 0
    if command == "viz":
        return cmd_viz(args, kube, ref)
    if command == "diagnostics":
        resource = build_resource(args.namespace or _context_namespace(ref), args.resource)
        try:
            sys.stdout.write(diagnostics.proxy_metrics(kube, resource))
        except ValueError as err:
            raise VizError(str(err)) from None
        return 0
    return identity.cmd_identity(kube, args.pods, args.namespace or _context_namespace(ref),
                                 args.selector)


def _config_values(kube: Kube, namespace: str) -> dict[str, object]:
    return config_values(kube.get("configmaps", CONFIG_MAP, namespace))


def cmd_version(args: argparse.Namespace, kube: Kube | None) -> int:
    """configureAndRunVersion."""
    client = version("LINKERD_VERSION")
    out = sys.stdout
    out.write(f"{client}\n" if args.short else f"Client version: {client}\n")
    if kube is None:
        return 0
    server = str(_config_values(kube, args.linkerd_namespace).get("linkerdVersion")
                 or "unavailable")
    out.write(f"{server}\n" if args.short else f"Server version: {server}\n")
    if args.proxy:
        ctx = Context(kube, version("LINKERD_VERSION"), control_plane_ns=args.linkerd_namespace,
                      data_plane_ns=args.namespace or None)
        pods = ctx.data_plane_pods()
        counts = Counter((p["metadata"].get("annotations") or {}).get(
            "linkerd.io/proxy-version", "") for p in pods)
        if not counts:
            out.write("Proxy versions: unavailable\n")
        else:
            out.write("Proxy versions:\n")
            for proxy_version, count in sorted(counts.items()):
                out.write(f"\t{proxy_version} ({count} pods)\n")
            out.flush()
            sys.stderr.write(PROXY_NOTE)
    return 0


def cmd_check(args: argparse.Namespace, kube: Kube) -> int:
    """configureAndRunChecks, then the viz extension's checks when viz is installed (as
    runExtensionChecks); exit 1 when a check failed (warnings do not count)."""
    if args.pre and args.proxy:
        raise UsageError("Validation error when executing check command: --pre and --proxy "
                         "flags are mutually exclusive")
    ctx = Context(kube, version("LINKERD_VERSION"), control_plane_ns=args.linkerd_namespace,
                  data_plane_ns=args.namespace or None)
    runs = [healthcheck.core_categories(args.pre, args.proxy)]
    if not args.pre and viz_checks.installed(ctx):
        runs.append(viz_checks.categories(args.proxy))
    return _run_checks(args, ctx, runs)


def cmd_viz(args: argparse.Namespace, kube: Kube, ref: ClusterRef) -> int:
    """`linkerd viz check` as viz/cmd/check.go: the kubernetes-api and linkerd-existence
    categories, then the extension's; every other viz command in labs/linkerd/viz."""
    if args.viz_command != "check":
        return viz_cli.run(args, kube, ref,
                           getattr(args, "namespace", "") or _context_namespace(ref), _duration)
    ctx = Context(kube, version("LINKERD_VERSION"), control_plane_ns=args.linkerd_namespace,
                  data_plane_ns=args.namespace or None)
    core = [(name, checkers) for name, checkers in healthcheck.core_categories(False, False)
            if name in ("kubernetes-api", "linkerd-existence")]
    return _run_checks(args, ctx, [core + viz_checks.categories(args.proxy)])


def _run_checks(args: argparse.Namespace, ctx: Context,
                runs: list[list[tuple[str, list[healthcheck.Checker]]]]) -> int:
    """Run each catalog, printing as `-o` asks; exit 1 when a check failed."""
    success, warning = True, False
    printer = healthcheck.TablePrinter(sys.stdout, short=args.output == "short")
    for catalog in runs:
        if args.output == "json":  # one JSON document per run, as upstream prints them
            collector = healthcheck.JsonCollector()
            ok, warned = healthcheck.run(ctx, catalog, args.wait, collector)
            sys.stdout.write(collector.dumps(ok))
        else:
            ok, warned = healthcheck.run(ctx, catalog, args.wait, printer)
        success, warning = success and ok, warning or warned
    if args.output != "json":
        printer.finish(success, warning)
    return 0 if success else EXIT_ERROR


def _proxy_values(kube: Kube, namespace: str) -> ProxyValues:
    return values_from_objects(_config_values(kube, namespace),
                               kube.get("configmaps", TRUST_ROOTS_CONFIGMAP, namespace),
                               f"linkerd/cli {version('LINKERD_VERSION')}")


def cmd_transform(args: argparse.Namespace, ref: ClusterRef) -> int:
    """`linkerd inject` / `linkerd uninject`: YAML on stdout, the report on stderr."""
    if not args.config:
        raise UsageError("please specify a kubernetes resource file")
    values: ProxyValues | None = None
    if args.command == "inject" and not args.ignore_cluster:
        _require_running(ref)
        kube = Kube(ref)
        if kube.get("configmaps", CONFIG_MAP, args.linkerd_namespace) is None:
            raise inject.InjectError(
                f'configmaps "{CONFIG_MAP}" not found in namespace {args.linkerd_namespace}: '
                "is Linkerd installed? (or pass --ignore-cluster)")
        values = _proxy_values(kube, args.linkerd_namespace) if args.manual else None
    elif args.command == "inject" and args.manual:
        raise UsageError("--manual needs the cluster's trust anchors and version: run it "
                         "without --ignore-cluster")
    documents, reports = [], []
    texts = inject.read_sources(args.config, sys.stdin)  # unreadable input: `Error: ...`
    try:
        for text in texts:
            docs = inject.parse_documents(text)
            change = ((lambda obj: inject.inject(obj, values)) if args.command == "inject"
                      else inject.uninject)
            done = inject.transform(docs, change)
            documents += done.documents
            reports += done.reports
    except inject.InjectError as exc:
        sys.stderr.write(f"Error transforming resources:\n{exc}")
        sys.stderr.write("\n")
        return EXIT_ERROR
    sys.stdout.write(inject.render(documents, args.output))
    sys.stdout.flush()
    sys.stderr.write(inject.inject_report(reports) if args.command == "inject"
                     else inject.uninject_report(reports))
    return 0
