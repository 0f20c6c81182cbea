"""`meshlab tools install|list|path` and `meshlab preflight` (registered in labs/cli.py). The
modules that do the work are imported when a command runs, so `meshlab up` does not pay for
them."""

from __future__ import annotations

import argparse
import json
import sys

TOOLS_HELP = ("the kind backend's tools (kind, istioctl, linkerd, helm) at the versions in "
              "cluster-setup/versions.env, in a project-local bin directory")
PREFLIGHT_HELP = ("can this host run N student clusters? Docker, tools, memory, CPU, inotify, "
                  "ports and disk, each with the command that fixes it")


def _error(message: object) -> int:
    print(f"meshlab: {message}", file=sys.stderr)
    return 1


def configure_tools(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    install = actions.add_parser(
        "install", help="download, verify (SHA-256) and install the tools; reuses what is "
        "installed at the pinned version", description="Download each tool's build for this "
        "host from its project's releases (or $MESHLAB_TOOLS_MIRROR), verify its published "
        "SHA-256 and install it into .tools/bin (or $MESHLAB_TOOLS_DIR/bin).")
    install.add_argument("names", nargs="*", metavar="NAME",
                         help="kind, istioctl, linkerd or helm (default: all four)")
    install.add_argument("--force", action="store_true", help="download again even if the "
                         "pinned version is installed")
    install.set_defaults(func=cmd_tools_install)
    listing = actions.add_parser("list", help="each tool's pinned version and state")
    listing.add_argument("-o", "--output", choices=("text", "json"), default="text")
    listing.set_defaults(func=cmd_tools_list)
    path = actions.add_parser("path", help="print an installed tool's path (fails if it is "
                              "not installed at the pinned version)")
    path.add_argument("name", metavar="NAME")
    path.set_defaults(func=cmd_tools_path)


def cmd_tools_install(args: argparse.Namespace) -> int:
    from labs.setup.download import DownloadError
    from labs.setup.releases import TOOLS, UnsupportedPlatform
    from labs.setup.tools import ToolsError, install, tools_dir
    from labs.versions import VersionsError

    failed = 0
    for name in args.names or list(TOOLS):
        try:
            done = install(name, force=args.force)
        except UnsupportedPlatform as exc:  # the same for every tool: say it once
            return _error(exc)
        except (ToolsError, DownloadError, VersionsError) as exc:
            failed += _error(f"{name}: {exc}")
            continue
        except OSError as exc:
            failed += _error(f"{name}: cannot write to {tools_dir()} ({exc.strerror}): set "
                             "MESHLAB_TOOLS_DIR to a folder you can write")
            continue
        verb = "already installed" if done.reused else "installed (SHA-256 verified)"
        print(f"{name} {done.version}: {verb}: {done.path}", flush=True)
    if failed == 0:
        print(f"add them to PATH with: export PATH={tools_dir() / 'bin'}:$PATH")
    return 1 if failed else 0


def cmd_tools_list(args: argparse.Namespace) -> int:
    from labs.setup.releases import TOOLS
    from labs.setup.tools import ToolsError, reported_version, status
    from labs.versions import VersionsError

    try:
        found = [status(name) for name in TOOLS]
    except VersionsError as exc:
        return _error(exc)
    if args.output == "json":
        print(json.dumps({"tools": [tool.as_dict() for tool in found]}, indent=1))
        return 0
    print(f"{'TOOL':<9} {'PINNED':<13} {'STATE':<11} REPORTS")
    for tool in found:
        try:
            says = reported_version(tool.path, tool.name) if tool.path.is_file() else ""
        except ToolsError as exc:
            says = str(exc)
        print(f"{tool.name:<9} {tool.pinned:<13} {tool.state:<11} {says}".rstrip())
    return 0


def cmd_tools_path(args: argparse.Namespace) -> int:
    from labs.setup.tools import ToolsError, tool_path
    from labs.versions import VersionsError

    try:
        print(tool_path(args.name))
    except (ToolsError, VersionsError) as exc:
        return _error(exc)
    return 0


def _whole(text: str, low: int, high: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{what} run from {low} to {high}")
    return value


def _students(text: str) -> int:
    return _whole(text, 1, 10_000, "student counts")


def _port(text: str) -> int:
    return _whole(text, 1, 65535, "ports")


def configure_preflight(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=("embedded", "kind"), default="embedded",
                        help="the backend the clusters will use (default: embedded)")
    parser.add_argument("--students", type=_students, default=1, metavar="N",
                        help="how many student clusters this host will run (default: 1)")
    parser.add_argument("--port", type=_port, default=None, metavar="PORT",
                        help="JupyterLab's port, as `meshlab lab --port` (default: 8888)")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")


def cmd_preflight(args: argparse.Namespace) -> int:
    from pathlib import Path

    from labs.embedded.paths import default_state_root
    from labs.setup.figures import JUPYTERLAB_PORT
    from labs.setup.preflight import preflight, render, summary
    from labs.versions import VersionsError

    state = Path(args.state_dir) if args.state_dir else default_state_root()
    try:
        checks = preflight(args.backend, args.students, state_root=state,
                           jupyter_port=args.port or JUPYTERLAB_PORT)
    except VersionsError as exc:
        return _error(exc)
    if args.output == "json":
        print(json.dumps(summary(checks, args.backend, args.students), indent=1))
    else:
        print(render(checks, args.backend, args.students))
    return 1 if any(check.status == "fail" for check in checks) else 0
