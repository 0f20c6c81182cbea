"""hey twin: the HTTP load generator of Flagger's load tester image (rakyll/hey).

    hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/
    hey -n 20 -c 2 -m POST -H 'X-Test: 1' -d '{"a":1}' http://podinfo.test:9898/echo

Flags and their defaults follow rakyll/hey `hey.go` (-n 200, -c 50, -q per-worker rate, -z
duration (then -n is ignored), -m, -H repeatable, -d, -D, -T text/html, -A, -a, -host, -U, -t 20 s
timeout, -disable-keepalive, -disable-compression, -disable-redirects, -cpus); each of the -c
workers sends -n/-c requests (`requester.go` runWorkers). The summary on stdout is
`requester/print.go`'s default template: totals, the 11-bucket histogram, the latency
percentiles, per-phase details and the status code and error distributions.

Where it differs, visibly: requests go through the pod's network path — its `http_proxy` (a
meshed pod's sidecar, else the node forwarder), since the embedded cluster has no DNS, while the
real hey dials directly (its `-x` proxy is honoured the same way); its pod's `localhost` is the
pod's. Not supported (a clear error): `-o csv`, `-h2`; redirects are not followed; DNS-lookup
times are 0 (names are resolved by the proxy).
"""

from __future__ import annotations

import base64
import http.client
import math
import os
import re
import signal
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from types import FrameType
from urllib.parse import urlsplit

from . import localhost
from .fortio import UsageError, parse_duration

USER_AGENT = "hey/0.0.1"
USAGE = """Usage: hey [options...] <url>

Options:
  -n  Number of requests to run. Default is 200.
  -c  Number of workers to run concurrently. Total number of requests cannot
      be smaller than the concurrency level. Default is 50.
  -q  Rate limit, in queries per second (QPS) per worker. Default is no rate limit.
  -z  Duration of application to send requests. When duration is reached,
      application stops and exits. If duration is specified, n is ignored.
      Examples: -z 10s -z 3m.
  -m  HTTP method, one of GET, POST, PUT, DELETE, HEAD, OPTIONS.
  -H  Custom HTTP header. You can specify as many as needed by repeating the flag.
  -t  Timeout for each request in seconds. Default is 20, use 0 for infinite.
  -A  HTTP Accept header.
  -d  HTTP request body.
  -D  HTTP request body from file.
  -T  Content-type, defaults to "text/html".
  -U  User-Agent, defaults to version "hey/0.0.1".
  -a  Basic authentication, username:password.
  -x  HTTP Proxy address as host:port.
  -host	HTTP Host header.
  -disable-compression  -disable-keepalive  -disable-redirects  -cpus
(twin of rakyll/hey for the embedded cluster: -o csv and -h2 are not supported)
"""
VALUE_FLAGS = {"n", "c", "q", "z", "m", "H", "t", "A", "d", "D", "T", "U", "a", "x", "host",
               "o", "cpus", "h"}
BOOL_FLAGS = {"disable-compression", "disable-keepalive", "disable-redirects", "h2"}
_HEADER = re.compile(r"^([\w-]+):\s*(.+)")
_AUTH = re.compile(r"^(.+):([^\s].+)")


@dataclass
class Options:
    url: str = ""
    requests: int = 200
    workers: int = 50
    qps: float = 0.0
    duration: float = 0.0
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    timeout: float = 20.0
    keepalive: bool = True
    proxy: str = ""


