"""Benchmark of the embedded Istio mesh.

Prints, for a fresh cluster in a temporary state directory:
- `meshlab up` + bookinfo and curl applied in an injected namespace -> the first 200 from
  productpage, asked from the curl pod with `kubectl exec deploy/curl -- curl ...` (target <= 5 s),
  against the baseline of one such exec once everything runs; and, with Istio's bookinfo Gateway
  and VirtualService applied in the same `kubectl apply`, the first 200 of
  `http://127.0.0.1:<INGRESS_PORT>/productpage` through the istio-ingressgateway (target <= 3 s);
- VirtualService change -> traffic following it: 50 alternating changes of the reviews
  VirtualService (all v1 <-> all v3), each timed from the API PATCH returning to the first response
  served by the new version, asked through the curl pod's sidecar (its outbound HTTP proxy port)
  from this process on a kept-alive connection; p50/p95 (target p95 <= 200 ms), against the
  baseline of the PATCH itself;
- config change -> effective for the next request for DestinationRule (a subset's labels),
  PeerAuthentication (PERMISSIVE <-> STRICT, seen on fresh plaintext connections),
  AuthorizationPolicy (DENY on/off), RequestAuthentication (its JWKS), Gateway (its hosts,
  through the ingress gateway) and HTTPRoute (its path, through a Gateway API gateway): p50/p95
  of 20 alternating changes each, against the PATCH;
- added latency per sidecar hop, in rounds interleaving every variant: p50 of requests straight
  to httpbin's app port (the baseline), through a bare pair of Envoys with the mesh's flags
  (bench/envoy_pair.py; alone, then with each feature of a sidecar hop: fault filter, JSON
  telemetry log, tracer at 1 %, text access log, all of them, tracing at 100 %: what each costs
  per hop, with Envoy's own timestamps of the bare hop), and through curl's and httpbin's
  sidecars in plaintext under Istio's default profile (no access log; metrics and 1 % tracing:
  what issue 12's target applies to) and under the course's (access log on), with a Telemetry
  resource at 100 % and with tracing and access logging off, and over mTLS under both profiles;
  each as added µs per hop, as a ratio to the bare pair (target <= 1.2x; mTLS <= +20 % over
  plaintext) and with the CPU the Envoys and the daemon used per request; beside them ambient
  mode's L4 hop: two Envoys in ztunnel's role speaking HBONE (bench/envoy_pair.py
  `hbone_pair`, the product's builders), on one kept-alive tunnel;
- added latency of authorization: p50 over mTLS with an AuthorizationPolicy on httpbin (ALLOW by
  principal and path, plus a DENY rule), then also with a RequestAuthentication and a valid JWT
  on every request, as ratios against the mTLS p50 without policy measured just before;
- total RSS of the daemon, every pod process, the Envoys and the forwarder with bookinfo, httpbin,
  curl and fortio meshed (target <= 600 MB); Prometheus listed separately. PSS (shared pages
  split between processes) is printed too: RSS counts the Envoy binary once per Envoy.

Run: `.venv/bin/python bench/mesh.py` (`--hops`: only the per-hop latency, a few minutes)
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for `labs`
sys.path.insert(0, str(Path(__file__).resolve().parent))  # this directory, for `common`

from common import BOOKINFO_GATEWAY, Api, cluster_memory, percentile
from envoy_pair import HBONE_HOST, TIMING_SPANS, Features, envoy_pair, hbone_pair

from labs.cluster import EmbeddedCluster, kubectl_binary
from labs.istio_names import SIDECAR_CONTAINER
from labs.tokens import Signer

Obj = dict[str, object]

NAMESPACE = "bench"
MANIFESTS = Path(__file__).resolve().parents[1] / "labs" / "manifests"
CHANGES = 50
HOP_SAMPLES = 1000
HOP_ROUNDS = 5
HOP_PATHS = ("/get", "/status/200")
WARM_UP = 50
BARE = "bare pair (baseline of the ratios)"
HBONE = "ambient L4: HBONE pair, Envoy as ztunnel"
TIMED = "bare + Envoy's timestamps logged"
# The mesh config's telemetry, by profile: whether `accessLogFile: /dev/stdout` is set. Istio's
# default profile has no access log (istio/istio pkg/config/mesh/mesh.go, DefaultMeshConfig):
# metrics (here the JSON telemetry log) and tracing at 1 %; the course installs Istio with the
# access log on, as Istio's demo profile and "Envoy Access Logs" task do
# (labs/embedded/mesh/istio/meshconfig.py, DEFAULT_MESH).
DEFAULT, COURSE = "Istio default profile", "course profile"
PROFILES = {DEFAULT: False, COURSE: True}
FIRST_200_TIMEOUT = 60.0
CHANGE_TIMEOUT = 5.0
KIND_CHANGES = 20
VS_PATH = (f"/apis/networking.istio.io/v1/namespaces/{NAMESPACE}/virtualservices")
ISSUER = "https://issuer.meshlab.test"
REVIEWS_DR = {
    "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
    "metadata": {"name": "reviews"},
    "spec": {"host": "reviews", "subsets": [
        {"name": v, "labels": {"version": v}} for v in ("v1", "v2", "v3")]},
}


class Kubectl:
    def __init__(self, kubeconfig: Path) -> None:
        self.base = [kubectl_binary(), f"--kubeconfig={kubeconfig}", f"--namespace={NAMESPACE}"]

    def __call__(self, *args: str, input: str | None = None,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.base, *args], input=input, capture_output=True, text=True,
                              check=check, timeout=120)

    def apply(self, *objects: dict[str, object]) -> None:
        self("apply", "-f", "-", input=yaml.safe_dump_all(objects))

    def annotation(self, app: str, key: str) -> dict[str, int]:
        out = self("get", "pods", "-l", f"app={app}", "-o", "json").stdout
        pod = json.loads(out)["items"][0]
        return {k: int(v) for k, v in json.loads(pod["metadata"]["annotations"][key]).items()}


class Http:
    """A kept-alive HTTP/1.1 connection to 127.0.0.1:`port`; `proxied` sends absolute URLs
    (what an app does through its sidecar's outbound listener); `tunnel` is first asked for
    with `CONNECT tunnel` (what a captured pod's client does through ztunnel here)."""

    def __init__(self, port: int, tunnel: str | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        if tunnel:
            self.conn.set_tunnel(tunnel)

    def getter(self, url: str) -> Callable[[], tuple[int, bytes]]:
        """`get(url)` as a function of no arguments, for `p50_ms`."""
        return lambda: self.get(url)

    def get(self, url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """One GET; sent again once on a new connection when the kept-alive one was closed
        before any response, as HTTP clients do for idempotent requests (a sidecar closes its
        idle connections when the listener they belong to is replaced)."""
        try:
            self.conn.request("GET", url, headers=headers or {})
            response = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                http.client.CannotSendRequest, http.client.ResponseNotReady):
            self.conn.close()
            self.conn.request("GET", url, headers=headers or {})
            response = self.conn.getresponse()
        try:
            return response.status, response.read()
        except http.client.IncompleteRead:  # cut mid-body: the next request needs a new one
            self.conn.close()
            raise


def first_200_from_productpage(cluster: EmbeddedCluster) -> tuple[float, float, float]:
    """Seconds from `meshlab up` to the first 200 from productpage via the curl pod and via the
    ingress gateway's node port (polled side by side), and the cost of one such `kubectl exec`
    afterwards (the baseline)."""
    start = time.perf_counter()
    kubeconfig = cluster.up()
    kubectl = Kubectl(kubeconfig)
    kubectl("create", "namespace", NAMESPACE)
    kubectl("label", "namespace", NAMESPACE, "istio-injection=enabled")
    gateway_yaml = yaml.safe_dump_all(BOOKINFO_GATEWAY)
    kubectl("apply", "-f", str(MANIFESTS / "bookinfo.yaml"), "-f", str(MANIFESTS / "curl.yaml"),
            "-f", "-", input=gateway_yaml)
    port = kubectl("-n", "istio-system", "get", "service", "istio-ingressgateway", "-o",
                   'jsonpath={.spec.ports[?(@.name=="http2")].nodePort}').stdout.strip()
    through_gateway: list[float] = []
    poller = threading.Thread(target=_first_200, daemon=True, args=(
        f"http://127.0.0.1:{port}/productpage", start, through_gateway))
    poller.start()
    probe = ("exec", "deploy/curl", "--", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
             "http://productpage:9080/productpage")
    while kubectl(*probe, check=False).stdout.strip() != "200":
        if time.perf_counter() - start > FIRST_200_TIMEOUT:
            raise SystemExit(f"no 200 from productpage within {FIRST_200_TIMEOUT:.0f}s")
        time.sleep(0.05)
    first = time.perf_counter() - start
    poller.join(FIRST_200_TIMEOUT)
    if not through_gateway:
        raise SystemExit(f"no 200 through the ingress gateway (node port {port}) within "
                         f"{FIRST_200_TIMEOUT:.0f}s")
    exec_start = time.perf_counter()
    kubectl(*probe)
    return first, through_gateway[0], time.perf_counter() - exec_start


def _first_200(url: str, start: float, found: list[float]) -> None:
    """Poll `url` until it answers 200; append the seconds since `start`."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while time.perf_counter() - start < FIRST_200_TIMEOUT:
        try:
            with opener.open(url, timeout=2) as response:
                if response.status == 200:
                    found.append(time.perf_counter() - start)
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.02)


def reviews_vs(version: str) -> dict[str, object]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "reviews"},
            "spec": {"hosts": ["reviews"],
                     "http": [{"route": [{"destination": {"host": "reviews",
                                                          "subset": version}}]}]}}


def served_version(client: Http) -> str:
    status, body = client.get("http://reviews:9080/reviews/0")
    if status != 200:
        return f"status {status}"
    podname = json.loads(body)["podname"]  # reviews-v1-<hash>-<id>
    return str(podname.split("-")[1])


def vs_change_to_traffic(kubectl: Kubectl, api: Api, outbound: int
                         ) -> tuple[list[float], list[float], list[int]]:
    """Per change: ms from the PATCH returning to the first response of the new version; the
    PATCH round trips; and how many requests each change took to show."""
    kubectl.apply(REVIEWS_DR, reviews_vs("v1"))
    client = Http(outbound)
    deadline = time.monotonic() + 30
    while served_version(client) != "v1":
        if time.monotonic() > deadline:
            raise SystemExit("reviews never served v1 only after the first VirtualService")
        time.sleep(0.01)
    effective, patch_ms, attempts = [], [], []
    for i in range(CHANGES):
        target = "v3" if i % 2 == 0 else "v1"
        sent = time.perf_counter()
        status, body = api.request("PATCH", f"{VS_PATH}/reviews",
                                   {"spec": reviews_vs(target)["spec"]},
                                   "application/merge-patch+json")
        returned = time.perf_counter()
        if status != 200:
            raise SystemExit(f"PATCH of the reviews VirtualService failed: {status} {body!r}")
        tries = 0
        while True:
            tries += 1
            if served_version(client) == target:
                break
            if time.perf_counter() - returned > CHANGE_TIMEOUT:
                raise SystemExit(f"change {i} to {target} not effective within "
                                 f"{CHANGE_TIMEOUT:.0f}s")
        effective.append((time.perf_counter() - returned) * 1000)
        patch_ms.append((returned - sent) * 1000)
        attempts.append(tries)
    return effective, patch_ms, attempts


def p50_ms(fetch: Callable[[], tuple[int, bytes]], n: int = HOP_SAMPLES) -> tuple[float, int]:
    """p50 in ms of `n` requests after a warm-up, and how many of them were not 200."""
    for _ in range(WARM_UP):  # warm up connections (and TLS sessions)
        fetch()
    times, failed = [], 0
    for _ in range(n):
        start = time.perf_counter()
        status, _ = fetch()
        times.append((time.perf_counter() - start) * 1000)
        failed += status != 200
    return statistics.median(times), failed


def converge(fetch: Callable[[], tuple[int, bytes]], check: Callable[[bytes], bool],
             what: str, stable_for: float = 1.0) -> None:
    """Wait until `check` holds for `stable_for` seconds without a break: a policy made of
    two objects may reach the proxies in two passes."""
    deadline = time.monotonic() + 30
    since: float | None = None
    while True:
        status, body = fetch()
        now = time.monotonic()
        since = (since or now) if status == 200 and check(body) else None
        if since is not None and now - since >= stable_for:
            return
        if now > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.01)


def cpu_us(pids: list[int]) -> float:
    """CPU time (µs) the processes `pids` have used so far, every thread of each, from the
    scheduler's nanosecond counters (/proc/PID/task/TID/schedstat): clock ticks are too coarse
    for a few µs per request."""
    total = 0
    for pid in pids:
        for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int(stat.read_text().split()[0])
    return total / 1000


def sidecar_envoys(daemon_pid: int, *apps: str) -> list[int]:
    """The pids of the Envoys in the sidecars of the pods of `apps` (in NAMESPACE)."""
    return [process.pid for process in cluster_memory(daemon_pid)
            if process.comm == "envoy" and process.owner.endswith(f"/{SIDECAR_CONTAINER}")
            and process.owner.startswith(tuple(f"{NAMESPACE}/{app}-" for app in apps))]


def set_telemetry(kubectl: Kubectl, spec: dict[str, object] | None) -> None:
    """The namespace's Telemetry resource `bench` (None: none), then a moment for the sidecars'
    listeners to be rewritten (the bench's client reconnects when they close its connection)."""
    if spec is None:
        kubectl("delete", "telemetry", "bench", "--ignore-not-found")
    else:
        kubectl.apply({"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
                       "metadata": {"name": "bench"}, "spec": spec})
    time.sleep(1.0)


def set_profile(kubectl: Kubectl, profile: str, admin_ports: list[int]) -> None:
    """Switch the mesh config to `profile` (PROFILES: with or without `accessLogFile`) and wait
    until every sidecar whose admin port is in `admin_ports` has (or no longer has) its text
    access log on /dev/stdout."""
    system = ("-n", "istio-system")
    text = kubectl(*system, "get", "configmap", "istio", "-o", "jsonpath={.data.mesh}").stdout
    mesh = yaml.safe_load(text) or {}
    access_log = PROFILES[profile]
    if access_log:
        mesh["accessLogFile"] = "/dev/stdout"
    else:
        mesh.pop("accessLogFile", None)
    kubectl(*system, "patch", "configmap", "istio", "--type", "merge",
            "-p", json.dumps({"data": {"mesh": yaml.safe_dump(mesh)}}))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 30
    for port in admin_ports:
        url = f"http://127.0.0.1:{port}/config_dump?resource=dynamic_listeners"
        while True:
            with opener.open(url, timeout=5) as response:
                if (b'"/dev/stdout"' in response.read()) == access_log:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"the sidecars never took the mesh config of the {profile}")
            time.sleep(0.05)
    time.sleep(1.0)  # the replaced listeners' connections drain (ENVOY_FLAGS: 1 s)


def hop_latency(kubectl: Kubectl, outbound: int, daemon_pid: int, zipkin_port: int,
                path: str) -> HopResults:
    """Per round (`HOP_ROUNDS`, interleaved so load changes hit every variant alike): p50 ms of
    requests straight to httpbin's app port (the baseline); through a bare Envoy pair with the
    mesh's flags, alone and with each feature a sidecar hop carries (the fault filter, the JSON
    telemetry log, the tracer at 1 %, the text access log, all of Istio's default profile, all
    of the course's, tracing at 100 %), the bare pair's timing log giving Envoy's own view of
    where a hop's time goes; and through curl's and httpbin's sidecars in plaintext under
    Istio's default profile and the course's (PROFILES), with a Telemetry resource at 100 % and
    with tracing and access logging off, then over mTLS under both profiles. Each with the CPU
    the two Envoys used per request and, through the sidecars, the daemon's.
    `path` is httpbin's: /get echoes the request headers (so the app's answer grows with what the
    proxies add: B3 and x-envoy headers, XFCC), /status/200 answers with no body."""
    app_port = kubectl.annotation("httpbin", "meshlab.dev/app-ports")["8080"]
    admin_ports = [kubectl.annotation(app, "meshlab.dev/proxy-ports")["admin"]
                   for app in ("curl", "httpbin")]
    envoys = sidecar_envoys(daemon_pid, "curl", "httpbin")
    if len(envoys) != 2:
        raise SystemExit(f"expected the Envoys of curl's and httpbin's sidecars, found {envoys}")
    direct_client = Http(app_port)
    url, headers_url = f"http://httpbin:8000{path}", "http://httpbin:8000/headers"

    def policy(mode: str, tls: str) -> None:
        kubectl.apply(
            {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
             "metadata": {"name": "default"}, "spec": {"mtls": {"mode": mode}}},
            {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
             "metadata": {"name": "httpbin"},
             "spec": {"host": "httpbin", "trafficPolicy": {"tls": {"mode": tls}}}})

    results = HopResults(path)
    trace1 = {"sampling": 1.0, "zipkin_port": zipkin_port}
    default = {"fault": True, "json_log": True, **trace1}
    bare_variants = {
        BARE: Features(),
        TIMED: Features(timing=True),
        "bare + fault filter": Features(fault=True),
        "bare + JSON telemetry log": Features(json_log=True),
        "bare + tracer at 1 %": Features(**trace1),
        "bare + text access log": Features(text_log=True),
        f"bare + all of the {DEFAULT}": Features(**default),
        f"bare + all of the {COURSE}": Features(**default, text_log=True),
        "bare + all, tracing 100 %": Features(**{**default, "sampling": 100.0}, text_log=True)}
    envoy = [{"name": "envoy"}]
    mesh_variants: dict[str, tuple[str, dict[str, object] | None]] = {
        f"mesh, {DEFAULT}": (DEFAULT, None),
        f"mesh, {COURSE}": (COURSE, None),
        "mesh, course + Telemetry tracing 100 %": (COURSE, {
            "tracing": [{"randomSamplingPercentage": 100}]}),
        "mesh, Telemetry: no tracing, no access log": (COURSE, {
            "tracing": [{"disableSpanReporting": True}],
            "accessLogging": [{"providers": envoy, "disabled": True}]}),
    }
    client = Http(outbound)

    def measure(name: str, fetch: Callable[[], tuple[int, bytes]], pids: list[int]) -> None:
        cpu = cpu_us(pids)
        daemon = cpu_us([daemon_pid])
        results.add(name, p50_ms(fetch))
        requests = HOP_SAMPLES + WARM_UP
        results.cpu.setdefault(name, []).append((cpu_us(pids) - cpu) / requests / 2)
        if pids is envoys:
            results.daemon_cpu.setdefault(name, []).append(
                (cpu_us([daemon_pid]) - daemon) / requests)

    for _ in range(HOP_ROUNDS):
        results.add("direct", p50_ms(lambda: direct_client.get(path)))
        for name, features in bare_variants.items():
            with envoy_pair(app_port, features) as pair:
                measure(name, Http(pair.client_port).getter(url), list(pair.pids))
                if features.timing:
                    time.sleep(0.5)  # Envoy flushes its logs every 0.2 s (ENVOY_FLAGS)
                    results.timings.append(pair.timings())
        with hbone_pair(app_port) as pair:
            measure(HBONE, Http(pair.client_port, HBONE_HOST).getter(path), list(pair.pids))
        policy("DISABLE", "DISABLE")
        converge(lambda: client.get(headers_url), lambda b: b"X-Forwarded-Client-Cert" not in b,
                 "plaintext between the sidecars")
        for name, (profile, spec) in mesh_variants.items():
            set_profile(kubectl, profile, admin_ports)
            set_telemetry(kubectl, spec)
            measure(name, lambda: client.get(url), envoys)
        set_telemetry(kubectl, None)
        policy("STRICT", "ISTIO_MUTUAL")
        converge(lambda: client.get(headers_url), lambda b: b"X-Forwarded-Client-Cert" in b,
                 "mTLS between the sidecars")
        for profile in (COURSE, DEFAULT):
            set_profile(kubectl, profile, admin_ports)
            measure(f"mesh mTLS, {profile}", lambda: client.get(url), envoys)
    set_profile(kubectl, COURSE, admin_ports)  # as installed, for what the bench does next
    return results


@dataclass
class HopResults:
    """p50s (ms) per variant and round, non-200 counts, CPU µs per request per hop of the two
    Envoys and the daemon's per request, and the bare pair's timing logs (one per round)."""

    path: str
    p50: dict[str, list[float]] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    daemon_cpu: dict[str, list[float]] = field(default_factory=dict)
    timings: list[dict[str, dict[str, float]]] = field(default_factory=list)

    def add(self, name: str, measured: tuple[float, int]) -> None:
        self.p50.setdefault(name, []).append(measured[0])
        self.failed[name] = self.failed.get(name, 0) + measured[1]

    def median(self, name: str) -> float:
        return statistics.median(self.p50[name])

    def per_hop_us(self, name: str) -> float:
        """Added µs per proxy hop: half the difference to the direct request."""
        return (self.median(name) - self.median("direct")) * 500

    def ratio(self, name: str) -> float:
        return self.per_hop_us(name) / self.per_hop_us(BARE)

    def report(self) -> list[str]:
        bare = self.per_hop_us(BARE)
        bare_cpu = statistics.median(self.cpu[BARE])
        lines = [f"per-hop latency, GET httpbin {self.path}, p50 of {HOP_SAMPLES} requests x "
                 f"{HOP_ROUNDS} rounds (median of rounds; spread = min-max of the rounds' p50), "
                 "two hops each; Envoy CPU = CPU of both Envoys per request / 2:",
                 f"  {'direct to httpbin (baseline)':44s} p50 {self.median('direct') * 1000:5.0f}"
                 f" us{self._spread('direct')}"]
        for name in self.p50:
            if name == "direct":
                continue
            hop = self.per_hop_us(name)
            cpu = statistics.median(self.cpu[name])
            daemon = (f", daemon {statistics.median(self.daemon_cpu[name]):3.0f} us/request"
                      if name in self.daemon_cpu else "")
            lines.append(f"  {name:44s} p50 {self.median(name) * 1000:5.0f} us{self._spread(name)}"
                         f"  +{hop:4.0f} us/hop = {hop / bare:.2f}x bare pair (+{hop - bare:3.0f})"
                         f"; CPU/hop: Envoy {cpu:3.0f} us (+{cpu - bare_cpu:3.0f}){daemon}")
        lines += self._timing_lines()
        mtls = {p: self.per_hop_us(f"mesh mTLS, {p}") / self.per_hop_us(f"mesh, {p}") - 1
                for p in PROFILES}
        lines.append(f"  TARGET (issue 12: Istio's default telemetry = the {DEFAULT}): mesh <= "
                     f"1.2x bare pair: {self.ratio(f'mesh, {DEFAULT}'):.2f}x; mTLS <= +20 % over "
                     f"plaintext: {mtls[DEFAULT]:+.0%} per hop{self._cpu_ratio(DEFAULT)}")
        lines.append(f"  beside it, the {COURSE}: {self.ratio(f'mesh, {COURSE}'):.2f}x bare "
                     f"pair; mTLS {mtls[COURSE]:+.0%} per hop{self._cpu_ratio(COURSE)}")
        failed = {k: v for k, v in self.failed.items() if v}
        if failed:
            lines.append(f"  non-200 responses while measuring: {failed}")
        return lines

    def _cpu_ratio(self, profile: str) -> str:
        """The Envoy CPU per hop under `profile` against the bare pair's: steadier than the
        latency on a loaded machine, and what the added latency mostly is."""
        mesh, bare = (statistics.median(self.cpu[name]) for name in (f"mesh, {profile}", BARE))
        return f" (Envoy CPU per hop {mesh / bare:.2f}x the bare pair's)"

    def _timing_lines(self) -> list[str]:
        """Envoy's own view of the bare pair (`%COMMON_DURATION%`): µs inside each Envoy on the
        way in and out; the rest of a hop is the kernel's loopback and the wakeups."""
        if not self.timings:
            return []
        out = ["  inside the bare pair's Envoys (their own timestamps, median of the rounds' "
               "medians, us):"]
        for side in ("client", "server"):
            spans = {span: statistics.median(t[side][span] for t in self.timings if t[side])
                     for span in TIMING_SPANS}
            out.append(f"    {side}: request in -> sent upstream {spans['request']:.0f}, "
                       f"waiting for the upstream {spans['upstream']:.0f}, response in -> "
                       f"handed downstream {spans['response']:.0f}")
        return out

    def _spread(self, name: str) -> str:
        values = self.p50[name]
        return f" ({min(values) * 1000:.0f}-{max(values) * 1000:.0f})"


def wait_for_status(fetch: Callable[[], tuple[int, bytes]], status: int, what: str) -> None:
    """Wait until `fetch` answers `status` 20 times in a row (a policy reached the proxy)."""
    deadline = time.monotonic() + 30
    in_a_row = 0
    while in_a_row < 20:
        in_a_row = in_a_row + 1 if fetch()[0] == status else 0
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")


def policy_latency(kubectl: Kubectl, outbound: int) -> dict[str, tuple[float, int]]:
    """(p50 ms, non-200 count) through both sidecars over mTLS: without policy (the baseline),
    with an AuthorizationPolicy on httpbin, and with it plus a RequestAuthentication and a valid
    JWT on every request."""
    url = "http://httpbin:8000/get"
    client = Http(outbound)
    baseline = p50_ms(lambda: client.get(url))
    selector = {"matchLabels": {"app": "httpbin"}}
    kubectl.apply(
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
         "metadata": {"name": "httpbin-viewer"},
         "spec": {"selector": selector, "rules": [{
             "from": [{"source": {"principals": [f"cluster.local/ns/{NAMESPACE}/sa/curl"]}}],
             "to": [{"operation": {"methods": ["GET"], "paths": ["/get", "/headers"]}}]}]}},
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
         "metadata": {"name": "no-admin"},
         "spec": {"selector": selector, "action": "DENY",
                  "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]}})
    wait_for_status(lambda: client.get("http://httpbin:8000/status/200"), 403,
                    "the AuthorizationPolicy to reach httpbin's sidecar")
    authorized = p50_ms(lambda: client.get(url))
    signer = Signer()
    kubectl.apply({"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
                   "metadata": {"name": "jwt"},
                   "spec": {"selector": selector,
                            "jwtRules": [{"issuer": ISSUER, "jwks": signer.jwks}]}})
    stranger = {"Authorization": f"Bearer {Signer().token(iss=ISSUER)}"}
    wait_for_status(lambda: client.get(url, stranger), 401,
                    "the RequestAuthentication to reach httpbin's sidecar")
    valid = {"Authorization": f"Bearer {signer.token(iss=ISSUER)}"}
    with_jwt = p50_ms(lambda: client.get(url, valid))
    return {"baseline": baseline, "authz": authorized, "jwt": with_jwt}


@dataclass
class Changes:
    """One kind's change -> effective times (ms), PATCH round trips (ms), and how many probes
    failed outright (a request cut when the proxy closed the connection it was on)."""

    effective: list[float] = field(default_factory=list)
    patch_ms: list[float] = field(default_factory=list)
    cut: int = 0


def change_to_effective(api: Api, path: str, specs: tuple[Obj, Obj],
                        probe: Callable[[], object], expected: tuple[object, object],
                        what: str, n: int = KIND_CHANGES) -> Changes:
    """ms from a merge-PATCH of `path`'s spec returning to `probe()` showing the new state, for
    `n` changes alternating between `specs` (expected probe results `expected`); and the PATCH
    round trips (the baseline)."""
    out = Changes()

    def observe() -> object:
        try:
            return probe()
        except (OSError, http.client.HTTPException) as err:
            out.cut += 1
            return f"request failed: {err!r}"

    for i in range(n + 1):
        target = i % 2
        sent = time.perf_counter()
        status, body = api.request("PATCH", path, {"spec": specs[target]},
                                   "application/merge-patch+json")
        returned = time.perf_counter()
        if status != 200:
            raise SystemExit(f"PATCH of {path} failed: {status} {body!r}")
        while (seen := observe()) != expected[target]:
            if time.perf_counter() - returned > CHANGE_TIMEOUT:
                raise SystemExit(f"{what}: change {i} not effective within {CHANGE_TIMEOUT:.0f}s "
                                 f"(saw {seen!r}, want {expected[target]!r})")
        if i:  # the first PATCH only sets the starting state
            out.effective.append((time.perf_counter() - returned) * 1000)
            out.patch_ms.append((returned - sent) * 1000)
    return out


def fresh_status(port: int, path: str, host: str) -> int:
    """Status of one GET on a new plaintext connection; 0 when the server closed it (a STRICT
    sidecar refuses plaintext)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


def changes_by_kind(kubectl: Kubectl, api: Api, outbound: int, ingress_port: int
                    ) -> dict[str, Changes]:
    """change -> effective for DestinationRule, PeerAuthentication, AuthorizationPolicy,
    RequestAuthentication, Gateway and HTTPRoute (VirtualService is measured on its own)."""
    kubectl("delete", "authorizationpolicy,requestauthentication", "--all")
    client = Http(outbound)
    selector = {"matchLabels": {"app": "httpbin"}}
    signer, other = Signer(), Signer()
    token = {"Authorization": f"Bearer {signer.token(iss=ISSUER)}"}
    kubectl.apply(
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
         "metadata": {"name": "toggle"},
         "spec": {"selector": selector, "action": "DENY",
                  "rules": [{"to": [{"operation": {"paths": ["/nothing"]}}]}]}},
        {"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
         "metadata": {"name": "toggle"},
         "spec": {"selector": selector, "jwtRules": [{"issuer": ISSUER, "jwks": signer.jwks}]}})
    app_host_port = kubectl.annotation("httpbin", "meshlab.dev/host-ports")["8080"]
    security, networking = (f"/apis/{group}/v1/namespaces/{NAMESPACE}" for group in
                            ("security.istio.io", "networking.istio.io"))

    def subset_v1(version: str) -> Obj:
        return {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": version}}]}

    def deny(path: str) -> Obj:
        return {"selector": selector, "action": "DENY",
                "rules": [{"to": [{"operation": {"paths": [path]}}]}]}

    def jwks(of: Signer) -> Obj:
        return {"selector": selector, "jwtRules": [{"issuer": ISSUER, "jwks": of.jwks}]}

    def gateway(host: str) -> Obj:
        return {"selector": {"istio": "ingressgateway"}, "servers": [
            {"port": {"number": 8080, "name": "http", "protocol": "HTTP"}, "hosts": [host]}]}

    ingress = Http(ingress_port)
    web_port = gateway_api_node_port(kubectl)
    web = Http(web_port)

    def route(path: str) -> Obj:
        return {"parentRefs": [{"name": "web"}], "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": path}}],
            "backendRefs": [{"name": "productpage", "port": 9080}]}]}

    routes = f"/apis/gateway.networking.k8s.io/v1/namespaces/{NAMESPACE}/httproutes"
    return {
        "DestinationRule": change_to_effective(
            api, f"{networking}/destinationrules/reviews", (subset_v1("v1"), subset_v1("v3")),
            lambda: served_version(client), ("v1", "v3"), "DestinationRule subset"),
        "PeerAuthentication": change_to_effective(
            api, f"{security}/peerauthentications/default",
            ({"mtls": {"mode": "PERMISSIVE"}}, {"mtls": {"mode": "STRICT"}}),
            lambda: fresh_status(app_host_port, "/get", "httpbin:8000"), (200, 0),
            "PeerAuthentication STRICT"),
        "AuthorizationPolicy": change_to_effective(
            api, f"{security}/authorizationpolicies/toggle", (deny("/nothing"), deny("/get")),
            lambda: client.get("http://httpbin:8000/get")[0], (200, 403),
            "AuthorizationPolicy DENY"),
        "RequestAuthentication": change_to_effective(
            api, f"{security}/requestauthentications/toggle", (jwks(signer), jwks(other)),
            lambda: client.get("http://httpbin:8000/get", token)[0], (200, 401),
            "RequestAuthentication keys"),
        "Gateway": change_to_effective(
            api, f"{networking}/gateways/bookinfo-gateway", (gateway("*"),
                                                              gateway("elsewhere.example")),
            lambda: ingress.get("/productpage")[0], (200, 404), "Gateway hosts"),
        "HTTPRoute": change_to_effective(
            api, f"{routes}/productpage", (route("/productpage"), route("/nothing")),
            lambda: web.get("/productpage")[0], (200, 404), "HTTPRoute path"),
    }


def gateway_api_node_port(kubectl: Kubectl) -> int:
    """Deploy a Gateway API Gateway `web` (class istio, HTTP on 80) with an HTTPRoute to
    productpage; the node port of its Service once it serves productpage."""
    kubectl.apply(
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
         "metadata": {"name": "web"},
         "spec": {"gatewayClassName": "istio",
                  "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
         "metadata": {"name": "productpage"},
         "spec": {"parentRefs": [{"name": "web"}], "rules": [{
             "matches": [{"path": {"type": "PathPrefix", "value": "/productpage"}}],
             "backendRefs": [{"name": "productpage", "port": 9080}]}]}})
    deadline = time.monotonic() + FIRST_200_TIMEOUT
    while True:
        port = kubectl("get", "service", "web-istio", "-o",
                       'jsonpath={.spec.ports[?(@.port==80)].nodePort}', check=False
                       ).stdout.strip()
        if port and fresh_status(int(port), "/productpage", "web") == 200:
            return int(port)
        if time.monotonic() > deadline:
            raise SystemExit("the Gateway API gateway `web` never served /productpage")
        time.sleep(0.1)


def memory_by_kind(daemon_pid: int) -> dict[str, tuple[int, int, int]]:
    """kind -> (processes, RSS kB, PSS kB) over the daemon's process tree."""
    totals: dict[str, tuple[int, int, int]] = {}
    for process in cluster_memory(daemon_pid):
        kind = ("daemon" if process.pid == daemon_pid else process.comm
                if process.comm in ("envoy", "prometheus") else "pod processes")
        count, rss_sum, pss_sum = totals.get(kind, (0, 0, 0))
        totals[kind] = (count + 1, rss_sum + process.rss_kb, pss_sum + process.pss_kb)
    return totals


def hops_only() -> None:
    """`--hops`: only the per-hop latency, with httpbin and curl alone in the mesh."""
    with tempfile.TemporaryDirectory() as root:
        cluster = EmbeddedCluster("bench", root)
        try:
            kubectl = Kubectl(cluster.up())
            kubectl("create", "namespace", NAMESPACE)
            kubectl("label", "namespace", NAMESPACE, "istio-injection=enabled")
            kubectl("apply", "-f", str(MANIFESTS / "httpbin.yaml"),
                    "-f", str(MANIFESTS / "curl.yaml"))
            kubectl("wait", "--for=condition=Available", "deployment", "--all",
                    "--timeout=120s")
            hops = measure_hops(cluster, kubectl)
        finally:
            cluster.down()
    for hop in hops:
        print("\n".join(hop.report()))


def measure_hops(cluster: EmbeddedCluster, kubectl: Kubectl) -> list[HopResults]:
    """`hop_latency` for each of HOP_PATHS, through the curl pod's sidecar."""
    outbound = kubectl.annotation("curl", "meshlab.dev/proxy-ports")["outbound"]
    pid = cluster.status().pid
    zipkin = (cluster.paths.read_endpoint() or {}).get("telemetry")
    if pid is None or zipkin is None:
        raise SystemExit("the embedded cluster's daemon is not running (no pid or telemetry "
                         "endpoint): see `meshlab status`")
    return [hop_latency(kubectl, outbound, pid, int(zipkin), path) for path in HOP_PATHS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--hops", action="store_true",
                        help="measure only the added latency per sidecar hop")
    if parser.parse_args().hops:
        hops_only()
        return
    with tempfile.TemporaryDirectory() as root:
        cluster = EmbeddedCluster("bench", root)
        try:
            first, gateway_first, exec_cost = first_200_from_productpage(cluster)
            kubectl = Kubectl(cluster.kubeconfig)
            api = Api(cluster.kubeconfig, cluster.paths.ca_cert)
            outbound = kubectl.annotation("curl", "meshlab.dev/proxy-ports")["outbound"]
            effective, patch_ms, attempts = vs_change_to_traffic(kubectl, api, outbound)
            kubectl("apply", "-f", str(MANIFESTS / "httpbin.yaml"),
                    "-f", str(MANIFESTS / "fortio.yaml"))
            kubectl("wait", "--for=condition=Available", "deployment", "--all",
                    "--timeout=120s")
            hops = measure_hops(cluster, kubectl)
            policies = policy_latency(kubectl, outbound)
            ingress_port = int(kubectl(
                "-n", "istio-system", "get", "service", "istio-ingressgateway", "-o",
                'jsonpath={.spec.ports[?(@.name=="http2")].nodePort}').stdout.strip())
            kinds = changes_by_kind(kubectl, api, outbound, ingress_port)
            pods = kubectl("get", "pods", "--no-headers").stdout.splitlines()
            status = cluster.status()
            memory = memory_by_kind(status.pid) if status.pid else {}
        finally:
            cluster.down()

    print(f"meshlab up + bookinfo applied -> first 200 from productpage: {first:.2f} s "
          f"(target <= 5 s; baseline one kubectl exec curl {exec_cost:.2f} s, "
          f"ratio {first / exec_cost:.1f}x)")
    print(f"meshlab up + bookinfo + its Gateway applied -> first 200 through the "
          f"istio-ingressgateway: {gateway_first:.2f} s (target <= 3 s; "
          f"{gateway_first / first:.2f}x the curl pod's first 200)")
    print(f"VirtualService change -> traffic following it, {CHANGES} changes: "
          f"p50 {statistics.median(effective):.1f} ms, p95 {percentile(effective, 95):.1f} ms, "
          f"max {max(effective):.1f} ms (target p95 <= 200 ms; baseline the PATCH itself "
          f"p50 {statistics.median(patch_ms):.1f} ms; requests until the new version: "
          f"median {statistics.median(attempts):.0f}, max {max(attempts)})")
    print("config change -> effective for the next request, p50/p95 over "
          f"{KIND_CHANGES} alternating changes (target p95 <= 200 ms; baseline the PATCH):")
    for kind, changes in kinds.items():
        took = changes.effective
        cut = f"; {changes.cut} probe requests cut by a closing connection" if changes.cut else ""
        print(f"  {kind:22s} p50 {statistics.median(took):6.1f} ms  p95 "
              f"{percentile(took, 95):6.1f} ms  (PATCH p50 "
              f"{statistics.median(changes.patch_ms):.1f} ms{cut})")
    for hop in hops:
        print("\n".join(hop.report()))
    (base, base_failed), (authz, authz_failed), (jwt, jwt_failed) = (
        policies["baseline"], policies["authz"], policies["jwt"])
    print(f"authorization latency p50 over {HOP_SAMPLES} (2 sidecars, mTLS): no policy "
          f"{base * 1000:.0f} us (baseline); AuthorizationPolicy ALLOW+DENY {authz * 1000:.0f} us "
          f"({authz / base:.2f}x, +{(authz - base) * 1000:.0f} us); + RequestAuthentication "
          f"with a valid RS256 JWT {jwt * 1000:.0f} us ({jwt / base:.2f}x, "
          f"+{(jwt - base) * 1000:.0f} us)")
    if base_failed or authz_failed or jwt_failed:
        print(f"  non-200 responses while measuring: baseline {base_failed}, "
              f"authorization {authz_failed}, JWT {jwt_failed}")
    cluster_kinds = [k for k in memory if k != "prometheus"]
    rss_total = sum(memory[k][1] for k in cluster_kinds) / 1024
    pss_total = sum(memory[k][2] for k in cluster_kinds) / 1024
    print(f"memory with {len(pods)} meshed pods (bookinfo, httpbin, curl, fortio): "
          f"total RSS {rss_total:.0f} MB, PSS {pss_total:.0f} MB (target RSS <= 600 MB)")
    for kind in ("daemon", "pod processes", "envoy", "prometheus"):
        if kind in memory:
            count, rss, pss = memory[kind]
            print(f"  {kind:14s} {count:3d} processes  RSS {rss / 1024:6.0f} MB  "
                  f"PSS {pss / 1024:6.0f} MB" + ("  (not in the total)"
                                                  if kind == "prometheus" else ""))


if __name__ == "__main__":
    main()
