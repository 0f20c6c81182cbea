"""The `istioctl` console script: parse istioctl's flags, serve the embedded cluster, hand any
other cluster to the real binary. Errors print as cobra does (`Error: ...` on stderr) with
istioctl's exit codes (`istioctl/cmd/sysexits.go`: 1 error, 64 usage, 79 analyze found
issues)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from labs import proxy
from labs.cluster import ClusterError, ClusterRef
from labs.istioctl import analyze, configdump, dashboard, describe, handover, status
from labs.versions import version

EXIT_ERROR, EXIT_USAGE, EXIT_ANALYZE_ISSUES = 1, 64, 79
PC_KINDS = {"cluster": ("clusters", "c"), "listener": ("listeners", "l"),
            "route": ("routes", "r"), "endpoint": ("endpoints", "ep"),
            "secret": ("secrets", "s"), "bootstrap": ("b",), "all": ("a",)}


class UsageError(Exception):
    """Bad flags or arguments (exit 64)."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # raise, don't exit 2
        raise UsageError(message)


def build_parser() -> Parser:
    common = Parser(add_help=False)
    common.add_argument("-c", "--kubeconfig", help="Kubernetes configuration file")
    common.add_argument("--context", help="Kubernetes configuration context")
    common.add_argument("-n", "--namespace", help="Kubernetes namespace")
    common.add_argument("-i", "--istioNamespace", default="istio-system",
                        help="Istio system namespace")
    root = Parser(prog="istioctl", parents=[common],
                  description="Istio configuration command line utility (meshlab embedded "
                  "cluster; other clusters are handed to the real istioctl)")
    sub = root.add_subparsers(dest="command", required=True, parser_class=Parser)

    ver = sub.add_parser("version", parents=[common], help="Prints out build version")
    ver.add_argument("-s", "--short", default="true")
    ver.add_argument("-o", "--output", default="", choices=["", "json", "yaml"])

    ps = sub.add_parser("proxy-status", aliases=["ps"], parents=[common],
                        help="Retrieves the synchronization status of each Envoy")
    ps.add_argument("pod", nargs="?")
    ps.add_argument("-o", "--output", default="table", choices=["table", "json", "yaml"])
    ps.add_argument("-v", "--verbosity", type=int, default=0)

    pc = sub.add_parser("proxy-config", aliases=["pc"], parents=[common],
                        help="Retrieve information about proxy configuration from Envoy")
    kinds = pc.add_subparsers(dest="kind", required=True, parser_class=Parser)
    for kind, aliases in PC_KINDS.items():
        one = kinds.add_parser(kind, aliases=list(aliases), parents=[common])
        one.add_argument("pod")
        one.add_argument("-o", "--output", default="json" if kind == "bootstrap" else "short",
                         choices=["json", "yaml", "short"])
        if kind in ("cluster", "all"):
            one.add_argument("--fqdn", default="")
            one.add_argument("--subset", default="")
            one.add_argument("--direction", default="")
        if kind in ("cluster", "listener", "endpoint", "all"):
            one.add_argument("--port", type=int, default=0)
        if kind in ("listener", "endpoint", "all"):
            one.add_argument("--address", default="")
        if kind in ("listener", "all"):
            one.add_argument("--type", default="")
        if kind in ("route", "all"):
            one.add_argument("--name", default="")
        if kind in ("endpoint", "all"):
            one.add_argument("--cluster", default="")
            one.add_argument("--status", default="")
        if kind == "all":
            one.add_argument("--with-headers", action="store_true")

    an = sub.add_parser("analyze", parents=[common], help="Analyze Istio configuration")
    an.add_argument("files", nargs="*")
    an.add_argument("-A", "--all-namespaces", action="store_true")
    an.add_argument("-k", "--use-kube", default="true")
    an.add_argument("--failure-threshold", default="Error", choices=list(analyze.LEVELS))
    an.add_argument("--output-threshold", default="Info", choices=list(analyze.LEVELS))
    an.add_argument("--color", default="false")

    for name in ("x", "experimental"):
        exp = sub.add_parser(name, parents=[common], help="Experimental commands")
        exp_sub = exp.add_subparsers(dest="experimental", required=True, parser_class=Parser)
        desc = exp_sub.add_parser("describe", aliases=["des"], parents=[common])
        desc_sub = desc.add_subparsers(dest="resource", required=True, parser_class=Parser)
        pod = desc_sub.add_parser("pod", aliases=["po"], parents=[common])
        pod.add_argument("pod")

    dash = sub.add_parser("dashboard", aliases=["dash", "d"], parents=[common],
                          help="Access to Istio web UIs")
    dash.add_argument("addon", choices=[*dashboard.ADDONS, "envoy"])
    dash.add_argument("pod", nargs="?")
    dash.add_argument("--browser", default="true")
    return root


