"""fortio twin: `fortio load` / `fortio curl` as learners exec them, and `fortio server`.

    fortio load -c 2 -qps 0 -n 20 -loglevel Warning http://httpbin:8000/get
    fortio curl http://httpbin:8000/get
    python -m labs.embedded.apps.fortio server --port 8080 --port 8079   (the container)

`load` keeps one HTTP/1.1 keep-alive connection per thread and goes through `http_proxy` when it
is set (absolute-form requests, as a client configured with a proxy sends them), so a meshed
pod's sidecar sees the load exactly like fortio's own connections in a real mesh. The report
follows fortio's format: code counts, latency histogram and percentiles, sockets used.
The server echoes the request body with fortio's query options (`status`, `delay`, `size`,
`header`); its gRPC port answers HTTP too (gRPC is not emulated).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import sys
import threading
import time
import urllib.request
from collections import Counter as Tally
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from labs.duration import go_duration_text, parse_go_duration

from .fortio_stats import Counter, Histogram, go_g
from .http import TwinHandler, serve

VERSION = "1.69.5"  # the release whose command line and report format this twin follows
USER_AGENT = f"fortio.org/fortio-{VERSION}"
LOG_LEVELS = ("Debug", "Verbose", "Info", "Warning", "Error", "Critical", "Fatal")
VALUE_FLAGS = {"c", "qps", "n", "t", "H", "timeout", "loglevel", "payload", "content-type",
               "p", "r"}
BOOL_FLAGS = {"curl", "quiet", "keepalive", "k"}
USAGE = """Φορτίο {version} usage:
    fortio command [flags] target
where command is one of: load (load testing), curl (single URL debug), version
(server mode is what the fortio container runs in the embedded cluster).
Flags supported by this twin: -c connections, -qps (0 = max), -n calls, -t duration,
-H 'Name: value' (repeatable), -timeout, -loglevel, -payload, -content-type, -p percentiles,
-r resolution, -curl, -quiet, -keepalive=false, -k
"""


class UsageError(Exception):
    """A command line this twin cannot run; the message says what to change."""


# --- command line ------------------------------------------------------------------------

@dataclass
class Options:
    connections: int = 4
    qps: float = 8.0
    calls: int = 0
    duration: float = 5.0
    headers: list[tuple[str, str]] = field(default_factory=list)
    timeout: float = 3.0
    loglevel: int = 2
    payload: bytes = b""
    content_type: str = ""
    percentiles: tuple[float, ...] = (50.0, 75.0, 90.0, 99.0, 99.9)
    resolution: float = 0.001
    curl: bool = False
    quiet: bool = False
    keepalive: bool = True
    insecure: bool = False
    url: str = ""
    loglevel_changed: bool = False


def parse_duration(text: str, flag: str) -> float:
    """A duration flag, as Go's flag package parses it (time.ParseDuration)."""
    try:
        return parse_go_duration(text)
    except ValueError:
        raise UsageError(f'invalid value "{text}" for flag -{flag}: expected a duration '
                         "such as 5s, 250ms or 1m30s") from None


def _number(text: str, flag: str, kind: type[int] | type[float]) -> float:
    try:
        return kind(text)
    except ValueError:
        raise UsageError(f'invalid value "{text}" for flag -{flag}: expected a number') from None


def parse_flags(args: list[str]) -> Options:
    """Go `flag` style: -name value, -name=value, --name; flags stop at the first non-flag."""
    opts = Options()
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "-":
        token = args[i].lstrip("-")
        i += 1
        if not token:  # "--" ends the flags
            break
        name, has_value, value = token.partition("=")
        if name in BOOL_FLAGS:
            on = value.lower() not in ("false", "0") if has_value else True
            setattr(opts, {"k": "insecure"}.get(name, name), on)
            continue
        if name not in VALUE_FLAGS:
            raise UsageError(f"flag provided but not defined: -{name}")
        if not has_value:
            if i >= len(args):
                raise UsageError(f"flag needs an argument: -{name}")
            value = args[i]
            i += 1
        _apply(opts, name, value)
    rest = args[i:]
    if len(rest) != 1:
        raise UsageError("exactly one target URL is expected after the flags, e.g. "
                         "http://httpbin:8000/get" + (f" (got {' '.join(rest)})" if rest else ""))
    url = rest[0]
    opts.url = url if "://" in url else f"http://{url}"
    return opts