def parse(args: list[str]) -> Options:
    """Go `flag` parsing of hey's command line, with hey's own checks and messages."""
    values: dict[str, list[str]] = {}
    bools: set[str] = set()
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "-":
        name, has_value, value = args[i].lstrip("-").partition("=")
        i += 1
        if not name:
            break
        if name in BOOL_FLAGS:
            if not has_value or value.lower() in ("1", "t", "true"):
                bools.add(name)
            continue
        if name not in VALUE_FLAGS:
            raise UsageError(f"flag provided but not defined: -{name}")
        if not has_value:
            if i >= len(args):
                raise UsageError(f"flag needs an argument: -{name}")
            value, i = args[i], i + 1
        values.setdefault(name, []).append(value)
    if i >= len(args):
        raise UsageError("")
    last = {k: v[-1] for k, v in values.items()}
    if last.get("h"):
        raise UsageError("Flag '-h' is deprecated, please use '-H' instead.")
    if last.get("o") or "h2" in bools:
        raise UsageError("this twin prints hey's summary only (-o csv and -h2 are not supported)")
    opts = Options(url=args[i], keepalive="disable-keepalive" not in bools)
    try:
        opts.requests = int(last.get("n", "200"))
        opts.workers = int(last.get("c", "50"))
        opts.qps = float(last.get("q", "0"))
        opts.timeout = float(int(last.get("t", "20")))
    except ValueError as error:
        raise UsageError(f"invalid value: {error}") from None
    opts.duration = parse_duration(last["z"], "z") if "z" in last else 0.0
    if opts.duration > 0:
        if opts.workers <= 0:
            raise UsageError("-c cannot be smaller than 1.")
    elif opts.requests <= 0 or opts.workers <= 0:
        raise UsageError("-n and -c cannot be smaller than 1.")
    elif opts.requests < opts.workers:
        raise UsageError("-n cannot be less than -c.")
    opts.method = last.get("m", "GET").upper()
    opts.headers["Content-Type"] = last.get("T", "text/html")
    for header in values.get("H", []):
        match = _HEADER.match(header)
        if match is None:
            raise UsageError(f"could not parse the provided input; input = {header}")
        opts.headers["-".join(w.capitalize() for w in match[1].split("-"))] = match[2]
    if "A" in last:
        opts.headers["Accept"] = last["A"]
    if "a" in last:
        match = _AUTH.match(last["a"])
        if match is None:
            raise UsageError(f"could not parse the provided input; input = {last['a']}")
        token = base64.b64encode(f"{match[1]}:{match[2]}".encode()).decode()
        opts.headers["Authorization"] = f"Basic {token}"
    if "host" in last:
        opts.headers["Host"] = last["host"]
    agent = opts.headers.get("User-Agent")
    opts.headers["User-Agent"] = f"{agent} {USER_AGENT}" if agent else USER_AGENT
    if "U" in last:
        opts.headers["User-Agent"] = f"{last['U']} {USER_AGENT}"
    if "d" in last:
        opts.body = last["d"].encode()
    if "D" in last:
        try:
            with open(last["D"], "rb") as source:
                opts.body = source.read()
        except OSError as error:
            raise SystemExit(f"hey: cannot read -D {last['D']}: {error.strerror}") from None
    opts.proxy = last.get("x", "")
    return opts


@dataclass
class Result:
    duration: float
    conn: float = 0.0
    write: float = 0.0
    wait: float = 0.0
    read: float = 0.0
    status: int = 0
    size: int = 0
    error: str = ""