def _truthy(value: str) -> bool:
    if value.lower() in ("true", "1", "t"):
        return True
    if value.lower() in ("false", "0", "f"):
        return False
    raise UsageError(f"invalid boolean value {value!r}: use true or false")


def _context_namespace(ref: ClusterRef) -> str:
    """The namespace of the kubeconfig's context (istioctl's default for -n)."""
    try:
        config = yaml.safe_load(Path(ref.kubeconfig).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return "default"
    for entry in config.get("contexts") or []:
        if entry.get("name") == ref.context:
            return str((entry.get("context") or {}).get("namespace") or "default")
    return "default"


def _pod_and_namespace(arg: str, namespace: str) -> tuple[str, str]:
    """`[<type>/]<name>[.<namespace>]` as istioctl reads it (last dot splits)."""
    kind, _, name = arg.rpartition("/")
    if "." in name:
        name, namespace = name.rsplit(".", 1)
    return (f"{kind}/{name}" if kind else name), namespace


def main(argv: list[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        peek, _ = _peek(args_list)
        selection = handover.select(peek.kubeconfig, peek.context)
        if selection.ref is None:
            return handover.hand_over(args_list)
        args = parser.parse_args(args_list)
        return run(args, selection.ref)
    except UsageError as exc:
        print(f"Error: {exc}\n\nRun 'istioctl --help' for usage.", file=sys.stderr)
        return EXIT_USAGE
    except (ClusterError, proxy.ProxyError, analyze.AnalyzeError, describe.DescribeError,
            dashboard.DashboardError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _peek(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Only --kubeconfig and --context, wherever they are, to pick the cluster first."""
    peek = Parser(add_help=False)
    peek.add_argument("-c", "--kubeconfig")
    peek.add_argument("--context")
    return peek.parse_known_args(argv)


def run(args: argparse.Namespace, ref: ClusterRef) -> int:
    if ref.embedded is not None and not ref.embedded.status().running:
        raise ClusterError(f"the embedded cluster {ref.context!r} is not running: start it with "
                           f"`meshlab up --name {ref.context}` (or labs.connect() in a notebook)")
    namespace = args.namespace or _context_namespace(ref)
    command = args.command
    if command == "version":
        return cmd_version(args, ref)
    if command in ("proxy-status", "ps"):
        return cmd_proxy_status(args, ref, args.namespace)
    if command in ("proxy-config", "pc"):
        return cmd_proxy_config(args, ref, namespace)
    if command == "analyze":
        return cmd_analyze(args, ref, namespace)
    if command in ("x", "experimental"):
        pod, pod_namespace = _pod_and_namespace(args.pod, namespace)
        sys.stdout.write(describe.describe_pod(ref, pod, pod_namespace, args.istioNamespace))
        return 0
    return cmd_dashboard(args, ref, namespace)


def cmd_version(args: argparse.Namespace, ref: ClusterRef) -> int:
    text = status.version_text(ref)
    if args.output:
        pinned = version("ISTIO_VERSION")
        data = {"clientVersion": {"version": pinned},
                "meshVersion": [{"Component": "pilot", "Info": {"version": pinned}}],
                "dataPlaneVersion": [{"IstioVersion": line} for line in text.splitlines()[2:]]}
        sys.stdout.write(configdump.dumps(data, args.output) + "\n")
        return 0
    sys.stdout.write(text)
    return 0


def cmd_proxy_status(args: argparse.Namespace, ref: ClusterRef, namespace: str | None) -> int:
    if args.pod:
        name, pod_namespace = _pod_and_namespace(args.pod, namespace or
                                                 _context_namespace(ref))
        pods = [p for p in status.meshed_pods(ref, pod_namespace)
                if p["metadata"]["name"] == name]
        if not pods:
            raise proxy.ProxyError(f'could not contact sidecar: pod "{name}" in namespace '
                                   f'"{pod_namespace}" is not a running meshed pod')
        sys.stdout.write(status.diff_text(ref, pods[0]))
        return 0
    syncs = [status.sync_of(ref, pod) for pod in status.meshed_pods(ref, namespace)]
    if args.output in ("json", "yaml"):
        data = [{"proxy": s.proxy_id, "istioVersion": s.version, "types": s.types}
                for s in syncs]
        sys.stdout.write(configdump.dumps(data, args.output) + "\n")
        return 0
    sys.stdout.write(status.status_table(status.control_plane_id(ref), syncs,
                                         args.verbosity))
    return 0


def cmd_proxy_config(args: argparse.Namespace, ref: ClusterRef, namespace: str) -> int:
    pod, pod_namespace = _pod_and_namespace(args.pod, namespace)
    kind = next(k for k, aliases in PC_KINDS.items() if args.kind in (k, *aliases))
    if kind == "endpoint":
        body = json.loads(proxy.admin(pod, pod_namespace, "clusters?format=json", cluster=ref))
        where = configdump.EndpointFilter(args.address, args.port, args.cluster, args.status)
        if args.output == "short":
            sys.stdout.write(configdump.endpoint_table(body, where).text())
        else:
            _print_dump(configdump.endpoint_dump(body, where), args.output)
        return 0
    dump = proxy.config_dump(pod, pod_namespace, cluster=ref)
    if kind == "all":
        if args.output != "short":
            _print_dump(dump, args.output, convert=False)
            return 0
        sys.stdout.write(_full_summary(args, ref, dump, pod, pod_namespace))
        return 0
    if kind == "bootstrap":
        if args.output == "short":
            sys.stdout.write(configdump.bootstrap_summary(dump))
        else:
            _print_dump(configdump.section(dump, "BootstrapConfigDump"), args.output)
        return 0
    routes: list[dict[str, object]] = []
    if kind == "route":
        routes, note = configdump.named_route_configs(dump, args.name)
        if note:
            print(note, file=sys.stderr)
    tables = {
        "cluster": lambda: configdump.cluster_table(dump, _cluster_filter(args)),
        "listener": lambda: configdump.listener_table(dump, _listener_filter(args)),
        "route": lambda: configdump.route_table(routes),
        "secret": lambda: configdump.secret_table(dump),
    }
    table = tables[kind]()
    if args.output == "short":
        sys.stdout.write(table.text())
        return 0
    raw = {"cluster": lambda: [c for c in configdump.clusters(dump)
                               if _cluster_filter(args).verify(str(c.get("name", "")))],
           "listener": lambda: [item for item in configdump.listeners(dump)
                                if _listener_filter(args).verify(item)],
           "route": lambda: routes,
           "secret": lambda: configdump.section(dump, "SecretsConfigDump")}[kind]
    _print_dump(raw(), args.output)
    return 0


def _cluster_filter(args: argparse.Namespace) -> configdump.ClusterFilter:
    return configdump.ClusterFilter(args.fqdn, args.port, args.subset, args.direction)


def _listener_filter(args: argparse.Namespace) -> configdump.ListenerFilter:
    return configdump.ListenerFilter(args.address, args.port, args.type)


def _print_dump(value: object, output: str, convert: bool = True) -> None:
    shown = configdump.camel_case(value) if convert else value
    sys.stdout.write(configdump.dumps(shown, output) + "\n")


def _full_summary(args: argparse.Namespace, ref: ClusterRef, dump: dict[str, object],
                  pod: str, namespace: str) -> str:
    """`PrintFullSummary` (upstream `configdump/configdump.go`): every section with the
    NAME column, a blank line between sections, headers with `--with-headers`."""
    body = json.loads(proxy.admin(pod, namespace, "clusters?format=json", cluster=ref))
    parts = [
        ("BOOTSTRAP INFO", configdump.bootstrap_summary(dump)),
        ("CLUSTER INFO", configdump.cluster_table(dump, _cluster_filter(args),
                                                  with_names=True).text()),
        ("LISTENER INFO", configdump.listener_table(dump, _listener_filter(args),
                                                    with_names=True).text()),
        ("ROUTE INFO", configdump.route_table(configdump.named_route_configs(dump, args.name)[0],
                                              with_names=True).text()),
        ("SECRET INFO", configdump.secret_table(dump, with_names=True).text()),
        ("ENDPOINTS INFO", configdump.endpoint_table(body, configdump.EndpointFilter(
            args.address, args.port, args.cluster, args.status)).text()),
    ]
    out = []
    for title, text in parts:
        header = f"------ {title} ------\n\n" if args.with_headers else ""
        out.append(header + text)
    return "\n".join(out)


def cmd_analyze(args: argparse.Namespace, ref: ClusterRef, namespace: str) -> int:
    use_kube = _truthy(args.use_kube)
    snapshot = analyze.live_snapshot(ref) if use_kube else analyze.Snapshot()
    for name in args.files:
        _read_file(snapshot, Path(name), namespace)
    scope = None if args.all_namespaces else [namespace]
    messages = analyze.analyze(snapshot, scope)
    shown = [m for m in messages
             if analyze.LEVELS[m.level] <= analyze.LEVELS[args.output_threshold]]
    if shown:
        sys.stdout.write("".join(f"{m}\n" for m in shown))
    else:
        sys.stdout.write("\n")
    target = "all namespaces" if args.all_namespaces else f"namespace: {namespace}"
    if not shown:
        if len(args.files) > 1:
            print("\u2714 No validation issues found when analyzing:\n  - "
                  + "\n  - ".join(args.files), file=sys.stderr)
        else:
            print(f"\u2714 No validation issues found when analyzing "
                  f"{args.files[0] if args.files else target}.", file=sys.stderr)
    failing = [m for m in messages
               if analyze.LEVELS[m.level] <= analyze.LEVELS[args.failure_threshold]]
    if failing:
        minor = ".".join(version("ISTIO_VERSION").split(".")[:2])
        print(f"Error: Analyzers found issues when analyzing {target}.\nSee "
              f"{analyze.DOCS.format(minor=minor)} for more information about causes and "
              "resolutions.", file=sys.stderr)
        return EXIT_ANALYZE_ISSUES
    return 0


def _read_file(snapshot: analyze.Snapshot, path: Path, namespace: str) -> None:
    """Add a file's objects (default namespace: the analyzed one), remembering `file:line`."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise analyze.AnalyzeError(f"cannot read {path}: {exc.strerror}") from None
    line = 1
    for chunk in text.split("\n---"):
        try:
            obj = yaml.safe_load(chunk)
        except yaml.YAMLError as exc:
            raise analyze.AnalyzeError(f"{path}: not valid YAML ({exc})") from None
        if isinstance(obj, dict) and obj.get("metadata", {}).get("name"):
            obj["metadata"].setdefault("namespace", namespace)
            offset = len(chunk) - len(chunk.lstrip("\n-"))
            snapshot.add(obj, f"{path}:{line + chunk[:offset].count(chr(10))}")
        line += chunk.count("\n") + 1


def cmd_dashboard(args: argparse.Namespace, ref: ClusterRef, namespace: str) -> int:
    if args.addon == "envoy":
        if not args.pod:
            raise UsageError("specify a pod or --selector")
        pod, pod_namespace = _pod_and_namespace(args.pod, namespace)
        url = dashboard.envoy_url(ref, pod, pod_namespace)
    else:
        url = dashboard.addon_url(ref, args.addon, [args.istioNamespace, namespace])
    sys.stdout.write(dashboard.open_url(url, _truthy(args.browser)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