def _apply(opts: Options, name: str, value: str) -> None:
    if name == "c":
        opts.connections = max(int(_number(value, name, int)), 1)
    elif name == "qps":
        opts.qps = _number(value, name, float)
    elif name == "n":
        opts.calls = int(_number(value, name, int))
    elif name == "t":
        opts.duration = parse_duration(value, name)
    elif name == "timeout":
        opts.timeout = parse_duration(value, name)
    elif name == "H":
        header, sep, header_value = value.partition(":")
        if not sep or not header.strip():
            raise UsageError(f'invalid header "{value}" for -H: expected "Name: value"')
        opts.headers.append((header.strip(), header_value.strip()))
    elif name == "loglevel":
        levels = {level.lower(): n for n, level in enumerate(LOG_LEVELS)}
        if value.lower() not in levels:
            raise UsageError(f'invalid log level "{value}": use one of {", ".join(LOG_LEVELS)}')
        opts.loglevel_changed = levels[value.lower()] != opts.loglevel
        opts.loglevel = levels[value.lower()]
    elif name == "payload":
        opts.payload = value.encode()
    elif name == "content-type":
        opts.content_type = value
    elif name == "p":
        opts.percentiles = tuple(_number(p.strip(), name, float) for p in value.split(","))
    elif name == "r":
        opts.resolution = _number(value, name, float)


# --- logging (fortio's structured JSON logs go to stderr) --------------------------------

def log(opts: Options, level: int, msg: str, **fields: object) -> None:
    if level < opts.loglevel:
        return
    names = {0: "debug", 1: "trace", 2: "info", 3: "warn", 4: "err", 5: "crit", 6: "fatal"}
    entry = {"ts": round(time.time(), 6), "level": names[level], "msg": msg, **fields}
    sys.stderr.write(json.dumps(entry, separators=(",", ":")) + "\n")
    sys.stderr.flush()


# --- HTTP client -------------------------------------------------------------------------

@dataclass
class Result:
    code: int  # -1: no HTTP answer (connection refused, reset, timeout)
    header_size: int
    total_size: int
    raw: bytes = b""


class Client:
    """One keep-alive connection (to the proxy when `http_proxy` applies), reopened when the
    server closes it; counts sockets and connect times like fortio."""

    def __init__(self, opts: Options, thread: int) -> None:
        self.opts = opts
        self.thread = thread
        url = urlsplit(opts.url)
        self.https = url.scheme == "https"
        self.host = url.hostname or ""
        self.port = url.port or (443 if self.https else 80)
        self.authority = url.netloc
        proxy = urllib.request.getproxies().get("https" if self.https else "http")
        self.proxy = None if not proxy or urllib.request.proxy_bypass(self.host) else \
            urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        path = url.path or "/"
        path += f"?{url.query}" if url.query else ""
        self.target = f"{url.scheme}://{self.authority}{path}" if self.proxy and not self.https \
            else path
        self.conn: http.client.HTTPConnection | None = None
        self.reused = False
        self.sockets = 0
        self.addresses: Tally[str] = Tally()
        self.connect_times = Histogram(resolution=opts.resolution)

    def _connect(self) -> http.client.HTTPConnection:
        host, port = ((self.proxy.hostname or "", self.proxy.port or 80) if self.proxy
                      else (self.host, self.port))
        conn: http.client.HTTPConnection
        if self.https:
            import ssl  # only https targets pay for it

            context = ssl.create_default_context()
            if self.opts.insecure:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection(host, port, timeout=self.opts.timeout,
                                               context=context)
            if self.proxy:
                conn.set_tunnel(self.host, self.port)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.opts.timeout)
        started = time.perf_counter()
        conn.connect()
        self.connect_times.record(_ns(time.perf_counter() - started))
        self.sockets += 1
        address = conn.sock.getpeername()
        self.addresses[f"{address[0]}:{address[1]}"] += 1
        return conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None

    def fetch(self, keep_raw: bool = False) -> Result:
        for _ in range(2):  # a reused connection the server already closed gets one retry
            reused = self.conn is not None
            try:
                if self.conn is None:
                    self.conn = self._connect()
                return self._exchange(self.conn, keep_raw)
            except (OSError, http.client.HTTPException) as error:
                self.close()
                if reused:
                    continue
                log(self.opts, 4, "Unable to connect or read", dest=self.authority,
                    err=str(error) or type(error).__name__, thread=self.thread)
                return Result(-1, 0, 0)
        return Result(-1, 0, 0)

    def _exchange(self, conn: http.client.HTTPConnection, keep_raw: bool) -> Result:
        has_host = any(name.lower() == "host" for name, _ in self.opts.headers)
        method = "POST" if self.opts.payload else "GET"
        conn.putrequest(method, self.target, skip_host=has_host, skip_accept_encoding=True)
        conn.putheader("User-Agent", USER_AGENT)
        for name, value in self.opts.headers:
            conn.putheader(name, value)
        if self.opts.payload:
            conn.putheader("Content-Type", self.opts.content_type or "application/octet-stream")
            conn.putheader("Content-Length", str(len(self.opts.payload)))
        if not self.opts.keepalive:
            conn.putheader("Connection", "close")
        conn.endheaders(self.opts.payload or None)
        response = conn.getresponse()
        body = response.read()
        status_line = f"HTTP/1.{response.version % 10} {response.status} {response.reason}\r\n"
        head = status_line + "".join(f"{k}: {v}\r\n" for k, v in response.getheaders()) + "\r\n"
        if response.will_close or not self.opts.keepalive:
            self.close()
        if response.status != 200:
            log(self.opts, 3, "Non ok http code", code=response.status,
                status=f"HTTP/1.{response.version % 10} {response.status}", thread=self.thread,
                run=0)
        raw = head.encode("latin-1") + body if keep_raw else b""
        return Result(response.status, len(head), len(head) + len(body), raw)