class Worker:
    """One of hey's workers: its requests on one keep-alive connection (to the proxy when the
    pod's `http_proxy` applies: absolute-form requests, as an HTTP client behind a proxy)."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        url = urlsplit(opts.url if "://" in opts.url else f"http://{opts.url}")
        if url.scheme != "http":
            raise UsageError(f"only http:// URLs can be loaded by this twin (got {opts.url})")
        self.url = url.geturl()
        host, port = url.hostname or "", url.port or 80
        proxy = opts.proxy or urllib.request.getproxies().get("http", "")
        if proxy and not urllib.request.proxy_bypass(host):
            parsed = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            self.address = (parsed.hostname or "127.0.0.1", parsed.port or 80)
            self.target = self.url
        else:
            try:
                mapped = localhost.dial_port(host, port, os.environ)
            except localhost.NotInPod:
                mapped = port
            self.address = (host, mapped or port)
            self.target = url.path or "/"
            self.target += f"?{url.query}" if url.query else ""
        self.conn: http.client.HTTPConnection | None = None

    def request(self) -> Result:
        begin = time.perf_counter()
        result = Result(0.0)
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(*self.address,
                                                       timeout=self.opts.timeout or None)
                self.conn.connect()
                result.conn = time.perf_counter() - begin
            sent = time.perf_counter()
            self.conn.putrequest(self.opts.method, self.target,
                                 skip_host="Host" in self.opts.headers,
                                 skip_accept_encoding=True)
            for name, value in self.opts.headers.items():
                self.conn.putheader(name, value)
            if self.opts.body or self.opts.method in ("POST", "PUT", "PATCH"):
                self.conn.putheader("Content-Length", str(len(self.opts.body)))  # as Go's
            if not self.opts.keepalive:
                self.conn.putheader("Connection", "close")
            self.conn.endheaders(self.opts.body or None)
            written = time.perf_counter()
            response = self.conn.getresponse()
            first = time.perf_counter()
            response.read()
            result.write, result.wait = written - sent, first - written
            result.read = time.perf_counter() - first
            result.status = response.status
            result.size = int(response.getheader("Content-Length") or -1)
            if response.will_close or not self.opts.keepalive:
                self.close()
        except (OSError, http.client.HTTPException) as error:
            self.close()
            verb = self.opts.method.capitalize()
            reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
            result.error = f'{verb} "{self.url}": {reason.lower()}'
        result.duration = time.perf_counter() - begin
        return result

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None


def run(opts: Options, stop: threading.Event) -> tuple[list[Result], float]:
    """hey's runWorkers: -c workers of -n/-c requests each (unbounded with -z), each throttled
    to -q requests per second, until done or `stop`."""
    results: list[Result] = []
    lock = threading.Lock()
    per_worker = None if opts.duration > 0 else opts.requests // opts.workers
    workers = [Worker(opts) for _ in range(opts.workers)]

    def work(worker: Worker) -> None:
        done = 0
        started = time.perf_counter()
        while (per_worker is None or done < per_worker) and not stop.is_set():
            if opts.qps > 0:
                wait = started + (done + 1) / opts.qps - time.perf_counter()
                if wait > 0 and stop.wait(wait):
                    break
            result = worker.request()
            with lock:
                results.append(result)
            done += 1
        worker.close()

    started = time.perf_counter()
    timer = threading.Timer(opts.duration, stop.set)
    if opts.duration > 0:
        timer.start()
    threads = [threading.Thread(target=work, args=(w,), daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    timer.cancel()
    return results, time.perf_counter() - started


def _n(value: float) -> str:
    """formatNumber: Go's %4.4f (NaN, an average of no successful request, prints as Go's)."""
    return " NaN" if math.isnan(value) else f"{value:4.4f}"


def summary(results: list[Result], total: float) -> str:
    """print.go's defaultTmpl, with report.go's statistics (its quirks too: the "fastest,
    slowest" detail columns are the sorted phase times' first and last)."""
    ok = [r for r in results if not r.error]
    lats = sorted(r.duration for r in ok)
    count = len(lats) or math.nan  # report.go divides by len(lats) all the same
    size_total = sum(r.size for r in ok if r.size > 0)
    rps = len(results) / total if total > 0 else 0.0
    fastest, slowest = (lats[0], lats[-1]) if lats else (0.0, 0.0)
    out = ["", "Summary:", f"  Total:\t{_n(total)} secs", f"  Slowest:\t{_n(slowest)} secs",
           f"  Fastest:\t{_n(fastest)} secs", f"  Average:\t{_n(sum(lats) / count)} secs",
           f"  Requests/sec:\t{_n(rps)}", "  "]
    if size_total > 0:
        out[-1] += (f"\n  Total data:\t{size_total} bytes"
                    f"\n  Size/request:\t{size_total // len(lats)} bytes")
    out += ["", "Response time histogram:"]
    if lats:
        step = (slowest - fastest) / 10
        marks = [fastest + step * i for i in range(10)] + [slowest]
        counts = [0] * 11
        bucket = 0
        for lat in lats:
            while lat > marks[bucket] and bucket < 10:
                bucket += 1
            counts[bucket] += 1
        top = max(counts)
        out += [f"  {mark:4.3f} [{n}]\t|{'■' * ((n * 40 + top // 2) // top)}"
                for mark, n in zip(marks, counts, strict=True)]
    out += ["", "", "Latency distribution:"]
    pcts, found = (10, 25, 50, 75, 90, 95, 99), [0.0] * 7
    j = 0
    for i, lat in enumerate(lats):  # report.go latencies: at most one percentile per sample
        if j < len(pcts) and i * 100 // len(lats) >= pcts[j]:
            found[j] = lat
            j += 1
    out += [f"  {pct if value > 0 else 0}% in {_n(value)} secs"
            for pct, value in zip(pcts, found, strict=True)]
    out += ["", "Details (average, fastest, slowest):"]
    for label, phase in (("DNS+dialup", "conn"), ("DNS-lookup", ""), ("req write", "write"),
                         ("resp wait", "wait"), ("resp read", "read")):
        values = sorted(getattr(r, phase) if phase else 0.0 for r in ok) or [0.0]
        out.append(f"  {label}:\t{_n(sum(values) / count)} secs, {_n(values[0])} secs, "
                   f"{_n(values[-1])} secs")
    out += ["", "Status code distribution:"]
    codes = Counter(r.status for r in ok)
    out += [f"  [{code}]\t{n} responses" for code, n in sorted(codes.items())]
    out += ["", ""]
    errors = Counter(r.error for r in results if r.error)
    if errors:
        out[-1] = "Error distribution:" + "".join(
            f"\n  [{n}]\t{error}" for error, n in sorted(errors.items()))
    return "\n".join(out) + "\n\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        opts = parse(args)
        Worker(opts)  # an unusable URL is a usage error before any request
    except UsageError as error:
        message = str(error)
        sys.stderr.write((f"{message}\n\n" if message else "") + USAGE + "\n")
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    results, total = run(opts, stop)
    sys.stdout.write(summary(results, total))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
