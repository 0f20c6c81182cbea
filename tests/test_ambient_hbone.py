"""HBONE between two real Envoys in ztunnel's role (labs/embedded/mesh/istio/ambient/hbone.py):
mutual TLS with the workloads' SPIFFE certificates, HTTP/2 CONNECT to the destination, and the
destination's L4 AuthorizationPolicy (l4_policy.py) deciding each CONNECT. curl reaches the
source side as a captured pod's curl does (`proxytunnel`); a refusal is curl's exit 56, as in
Istio's L4 policy docs, and both sides log ztunnel's lines (access_log.py)."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from test_xds_listeners import start_envoy, wait_listening

from labs.embedded.loopback import free_port
from labs.embedded.mesh.ca import MeshCA
from labs.embedded.mesh.istio.ambient.access_log import Workload, inbound_logs, outbound_logs
from labs.embedded.mesh.istio.ambient.hbone import (
    SOURCE_HEADER,
    capture_listener,
    connect_route,
    hbone_cluster,
    proxy_connect_route,
    terminate_listener,
)
from labs.embedded.mesh.istio.ambient.l4_policy import convert, route_rbac
from labs.embedded.mesh.istio.xds.observability import FILE_LOG, FILE_LOG_TYPE
from labs.embedded.mesh.listener_parts import static_cluster
from labs.embedded.mesh.proxyfiles import EnvoyResources, ProxyFiles
from labs.embedded.mesh.writer import XdsWriter

Obj = dict[str, Any]
WEB = "spiffe://cluster.local/ns/app/sa/web"
CURL = "cluster.local/ns/app/sa/curl"
WEB_POD = Workload("web-1", "app", WEB, "web.app.svc.cluster.local")
CURL_POD = Workload("curl-1", "app", f"spiffe://{CURL}")
FLUSH_S = 0.5  # more than twice Envoy's --file-flush-interval-msec


class Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from web\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Pair:
    """The source side's capture port, and what rewrites the destination side's policy."""

    out_port: int  # CONNECT web.app:9080 goes to web; wrong.app:9080 too, expecting another
    app_port: int
    hbone_port: int
    dst_files: ProxyFiles
    access_log: Path
    writer: XdsWriter
    ztunnel_logs: tuple[Path, Path]  # the source's and the destination's lines

    def set_policies(self, *policies: Obj) -> None:
        converted = [c for c, _ in map(convert, policies) if c is not None]
        route = connect_route(f"127.0.0.1:{self.app_port}", "app",
                              route_rbac(converted, self.app_port))
        log = {"name": FILE_LOG, "typed_config": {
            "@type": FILE_LOG_TYPE, "path": str(self.access_log), "log_format": {"json_format": {
                "code": "%RESPONSE_CODE%", "peer": "%DOWNSTREAM_PEER_URI_SAN%",
                "source": f"%REQ({SOURCE_HEADER})%",
                "details": "%RESPONSE_CODE_DETAILS%"}}}}
        self.writer.write(self.dst_files, EnvoyResources(
            listeners=[terminate_listener(
                "hbone", self.hbone_port, self.dst_files, [route],
                access_log=[log, *inbound_logs(self.ztunnel_logs[1], WEB_POD, converted)])],
            clusters=[static_cluster("app", self.app_port)]))



@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("hbone")
    ca = MeshCA.load_or_create(tmp / "ca")
    src_files, dst_files = ProxyFiles(tmp / "src" / "xds"), ProxyFiles(tmp / "dst" / "xds")
    ca.write_sds(src_files, ca.issue("app", "curl"))
    ca.write_sds(dst_files, ca.issue("app", "web"))
    ports: list[int] = []
    for _ in range(5):
        ports.append(free_port(ports))
    app_port, hbone_port, out_port, src_admin, dst_admin = ports
    app = ThreadingHTTPServer(("127.0.0.1", app_port), Hello)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    writer = XdsWriter()
    pair = Pair(out_port, app_port, hbone_port, dst_files, tmp / "dst.log", writer,
                (tmp / "src-ztunnel.log", tmp / "dst-ztunnel.log"))
    pair.set_policies()
    target, source = f"127.0.0.1:{app_port}", ("app", "curl-1")
    hosts = [{"name": "web", "domains": ["web.app:9080"],
              "routes": [proxy_connect_route("web", target, source)]},
             {"name": "wrong", "domains": ["wrong.app:9080"],
              "routes": [proxy_connect_route("not-web", target, source)]}]
    writer.write(src_files, EnvoyResources(
        listeners=[capture_listener("outbound", out_port, hosts, outbound_logs(
            pair.ztunnel_logs[0], CURL_POD, WEB_POD, target))],
        clusters=[hbone_cluster("web", hbone_port, src_files, WEB),
                  hbone_cluster("not-web", hbone_port, src_files,
                                "spiffe://cluster.local/ns/app/sa/other")]))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        start_envoy(tmp, "src", src_files, src_admin, procs)
        start_envoy(tmp, "dst", dst_files, dst_admin, procs)
        for port, what in ((out_port, "the source's capture port"), (hbone_port, "HBONE")):
            wait_listening(port, what)
        yield pair
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
        app.shutdown()
        app.server_close()


def curl(pair: Pair, host: str = "web.app") -> subprocess.CompletedProcess[str]:
    """curl through the source's capture port as a captured pod's curl does (`proxytunnel`)."""
    return subprocess.run(["curl", "-sS", "-p", "-x", f"http://127.0.0.1:{pair.out_port}",
                           f"http://{host}:9080/"],
                          capture_output=True, text=True, timeout=10)


def settle(pair: Pair, expected_exit: int, *policies: Obj) -> subprocess.CompletedProcess[str]:
    """Apply `policies` at the destination and curl until the outcome is `expected_exit` (the
    file-based xDS update lands within milliseconds); fail after 10 s. A refusal is only
    waited for from a state that allows, so it is the new policy's, not the last one's."""
    if expected_exit != 0:
        pair.set_policies()
        _until(pair, 0)
    pair.set_policies(*policies)
    return _until(pair, expected_exit)


def _until(pair: Pair, expected_exit: int) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + 10
    while True:
        done = curl(pair)
        if done.returncode == expected_exit or time.monotonic() > deadline:
            assert done.returncode == expected_exit, (done.returncode, done.stderr)
            return done
        time.sleep(0.05)


def entries(pair: Pair) -> list[Obj]:
    if not pair.access_log.exists():
        return []
    return [json.loads(line) for line in pair.access_log.read_text().splitlines()]


def quiet_count(pair: Pair) -> int:
    """How many entries the destination has logged, once no more arrive (bounded: 5 s)."""
    count = len(entries(pair))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(FLUSH_S)
        if (now := len(entries(pair))) == count:
            break
        count = now
    return count


def logged(pair: Pair, expected_exit: int) -> Obj:
    """Send one more request (whose outcome is `expected_exit`) and return the destination's
    access-log entry of its CONNECT (the log reaches disk within Envoy's flush interval, so
    earlier requests' entries are waited out first)."""
    before = quiet_count(pair)
    assert curl(pair).returncode == expected_exit
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = entries(pair)
        if len(found) > before:
            return found[before]
        time.sleep(0.05)
    pytest.fail("the destination logged no CONNECT")


def allow(principal: str, **rule: Obj) -> Obj:
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "allow-curl", "namespace": "app"},
            "spec": {"rules": [{"from": [{"source": {"principals": [principal]}}], **rule}]}}