# --- load --------------------------------------------------------------------------------

@dataclass
class Totals:
    latency: Histogram
    errors: Histogram
    codes: Tally[int] = field(default_factory=Tally)
    header_sizes: Counter = field(default_factory=Counter)
    total_sizes: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, result: Result, elapsed: float) -> None:
        with self.lock:
            self.latency.record(elapsed)
            if result.code != 200:
                self.errors.record(elapsed)
            self.codes[result.code] += 1
            self.header_sizes.record(result.header_size)
            self.total_sizes.record(result.total_size)


def _ns(seconds: float) -> float:
    """A duration as Go measures it (whole nanoseconds), so min/max print like fortio's."""
    return round(seconds, 9)


def _calls_per_thread(opts: Options) -> list[int | None]:
    if opts.calls <= 0:
        return [None] * opts.connections
    base, extra = divmod(opts.calls, opts.connections)
    return [base + (1 if i < extra else 0) for i in range(opts.connections)]


def _worker(opts: Options, client: Client, calls: int | None, totals: Totals,
            deadline: float) -> None:
    per_thread_qps = opts.qps / opts.connections if opts.qps > 0 else 0.0
    started = time.perf_counter()
    done = 0
    while (done < calls) if calls is not None else (time.perf_counter() < deadline):
        if per_thread_qps:
            wait = started + done / per_thread_qps - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        begin = time.perf_counter()
        result = client.fetch()
        totals.record(result, _ns(time.perf_counter() - begin))
        done += 1
    client.close()


