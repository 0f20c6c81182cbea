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
  (bench/envoy_pair.py; alone, + the two access logs, + tracing at 100 %: what each feature
  costs per hop), and through curl's and httpbin's sidecars in plaintext with Istio's default
  telemetry (1 % sampling, access logs), with a Telemetry resource at 100 % and with tracing and
  access logging off, and over mTLS; each as added µs per hop and as a ratio to the bare pair
  (target <= 1.2x; mTLS <= +20 % over plaintext), with the daemon's CPU per request;
- added latency of authorization: p50 over mTLS with an AuthorizationPolicy on httpbin (ALLOW by
  principal and path, plus a DENY rule), then also with a RequestAuthentication and a valid JWT
  on every request, as ratios against the mTLS p50 without policy measured just before;
- total RSS of the daemon, every pod process, the Envoys and the forwarder with bookinfo, httpbin,
  curl and fortio meshed (target <= 600 MB); Prometheus listed separately. PSS (shared pages
  split between processes) is printed too: RSS counts the Envoy binary once per Envoy.

Run: `.venv/bin/python bench/mesh.py`
"""

from __future__ import annotations

import http.client
import json
import os
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
from envoy_pair import Features, envoy_pair

from labs.cluster import EmbeddedCluster, kubectl_binary
from labs.tokens import Signer

Obj = dict[str, object]

NAMESPACE = "bench"
MANIFESTS = Path(__file__).resolve().parents[1] / "labs" / "manifests"
CHANGES = 50
HOP_SAMPLES = 1000
HOP_ROUNDS = 3
HOP_PATHS = ("/get", "/status/200")
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
    (what an app does through its sidecar's outbound listener)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

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
    for _ in range(50):  # warm up connections (and TLS sessions)
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


def daemon_cpu_ms(pid: int) -> float:
    """CPU time (user + system) the daemon has used so far, in ms."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def set_telemetry(kubectl: Kubectl, spec: dict[str, object] | None) -> None:
    """The namespace's Telemetry resource `bench` (None: none), then a moment for the sidecars'
    listeners to be rewritten (the bench's client reconnects when they close its connection)."""
    if spec is None:
        kubectl("delete", "telemetry", "bench", "--ignore-not-found")
    else:
        kubectl.apply({"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
                       "metadata": {"name": "bench"}, "spec": spec})
    time.sleep(1.0)


def hop_latency(kubectl: Kubectl, outbound: int, daemon_pid: int | None, zipkin_port: int,
                path: str) -> HopResults:
    """Per round (`HOP_ROUNDS`, interleaved so load changes hit every variant alike): p50 ms of
    requests straight to httpbin's app port (the baseline), through a bare Envoy pair with the
    mesh's flags (alone, + the two access logs, + tracing at 100 %: the per-hop cost of each
    feature), and through curl's and httpbin's sidecars in plaintext (Istio's default telemetry:
    1 % sampling, access logs on; then with a Telemetry resource at 100 % and with tracing and
    access logging off) and over mTLS; plus the daemon's CPU per request through the sidecars.
    `path` is httpbin's: /get echoes the request headers (so the app's answer grows with what the
    proxies add: B3 and x-envoy headers, XFCC), /status/200 answers with no body."""
    app_port = kubectl.annotation("httpbin", "meshlab.dev/app-ports")["8080"]
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
    logs = {"text_log": True, "json_log": True}
    bare_variants = {
        "bare": Features(),
        "bare+json log": Features(json_log=True),
        "bare+json+text logs": Features(**logs),
        "bare+logs+trace1 (as mesh)": Features(**logs, sampling=1, zipkin_port=zipkin_port),
        "bare+logs+trace100": Features(**logs, sampling=100, zipkin_port=zipkin_port)}
    envoy = [{"name": "envoy"}]
    mesh_variants: dict[str, dict[str, object] | None] = {
        "mesh": None,
        "mesh trace100": {"tracing": [{"randomSamplingPercentage": 100}]},
        "mesh no tracing, no access log": {
            "tracing": [{"disableSpanReporting": True}],
            "accessLogging": [{"providers": envoy, "disabled": True}]},
    }
    client = Http(outbound)
    for _ in range(HOP_ROUNDS):
        results.add("direct", p50_ms(lambda: direct_client.get(path)))
        for name, features in bare_variants.items():
            with envoy_pair(app_port, features) as pair:
                results.add(name, p50_ms(Http(pair.client_port).getter(url)))
        policy("DISABLE", "DISABLE")
        converge(lambda: client.get(headers_url), lambda b: b"X-Forwarded-Client-Cert" not in b,
                 "plaintext between the sidecars")
        for name, spec in mesh_variants.items():
            set_telemetry(kubectl, spec)
            before = daemon_cpu_ms(daemon_pid) if daemon_pid else 0.0
            results.add(name, p50_ms(lambda: client.get(url)))
            if daemon_pid:
                results.cpu.setdefault(name, []).append(
                    (daemon_cpu_ms(daemon_pid) - before) * 1000 / (HOP_SAMPLES + 50))
        set_telemetry(kubectl, None)
        policy("STRICT", "ISTIO_MUTUAL")
        converge(lambda: client.get(headers_url), lambda b: b"X-Forwarded-Client-Cert" in b,
                 "mTLS between the sidecars")
        results.add("mesh mTLS", p50_ms(lambda: client.get(url)))
    return results


@dataclass
class HopResults:
    """p50s (ms) per variant and round, non-200 counts, daemon CPU µs per request."""

    path: str
    p50: dict[str, list[float]] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, measured: tuple[float, int]) -> None:
        self.p50.setdefault(name, []).append(measured[0])
        self.failed[name] = self.failed.get(name, 0) + measured[1]

    def median(self, name: str) -> float:
        return statistics.median(self.p50[name])

    def per_hop_us(self, name: str) -> float:
        """Added µs per proxy hop: half the difference to the direct request."""
        return (self.median(name) - self.median("direct")) * 500

    def report(self) -> list[str]:
        bare = self.per_hop_us("bare")
        lines = [f"per-hop latency, GET httpbin {self.path}, p50 of {HOP_SAMPLES} requests x "
                 f"{HOP_ROUNDS} rounds "
                 f"(median of rounds; spread = min-max of the rounds' p50), two hops each:",
                 f"  {'direct to httpbin (baseline)':34s} p50 {self.median('direct') * 1000:5.0f}"
                 f" us{self._spread('direct')}"]
        for name in self.p50:
            if name == "direct":
                continue
            hop = self.per_hop_us(name)
            cpu = (f", daemon CPU {statistics.median(self.cpu[name]):.0f} us/request"
                   if name in self.cpu else "")
            lines.append(f"  {name:34s} p50 {self.median(name) * 1000:5.0f} us{self._spread(name)}"
                         f"  +{hop:4.0f} us/hop = {hop / bare:.2f}x bare pair{cpu}")
        lines.append(f"  targets: mesh (Istio's default telemetry) <= 1.2x bare pair: "
                     f"{self.per_hop_us('mesh') / bare:.2f}x; mTLS <= +20 % over plaintext: "
                     f"{self.per_hop_us('mesh mTLS') / self.per_hop_us('mesh') - 1:+.0%} per hop")
        failed = {k: v for k, v in self.failed.items() if v}
        if failed:
            lines.append(f"  non-200 responses while measuring: {failed}")
        return lines

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


def main() -> None:
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
            status = cluster.status()
            endpoint = cluster.paths.read_endpoint() or {}
            hops = [hop_latency(kubectl, outbound, status.pid, int(endpoint["telemetry"]), path)
                    for path in HOP_PATHS]
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