def test_connect_carries_the_source_identity(pair: Pair) -> None:
    done = settle(pair, 0)
    assert done.stdout == "hello from web\n"
    entry = logged(pair, 0)
    assert entry["code"] == 200
    assert entry["peer"] == f"spiffe://{CURL}"
    assert entry["source"] == "curl-1"


def test_allow_by_principal(pair: Pair) -> None:
    assert settle(pair, 0, allow(CURL)).stdout == "hello from web\n"
    denied = settle(pair, 56, allow("cluster.local/ns/app/sa/other"))
    assert denied.stderr == "curl: (56) CONNECT tunnel failed, response 401\n"
    entry = logged(pair, 56)
    assert entry["code"] == 401  # ztunnel answers a denied CONNECT 401
    assert entry["details"] == "rbac_access_denied_matched_policy[none]"


def test_http_attributes_fail_safe_in_allow(pair: Pair) -> None:
    """Istio's l4-policy doc: the right identity plus `methods: ["GET"]` is denied (exit 56)."""
    settle(pair, 56, allow(CURL, to=[{"operation": {"methods": ["GET"]}}]))


def test_deny_by_namespace_and_by_port(pair: Pair) -> None:
    deny = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "no-app", "namespace": "app"},
            "spec": {"action": "DENY", "rules": [{"from": [{"source": {
                "namespaces": ["app"]}}]}]}}
    settle(pair, 56, deny)
    assert logged(pair, 56)["details"] == "rbac_access_denied_matched_policy[app/no-app#0]"
    other_port = {**deny, "spec": {"action": "DENY", "rules": [{"to": [{"operation": {
        "ports": [str(pair.app_port + 1)]}}]}]}}
    settle(pair, 0, other_port)


