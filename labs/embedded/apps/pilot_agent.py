"""`pilot-agent` in the `istio-proxy` container: the subcommands Istio's docs run there.

    kubectl exec POD -c istio-proxy -- pilot-agent request GET stats
    pilot-agent request POST 'logging?level=debug'
    pilot-agent request GET stats/prometheus --debug-port 15020
    pilot-agent wait [--timeoutSeconds 60] [--periodMillis 500] [--url URL]

Follows istio/istio pilot/cmd/pilot-agent/app/request.go, app/wait.go, app/cmd.go and
pilot/pkg/request/command.go: `request` sends METHOD to `localhost:<debug port>/PATH` (optional
third argument: the body) and prints the answer's body and nothing else (istioctl parses it); a
status above 399 other than 404 is an error; the debug port must be one of 15000, 15004, 15020,
15021. Errors are reported as cobra and pilot-agent's main do: `Error: …` and the usage hint on
stderr, an Istio log line on stdout, exit code 255 (`os.Exit(-1)`). The pod's `localhost` is
reached through the runtime's port map (labs/embedded/apps/localhost.py). `proxy` (what the
container itself runs) is the runtime's job here and says so.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from .localhost import NotInPod, dial_port

NAME = "pilot-agent"
ADMIN_PORT = 15000
ALLOWED_DEBUG_PORTS = (15000, 15004, 15020, 15021)  # app/request.go: allowedPorts
REQUEST_TIMEOUT = 60.0
EXIT_ERROR = 255
COMMANDS = {"request": "Makes an HTTP request to the Envoy admin API",
            "wait": "Waits until the Envoy proxy is ready"}
HELP = f"""Istio Pilot agent runs in the sidecar or gateway container and bootstraps Envoy.

Usage:
  {NAME} [command]

Available Commands:
{"".join(f"  {name:<11} {text}" + chr(10) for name, text in COMMANDS.items())}
Flags:
  -h, --help   help for {NAME}

