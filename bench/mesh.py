"""Benchmark of the embedded Istio mesh.

Prints, for a fresh cluster in a temporary state directory:
- `meshlab up` + bookinfo and curl applied in an injected namespace -> the first 200 from
  productpage, asked from the curl pod with `kubectl exec deploy/curl -- curl ...` (target <= 5 s),
  against the baseline of one such exec once everything runs; and, with Istio's bookinfo Gateway
  and VirtualService applied in the same `kubectl apply`, the first 200 of
  `http://127.0.0.1:<INGRESS_PORT>/productpage` through the istio-ingressgateway (target <= 5 s);
- VirtualService change -> traffic following it: 50 alternating changes of the reviews
  VirtualService (all v1 <-> all v3), each timed from the API PATCH returning to the first response
  served by the new version, asked through the curl pod's sidecar (its outbound HTTP proxy port)
  from this process on a kept-alive connection; p50/p95 (target p95 <= 200 ms), against the
  baseline of the PATCH itself;
- added latency per sidecar hop: p50 of requests straight to httpbin's app port (the baseline)
  vs through two sidecars (curl's and httpbin's) without mTLS (PeerAuthentication DISABLE +
  DestinationRule tls DISABLE) and with mTLS (STRICT + ISTIO_MUTUAL), as ratios;
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
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for `labs`
sys.path.insert(0, str(Path(__file__).resolve().parent))  # this directory, for `common`

from common import Api, percentile

from labs.cluster import EmbeddedCluster, kubectl_binary
from labs.tokens import Signer

NAMESPACE = "bench"
MANIFESTS = Path(__file__).resolve().parents[1] / "labs" / "manifests"
CHANGES = 50
HOP_SAMPLES = 1000
FIRST_200_TIMEOUT = 60.0
CHANGE_TIMEOUT = 5.0
VS_PATH = (f"/apis/networking.istio.io/v1/namespaces/{NAMESPACE}/virtualservices")
ISSUER = "https://issuer.meshlab.test"
# Istio's samples/bookinfo/networking/bookinfo-gateway.yaml (productpage routes only).
BOOKINFO_GATEWAY: list[dict[str, object]] = [
    {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
     "metadata": {"name": "bookinfo-gateway"},
     "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
         {"port": {"number": 8080, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}},
    {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
     "metadata": {"name": "bookinfo"},
     "spec": {"hosts": ["*"], "gateways": ["bookinfo-gateway"], "http": [
         {"match": [{"uri": {"exact": "/productpage"}}, {"uri": {"prefix": "/static"}}],
          "route": [{"destination": {"host": "productpage", "port": {"number": 9080}}}]}]}},
]
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

    def get(self, url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        self.conn.request("GET", url, headers=headers or {})
        response = self.conn.getresponse()
        return response.status, response.read()


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


def hop_latency(kubectl: Kubectl, outbound: int
                ) -> dict[str, tuple[float, int]]:
    """(p50 ms, non-200 count): direct to httpbin's app port; via curl's and httpbin's sidecars
    in plaintext; via both sidecars over mTLS."""
    app_port = kubectl.annotation("httpbin", "meshlab.dev/app-ports")["8080"]
    direct_client = Http(app_port)
    direct = p50_ms(lambda: direct_client.get("/get"))
    url, headers_url = "http://httpbin:8000/get", "http://httpbin:8000/headers"

    def policy(mode: str, tls: str) -> None:
        kubectl.apply(
            {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
             "metadata": {"name": "default"}, "spec": {"mtls": {"mode": mode}}},
            {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
             "metadata": {"name": "httpbin"},
             "spec": {"host": "httpbin", "trafficPolicy": {"tls": {"mode": tls}}}})

    policy("DISABLE", "DISABLE")
    plain_client = Http(outbound)
    converge(lambda: plain_client.get(headers_url), lambda b: b"X-Forwarded-Client-Cert" not in b,
             "plaintext between the sidecars")
    plain = p50_ms(lambda: plain_client.get(url))
    policy("STRICT", "ISTIO_MUTUAL")
    mtls_client = Http(outbound)
    converge(lambda: mtls_client.get(headers_url), lambda b: b"X-Forwarded-Client-Cert" in b,
             "mTLS between the sidecars")
    mtls = p50_ms(lambda: mtls_client.get(url))
    return {"direct": direct, "plaintext": plain, "mtls": mtls}


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


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def memory_kb(pid: int) -> tuple[str, int, int]:
    """(command name, RSS kB, PSS kB) of one process."""
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        rss = next(int(line.split()[1]) for line in
                   Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS:"))
        pss = next(int(line.split()[1]) for line in
                   Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                   if line.startswith("Pss:"))
    except (OSError, StopIteration):
        return "", 0, 0
    return name, rss, pss


def cluster_memory(daemon_pid: int) -> dict[str, tuple[int, int, int]]:
    """kind -> (processes, RSS kB, PSS kB) over the daemon's process tree."""
    totals: dict[str, tuple[int, int, int]] = {}
    for pid in process_tree(daemon_pid):
        name, rss, pss = memory_kb(pid)
        if not rss:
            continue
        kind = ("daemon" if pid == daemon_pid else "envoy" if name == "envoy"
                else "prometheus" if name == "prometheus" else "pod processes")
        count, rss_sum, pss_sum = totals.get(kind, (0, 0, 0))
        totals[kind] = (count + 1, rss_sum + rss, pss_sum + pss)
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
            hops = hop_latency(kubectl, outbound)
            policies = policy_latency(kubectl, outbound)
            pods = kubectl("get", "pods", "--no-headers").stdout.splitlines()
            status = cluster.status()
            memory = cluster_memory(status.pid) if status.pid else {}
        finally:
            cluster.down()

    print(f"meshlab up + bookinfo applied -> first 200 from productpage: {first:.2f} s "
          f"(target <= 5 s; baseline one kubectl exec curl {exec_cost:.2f} s, "
          f"ratio {first / exec_cost:.1f}x)")
    print(f"meshlab up + bookinfo + its Gateway applied -> first 200 through the "
          f"istio-ingressgateway: {gateway_first:.2f} s (target <= 5 s; "
          f"{gateway_first / first:.2f}x the curl pod's first 200)")
    print(f"VirtualService change -> traffic following it, {CHANGES} changes: "
          f"p50 {statistics.median(effective):.1f} ms, p95 {percentile(effective, 95):.1f} ms, "
          f"max {max(effective):.1f} ms (target p95 <= 200 ms; baseline the PATCH itself "
          f"p50 {statistics.median(patch_ms):.1f} ms; requests until the new version: "
          f"median {statistics.median(attempts):.0f}, max {max(attempts)})")
    (direct, _), (plain, plain_failed), (mtls, mtls_failed) = (
        hops["direct"], hops["plaintext"], hops["mtls"])
    print(f"request latency p50 over {HOP_SAMPLES}: direct to httpbin {direct * 1000:.0f} us "
          f"(baseline); via 2 sidecars plaintext {plain * 1000:.0f} us "
          f"({plain / direct:.2f}x, +{(plain - direct) * 500:.0f} us per hop); "
          f"via 2 sidecars mTLS {mtls * 1000:.0f} us ({mtls / direct:.2f}x, "
          f"+{(mtls - direct) * 500:.0f} us per hop; mTLS/plaintext {mtls / plain:.2f}x)")
    if plain_failed or mtls_failed or hops["direct"][1]:
        print(f"  non-200 responses while measuring: direct {hops['direct'][1]}, "
              f"plaintext {plain_failed}, mTLS {mtls_failed}")
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
