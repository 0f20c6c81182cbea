"""`linkerd viz top`: live requests aggregated by source, destination, method and path.

The rows and columns are linkerd/linkerd2 `viz/cmd/top.go`'s (`newTopTable`: Source,
Destination, Method, Path, Count, Best, Worst, Last, Success Rate; a request fails with a 5xx
or a gRPC Unknown/DeadlineExceeded/Internal/Unavailable/DataLoss; rows sorted by count; Go's
`time.Duration` formatting), fed by the same per-request lines as tap.py. Upstream draws with
termbox, which needs a terminal: on a TTY this redraws the screen (ANSI) every
`REDRAW_S`; without one (a notebook, a pipe), where upstream's termbox would fail to start, it
prints the table once when the stream ends (Ctrl-C, SIGTERM such as `timeout`'s, or the cluster
stopping). Emulation limits as tap.py's; on a terminal Ctrl-C quits (no q / a / d keys);
`--routes` (ServiceProfile routes) is not offered.
"""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any, TextIO

from labs.cluster import ClusterRef
from labs.embedded.workload import pod_dir_name
from labs.linkerd.kube import Kube
from labs.linkerd.viz.resources import Resource
from labs.linkerd.viz.tap import Filters, Peers, stream_lines, tapped_pods

Obj = dict[str, Any]
REDRAW_S = 0.5
FAILING_GRPC = {2, 4, 13, 14, 15}  # codes.Unknown, DeadlineExceeded, Internal, Unavailable,
# DataLoss: what top.go `newRow` counts as failures
SPACING = 2  # columnSpacing
# (header, width, flexible, right-aligned), newTopTable's display columns
COLUMNS = (("Source", 23, True, False), ("Destination", 23, True, False),
           ("Method", 10, False, False), ("Path", 37, True, False), ("Count", 6, False, True),
           ("Best", 6, False, True), ("Worst", 6, False, True), ("Last", 6, False, True),
           ("Success Rate", 12, False, True))
HELP_LINES = ("(press q to quit)",
              "(press a/LeftArrowKey to scroll left, d/RightArrowKey to scroll right)", "")


class Stop(Exception):
    """SIGTERM: end the stream and print the table."""


@dataclass
class Row:
    source: str
    destination: str
    method: str
    path: str
    count: int
    best: float  # ms
    worst: float
    last: float
    successes: int
    failures: int

    def key(self) -> tuple[str, str, str, str]:
        return self.source, self.destination, self.method, self.path

    def merge(self, other: Row) -> None:
        self.count += other.count
        self.best, self.worst = min(self.best, other.best), max(self.worst, other.worst)
        self.last = other.last
        self.successes += other.successes
        self.failures += other.failures

    def cells(self, hide_sources: bool) -> list[str]:
        rate = 100.0 * self.successes / (self.successes + self.failures)
        out = [self.source, self.destination, self.method, self.path, str(self.count),
               duration(self.best), duration(self.worst), duration(self.last), f"{rate:.2f}%"]
        return out[1:] if hide_sources else out


def duration(ms: float) -> str:
    """formatDuration: rounded to the µs below 1 ms, the ms below 1 s, else the second (half
    away from zero, as Duration.Round), then written as Go's Duration.String()."""
    unit = 1_000 if ms < 1 else 1_000_000 if ms < 1000 else 1_000_000_000
    ns = int(ms * 1_000_000 / unit + 0.5) * unit
    return _go_string(ns)


def _go_string(ns: int) -> str:
    """time.Duration.String for whole µs, ms or s: `0s`, `500µs`, `3ms`, `2s`, `1m5s`."""
    if ns == 0:
        return "0s"
    for size, suffix in ((1_000_000, "µs"), (1_000_000_000, "ms")):
        if ns < size:
            return f"{ns / (size // 1000):g}{suffix}"
    seconds = ns // 1_000_000_000
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{seconds}s"
    return f"{minutes}m{seconds}s" if minutes else f"{seconds}s"


def _pod_name(pod: Obj | None, fallback: str) -> str:
    return pod["metadata"]["name"] if pod is not None else fallback.rpartition(":")[0]


def row_of(line: Obj, peers: Peers, identities: dict[str, Obj | None]) -> Row:
    """newRow: source and destination are pods where known, else the address without port."""
    own = peers.by_dir.get(str(line.get("pod_dir")))
    if line.get("direction") == "inbound":
        caller = identities.get(str(line.get("client_id") or ""))
        source, destination = _pod_name(caller, str(line.get("src") or "")), _pod_name(own, "")
    else:
        host = str(line.get("upstream_host") or "")
        port = host.rpartition(":")[2]
        other = peers.by_port.get(int(port)) if port.isdigit() else None
        source, destination = _pod_name(own, ""), _pod_name(other, host)
    grpc = str(line.get("grpc_status") or "")
    ok = int(line.get("response_code") or 0) < 500 and not (
        grpc.isdigit() and int(grpc) in FAILING_GRPC)
    ms = float(line.get("duration") or 0)
    return Row(source, destination, str(line.get("method") or ""), str(line.get("path") or ""),
               1, ms, ms, ms, int(ok), int(not ok))


def render(rows: list[Row], hide_sources: bool, terminal: bool = False) -> str:
    """renderHeaders + renderBody as text: flexible columns as wide as their widest cell; the
    key help above the table only on a terminal (its keys mean nothing elsewhere)."""
    columns = COLUMNS[1:] if hide_sources else COLUMNS
    ordered = sorted(rows, key=lambda r: -r.count)  # SliceStable by count, descending
    cells = [r.cells(hide_sources) for r in ordered]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) if flexible else width
              for i, (h, width, flexible, _) in enumerate(columns)]
    lines = list(HELP_LINES) if terminal else []
    for line in [[c[0] for c in columns], *cells]:
        text = (" " * SPACING).join(
            f"{v:>{w}}" if right else f"{v:<{w}}"
            for v, w, (_, _, _, right) in zip(line, widths, columns, strict=True))
        lines.append(text.rstrip())
    return "\n".join(lines) + "\n"


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stop


def top(ref: ClusterRef, kube: Kube, resource: Resource, filters: Filters, hide_sources: bool,
        control_plane_ns: str, out: TextIO = sys.stdout) -> int:
    every = kube.items("pods", None)
    pods = tapped_pods(kube, resource, control_plane_ns, every)
    peers = Peers.of(every)
    identities: dict[str, Obj | None] = {}
    for pod in every:  # a client identity names a pod when one pod has it
        sa = (pod.get("spec") or {}).get("serviceAccountName") or "default"
        ident = (f"{sa}.{pod['metadata']['namespace']}.serviceaccount.identity."
                 f"{control_plane_ns}.cluster.local")
        identities[ident] = pod if ident not in identities else None
    rows: dict[tuple[str, str, str, str], Row] = {}
    terminal = out.isatty()
    drawn = 0.0
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        for line in stream_lines(ref, pods):
            if filters.matches(line) and str(line.get("pod_dir")) in {pod_dir_name(p)
                                                                       for p in pods}:
                found = row_of(line, peers, identities)
                if found.key() in rows:
                    rows[found.key()].merge(found)
                else:
                    rows[found.key()] = found
            if terminal and time.monotonic() - drawn > REDRAW_S:
                out.write("\x1b[H\x1b[2J" + render(list(rows.values()), hide_sources, True))
                out.flush()
                drawn = time.monotonic()
    except (KeyboardInterrupt, Stop):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not terminal:
        out.write(render(list(rows.values()), hide_sources))
    return 0