def run_load(opts: Options, out: list[str]) -> None:
    cpus = os.cpu_count() or 1
    qps_text = "max" if opts.qps <= 0 else go_g(opts.qps)
    span = f"{opts.calls} calls" if opts.calls > 0 else go_duration_text(opts.duration)
    out.append(f"Fortio {VERSION} running at {go_g(max(opts.qps, 0))} queries per second, "
               f"{cpus}->{cpus} procs, for {span}: {opts.url}")
    per_thread = _calls_per_thread(opts)
    if opts.calls > 0:
        base, extra = divmod(opts.calls, opts.connections)
        how = (f"for exactly {opts.calls} calls ({base} per thread + {extra})" if opts.qps <= 0
               else f": exactly {opts.calls}, {base} calls each (total {opts.calls} + {extra})")
    elif opts.qps > 0:
        each = int(opts.qps / opts.connections * opts.duration)
        how = (f"for {go_duration_text(opts.duration)} : {each} calls each "
               f"(total {each * opts.connections})")
    else:
        how = f"for {go_duration_text(opts.duration)}"
    out.append(f"Starting at {qps_text} qps with {opts.connections} thread(s) [gomax {cpus}] "
               f"{how}")
    _flush(out)
    totals = Totals(Histogram(resolution=opts.resolution), Histogram(resolution=opts.resolution))
    clients = [Client(opts, i) for i in range(opts.connections)]
    started = time.perf_counter()
    threads = [threading.Thread(target=_worker, daemon=True,
                                args=(opts, client, calls, totals, started + opts.duration))
               for client, calls in zip(clients, per_thread, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    _report(opts, totals, clients, elapsed, out)


def _report(opts: Options, totals: Totals, clients: list[Client], elapsed: float,
            out: list[str]) -> None:
    count = totals.latency.count
    qps = count / elapsed if elapsed > 0 else 0.0
    out.append(f"Ended after {go_duration_text(elapsed)} : {count} calls. qps={qps:.5g}")
    out += totals.latency.report("Aggregated Function Time", opts.percentiles)
    out += totals.errors.report("Error cases", opts.percentiles)
    out.append("# Socket and IP used for each connection:")
    connect_times = Histogram(resolution=opts.resolution)
    addresses: Tally[str] = Tally()
    for client in clients:
        resolved = ", ".join(client.addresses) or "nothing (no connection)"
        out.append(f"[{client.thread}] {client.sockets:3d} socket used, resolved to {resolved}, "
                   f"{client.connect_times.line('connection timing')}")
        connect_times.merge(client.connect_times)
        addresses.update(client.addresses)
    out += connect_times.report("Connection time histogram (s)", opts.percentiles)
    sockets = sum(client.sockets for client in clients)
    out.append(f"Sockets used: {sockets} (for perfect keepalive, would be {len(clients)})")
    out.append("Uniform: false, Jitter: false, Catchup allowed: true")
    out.append("IP addresses distribution:")
    out += [f"{address}: {n}" for address, n in addresses.items()]
    for code in sorted(totals.codes):
        out.append(f"Code {code:3d} : {totals.codes[code]} "
                   f"({100.0 * totals.codes[code] / max(count, 1):.1f} %)")
    out.append(totals.header_sizes.line("Response Header Sizes"))
    out.append(totals.total_sizes.line("Response Body/Total Sizes"))
    out.append(f"All done {count} calls (plus 0 warmup) {totals.latency.avg * 1000:.3f} ms avg, "
               f"{qps:.1f} qps")


def _flush(out: list[str]) -> None:
    if out:
        sys.stdout.write("\n".join(out) + "\n")
        sys.stdout.flush()
        out.clear()


def run_curl(opts: Options) -> int:
    client = Client(opts, 0)
    result = client.fetch(keep_raw=True)
    client.close()
    if result.code < 0:
        return 1
    sys.stdout.buffer.write(result.raw)
    sys.stdout.flush()
    return 0 if 200 <= result.code < 300 else 1


# --- server ------------------------------------------------------------------------------

class EchoHandler(TwinHandler):
    """fortio's echo server: the body comes back; ?status=, ?delay=, ?size=, ?header= apply."""

    server_version = f"fortio.org/fortio-{VERSION}"

    def _handle(self) -> None:
        body = self.read_body()
        query = {k: v[-1] for k, v in self.query.items()}
        if self.url_path.startswith("/debug"):
            lines = [f"Φορτίο version {VERSION} echo debug server on "
                     f"{os.environ.get('HOSTNAME', '')} - request from {self.client_address[0]}",
                     "", f"{self.command} {self.path} {self.request_version}", "", "headers:", ""]
            lines += [f"{name}: {value}" for name, value in self.headers.items()]
            lines += ["", f"body:\n\n{body.decode('utf-8', 'replace')}"]
            self.reply(200, "\n".join(lines) + "\n", "text/plain; charset=UTF-8")
            return
        try:
            status = _echo_status(query.get("status", "200"))
            delay = parse_duration(query["delay"], "delay") if "delay" in query else 0.0
            size = int(query["size"]) if "size" in query else None
        except (UsageError, ValueError) as error:
            self.reply(400, f"bad echo option: {error}\n")
            return
        time.sleep(min(delay, 1.5))  # fortio caps echo delays at 1.5 s by default
        extra = [tuple(h.split(":", 1)) for h in self.query.get("header", []) if ":" in h]
        payload = body if size is None else os.urandom(size // 2).hex().encode()[:size]
        self.reply(status, payload,
                   self.headers.get("Content-Type", "application/octet-stream"),
                   [(k.strip(), v.strip()) for k, v in extra])

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


def _echo_status(spec: str) -> int:
    """`503` or fortio's probabilistic `503:20,429:10` (percentages; the rest is 200)."""
    if ":" not in spec:
        return int(spec)
    roll = random.uniform(0, 100)
    for part in spec.split(","):
        code, _, percent = part.partition(":")
        roll -= float(percent or 100)
        if roll < 0:
            return int(code)
    return 200


# --- entry point -------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else ""
    try:
        if command == "server":
            ports = [int(p) for flag, p in zip(args[1::2], args[2::2], strict=False)
                     if flag == "--port"]
            serve(EchoHandler, ports, f"fortio {VERSION} echo server")
            return 0
        if command == "version":
            print(VERSION)
            return 0
        if command not in ("load", "curl"):
            raise UsageError(f"unknown command {command!r}" if command else "missing command")
        opts = parse_flags(args[1:])
        if opts.loglevel_changed:
            log(Options(loglevel=0), 2, f"Log level is now {opts.loglevel} "
                f"{LOG_LEVELS[opts.loglevel]} (was 2 Info)")
        if command == "curl" or opts.curl:
            return run_curl(opts)
        out: list[str] = []
        run_load(opts, out)
        _flush(out)
        return 0
    except UsageError as error:
        sys.stderr.write(USAGE.format(version=VERSION) + f"\nError: {error}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