Use "{NAME} [command] --help" for more information about a command.
(The embedded cluster's pilot-agent has these commands; its runtime starts the proxy itself.)
"""


class CommandError(Exception):
    """A failed command, worded as pilot-agent words it."""


@dataclass
class Flag:
    name: str
    default: str
    help: str


REQUEST_FLAGS = [Flag("debug-port", str(ADMIN_PORT), "Set the port to make a local request to. "
                      "The default points to the Envoy admin API.")]
WAIT_FLAGS = [Flag("timeoutSeconds", "60", "maximum number of seconds to wait for Envoy to be "
                   "ready"),
              Flag("requestTimeoutMillis", "500", "number of milliseconds to wait for response"),
              Flag("periodMillis", "500", "number of milliseconds to wait between attempts"),
              Flag("url", "http://localhost:15021/healthz/ready", "URL to use in requests")]


def log(level: str, message: str) -> None:
    """An Istio log line (pkg/log: RFC 3339 time with microseconds, tab-separated, stdout)."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    print(f"{stamp}\t{level}\t{message}", flush=True)


def parse_flags(args: list[str], flags: list[Flag]) -> tuple[dict[str, str], list[str], bool]:
    """pflag-style: `--name value` or `--name=value` anywhere, `--` ends flags. Returns the
    values, the positional arguments and whether help was asked for."""
    known = {flag.name: flag for flag in flags}
    values = {flag.name: flag.default for flag in flags}
    positional: list[str] = []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--":
            positional += rest
            break
        if arg in ("-h", "--help"):
            return values, positional, True
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        name, has_value, value = arg.lstrip("-").partition("=")
        if name not in known:
            raise CommandError(f"unknown flag: {arg.partition('=')[0]}" if arg.startswith("--")
                               else f"unknown shorthand flag: {name[:1]!r} in {arg}")
        if not has_value:
            if not rest:
                raise CommandError(f"flag needs an argument: --{name}")
            value = rest.pop(0)
        values[name] = value
    return values, positional, False


def integer(values: Mapping[str, str], name: str) -> int:
    raw = values[name]
    try:
        return int(raw, 0)
    except ValueError:
        raise CommandError(f'invalid argument "{raw}" for "--{name}" flag: strconv.ParseInt: '
                           f'parsing "{raw}": invalid syntax') from None


def fetch(method: str, url: str, body: str, timeout: float) -> tuple[int, bytes]:
    """One HTTP request as Go's http.Client makes it; `localhost` is the pod's loopback."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 80
    verb = method[:1].upper() + method[1:].lower()  # net/http's url.Error wording
    try:
        real_port = dial_port(host, port, os.environ)
    except NotInPod as exc:
        raise CommandError(f"{NAME} runs in the istio-proxy container of a pod: {exc}") from None
    refused = f'{verb} "{url}": dial tcp 127.0.0.1:{port}: connect: connection refused'
    if real_port is None:
        raise CommandError(refused)
    target = url
    if real_port != port:
        target = parts._replace(netloc=f"127.0.0.1:{real_port}").geturl()
    request = urllib.request.Request(target, data=body.encode() if body else None,
                                     method=method, headers={"Host": parts.netloc,
                                                             "User-Agent": "Go-http-client/1.1"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except urllib.error.URLError as err:
        if isinstance(err.reason, ConnectionRefusedError):
            raise CommandError(refused) from None
        raise CommandError(f'{verb} "{url}": {err.reason}') from None
    except TimeoutError:
        raise CommandError(f'{verb} "{url}": context deadline exceeded (Client.Timeout '
                           "exceeded while awaiting headers)") from None


def request(args: list[str]) -> None:
    values, positional, wants_help = parse_flags(args, REQUEST_FLAGS)
    if wants_help:
        print(command_help("request", "request <method> <path> [<body>]", REQUEST_FLAGS))
        return
    if len(positional) < 2:
        raise CommandError(f"requires at least 2 arg(s), only received {len(positional)}")
    port = integer(values, "debug-port")
    if port not in ALLOWED_DEBUG_PORTS:
        raise CommandError(f"debug port {port} is not in allowed list "
                           f"[{' '.join(map(str, ALLOWED_DEBUG_PORTS))}]")
    method, path = positional[0], positional[1].removeprefix("/")
    body = positional[2] if len(positional) > 2 else ""
    status, answer = fetch(method, f"http://localhost:{port}/{path}", body, REQUEST_TIMEOUT)
    if status > 399 and status != 404:
        raise CommandError(f"received unsuccessful status code {status}: "
                           f"{answer.decode(errors='replace')}")
    sys.stdout.buffer.write(answer + b"\n")
    sys.stdout.flush()


def wait(args: list[str]) -> None:
    values, _, wants_help = parse_flags(args, WAIT_FLAGS)
    if wants_help:
        print(command_help("wait", "wait [flags]", WAIT_FLAGS))
        return
    timeout = integer(values, "timeoutSeconds")
    period = integer(values, "periodMillis") / 1000
    per_request = integer(values, "requestTimeoutMillis") / 1000
    log("info", f"Waiting for Envoy proxy to be ready (timeout: {timeout} seconds)...")
    deadline = time.monotonic() + timeout
    last: str = "<nil>"
    while True:
        time.sleep(period)
        if time.monotonic() > deadline:
            raise CommandError("timeout waiting for Envoy proxy to become ready. "
                               f"Last error: {last}")
        try:
            status, _ = fetch("GET", values["url"], "", per_request)
        except CommandError as exc:
            last = str(exc)
            continue
        if status == 200:
            log("info", "Envoy is ready!")
            return
        last = f"HTTP status code {status}"


def command_help(name: str, use: str, flags: list[Flag]) -> str:
    lines = [COMMANDS[name], "", "Usage:", f"  {NAME} {use}", "", "Flags:"]
    lines += [f"      --{flag.name} string   {flag.help} (default {flag.default!r})"
              for flag in flags]
    lines.append(f"  -h, --help   help for {name}")
    return "\n".join(lines)


def distance(a: str, b: str) -> int:
    """Levenshtein distance, as cobra's `ld` computes it for suggestions."""
    row = list(range(len(b) + 1))
    for i, left in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, right in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1,
                                           previous + (left != right))
    return row[-1]


class UnknownCommand(CommandError):
    """cobra's legacyArgs error, with its "Did you mean" suggestions (SuggestionsFor: distance
    at most 2, or a prefix, ignoring case); cobra adds the usage hint to this one only."""

    def __init__(self, command: str) -> None:
        typed = command.lower()
        close = [name for name in COMMANDS
                 if distance(typed, name) <= 2 or name.startswith(typed)]
        hint = ("\n\nDid you mean this?\n" + "".join(f"\t{name}\n" for name in close)
                if close else "")
        super().__init__(f'unknown command "{command}" for "{NAME}"{hint}')


RUNNERS: dict[str, Callable[[list[str]], None]] = {"request": request, "wait": wait}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(HELP, end="")
        return 0
    command, rest = args[0], args[1:]
    try:
        if command == "proxy":
            raise CommandError("the embedded cluster's runtime starts this container's proxy "
                               "(a real Envoy) itself; `pilot-agent proxy` cannot be run in "
                               "`kubectl exec`")
        runner = RUNNERS.get(command)
        if runner is None:
            raise UnknownCommand(command)
        runner(rest)
    except CommandError as exc:
        usage = f"\nRun '{NAME} --help' for usage." if isinstance(exc, UnknownCommand) else ""
        print(f"Error: {exc}{usage}", file=sys.stderr, flush=True)
        log("error", str(exc))
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