def test_the_destination_identity_is_checked(pair: Pair) -> None:
    settle(pair, 0)
    done = curl(pair, "wrong.app")
    assert done.returncode != 0 and done.stdout == ""


def last_line(path: Path) -> str:
    time.sleep(FLUSH_S)  # each log file is flushed on its own timer
    return path.read_text().splitlines()[-1]


def test_ztunnel_access_log_lines(pair: Pair) -> None:
    """Each side logs ztunnel's `connection complete` line, an `error` on a refusal."""
    settle(pair, 0)
    logged(pair, 0)
    source, destination = (last_line(path) for path in pair.ztunnel_logs)
    time_, level, target, message, fields = source.split("\t")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", time_)
    assert (level, target, message) == ("info", "access", "connection complete")
    assert re.fullmatch(
        r'src\.addr=127\.0\.0\.1:\d+ src\.workload="curl-1" src\.namespace="app" '
        r'src\.identity="spiffe://cluster\.local/ns/app/sa/curl" '
        rf'dst\.addr=127\.0\.0\.1:{pair.hbone_port} dst\.hbone_addr=127\.0\.0\.1:{pair.app_port} '
        r'dst\.service="web\.app\.svc\.cluster\.local" dst\.workload="web-1" dst\.namespace="app" '
        r'dst\.identity="spiffe://cluster\.local/ns/app/sa/web" direction="outbound" '
        r'bytes_sent=\d+ bytes_recv=\d+ duration="\d+ms"', fields), fields
    assert 'src.workload="curl-1" src.namespace="app" ' \
           'src.identity="spiffe://cluster.local/ns/app/sa/curl"' in destination
    assert f'dst.addr=127.0.0.1:{pair.app_port} ' in destination
    assert 'direction="inbound"' in destination

    settle(pair, 56, allow("cluster.local/ns/app/sa/other"))
    logged(pair, 56)
    source, destination = (last_line(path) for path in pair.ztunnel_logs)
    assert source.split("\t")[1] == "error"
    assert source.endswith(' error="http status: 401 Unauthorized"')
    assert destination.endswith(' error="connection closed due to policy rejection: allow '
                                'policies exist, but none allowed"')
    deny = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "no-curl", "namespace": "app"},
            "spec": {"action": "DENY", "rules": [{"from": [{"source": {
                "principals": [CURL]}}]}]}}
    settle(pair, 56, deny)
    logged(pair, 56)
    assert last_line(pair.ztunnel_logs[1]).endswith(
        ' error="connection closed due to policy rejection: explicitly denied by: app/no-curl"')
