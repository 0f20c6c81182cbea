"""Is a pod's `localhost` its own, as in a shared pod network namespace: does `localhost:PORT`
in `kubectl exec` reach the pod's app and its sidecar's 15000/15020/15021/15090 from curl and
from any other program (the pod-loopback shim: Python, bash's /dev/tcp, wget), is a port the pod
does not have refused, and does `pilot-agent request` work in `istio-proxy` the way Istio's
circuit-breaking task runs it
(https://istio.io/latest/docs/tasks/traffic-management/circuit-breaking/)?"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import poll
from mesh_support import MeshNamespace, mesh_namespace_fixture, yaml_stream

from labs.embedded.apps import localhost
from labs.embedded.runtime import network, pod_loopback
from labs.embedded.runtime.exec_user import EXEC_UID_ENV
from labs.embedded.runtime.ports import PortAllocator
from labs.embedded.workload import HOST_PORTS
from labs.istio_names import SIDECAR_CONTAINER

mesh = mesh_namespace_fixture("httpbin", "fortio", "curl", prefix="podlo")

# the task's DestinationRule, field for field
CIRCUIT_BREAKER = {
    "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
    "metadata": {"name": "httpbin"},
    "spec": {"host": "httpbin", "trafficPolicy": {
        "connectionPool": {"tcp": {"maxConnections": 1},
                           "http": {"http1MaxPendingRequests": 1,
                                    "maxRequestsPerConnection": 1}},
        "outlierDetection": {"consecutive5xxErrors": 1, "interval": "1s",
                             "baseEjectionTime": "3m", "maxEjectionPercent": 100}}}}
LOAD = ("/usr/bin/fortio", "load", "-c", "2", "-qps", "0", "-n", "20", "-loglevel", "Warning",
        "http://httpbin:8000/get")
CURL_CODE = ("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}")
# `python3 -c DIAL URL...`: each URL's status and whether Envoy's stats are in the body, or the
# error; direct (no proxy) unless the URL names a service
DIAL = """
import sys, urllib.request
for url in sys.argv[1:]:
    proxies = {} if "localhost" in url or "127.0.0.1" in url or "[::1]" in url else None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler(proxies))
    try:
        with opener.open(url, timeout=20) as answer:
            body = answer.read().decode(errors="replace")
            print(url, answer.status, "server.live: 1" in body)
    except OSError as exc:
        print(url, type(getattr(exc, "reason", exc)).__name__)
"""
# `python3 -c CONNECT PORT...`: a bare TCP connect to 127.0.0.1:PORT, "connected" or the error
CONNECT = """
import socket, sys
for port in sys.argv[1:]:
    try:
        socket.create_connection(("127.0.0.1", int(port)), timeout=20).close()
        print(port, "connected")
    except OSError as exc:
        print(port, type(exc).__name__)
"""


def kexec(mesh: MeshNamespace, app: str, container: str, *command: str
          ) -> subprocess.CompletedProcess[str]:
    """`kubectl exec POD -c CONTAINER -- command...` in the running pod of `app`."""
    return mesh.kubectl.run("exec", mesh.pod(app), "-c", container, "--", *command, timeout=90)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}{result.stdout}"
    return result.stdout


def test_a_pods_localhost_map_covers_its_app_and_sidecar_ports() -> None:
    """Does a meshed pod's `localhost` send the app's port to where the app listens (not the
    sidecar's inbound), 15000 to the Envoy admin and 15020/15021/15090 to their host ports,
    and does curl get the same map?"""
    pod = {"metadata": {"name": "web", "namespace": "default", "uid": "u1"},
           "spec": {"containers": [{"name": "app", "ports": [{"containerPort": 8080}]},
                                   {"name": SIDECAR_CONTAINER}]}}
    ports = network.allocate(pod, pod["spec"]["containers"], PortAllocator())
    local = ports.localhost()
    assert set(local) == {8080, 15000, 15020, 15021, 15090}
    assert local[8080] == ports.app[8080] != ports.host[8080]
    assert local[15000] == ports.proxy["admin"]
    assert all(local[p] == ports.host[p] for p in (15020, 15021, 15090))
    rc = network.curlrc(ports, forwarder_port=None)
    assert f'connect-to = "localhost:15000:127.0.0.1:{local[15000]}"' in rc.splitlines()
    assert f'connect-to = "[::1]:8080:127.0.0.1:{local[8080]}"' in rc.splitlines()


def test_network_env_lists_the_proxy_port_the_shim_lets_through() -> None:
    """Does an app container of a meshed pod get its sidecar's outbound port as the one port
    dialed as it is, the sidecar none, and a pod without a sidecar the node forwarder's?"""
    pod = {"metadata": {"name": "web", "namespace": "default", "uid": "u1"},
           "spec": {"containers": [{"name": "app", "ports": [{"containerPort": 8080}]},
                                   {"name": SIDECAR_CONTAINER}]}}
    app, sidecar = pod["spec"]["containers"]
    ports = network.allocate(pod, [app, sidecar], PortAllocator())
    env = network.network_env(pod, ports, app, forwarder_port=20999)
    assert json.loads(env[localhost.DIRECT_ENV]) == [ports.proxy["outbound"]]
    assert env["http_proxy"] == f"http://127.0.0.1:{ports.proxy['outbound']}"
    assert json.loads(network.network_env(pod, ports, sidecar, 20999)[localhost.DIRECT_ENV]) == []
    unmeshed = {**pod, "spec": {"containers": [app]}}
    plain = network.allocate(unmeshed, [app], PortAllocator())
    plain_env = network.network_env(unmeshed, plain, app, forwarder_port=20999)
    assert json.loads(plain_env[localhost.DIRECT_ENV]) == [20999]
    assert plain_env["http_proxy"] == "http://127.0.0.1:20999"


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> pod_loopback.Shim:
    built = pod_loopback.build(tmp_path_factory.mktemp("shim"))
    if built.path is None:
        pytest.skip(f"no pod-loopback shim on this host: {built.reason}")
    return built


@pytest.fixture
def listeners() -> Iterator[list[int]]:
    """Two loopback servers answering `hi` to each connection; their ports."""
    servers = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
    stop = threading.Event()

    def serve(server: socket.socket) -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"hi")

    threads = [threading.Thread(target=serve, args=(s,), daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    yield [s.getsockname()[1] for s in servers]
    stop.set()
    for thread, server in zip(threads, servers, strict=True):
        thread.join(timeout=5)
        server.close()


PROBE = """
import socket, sys
def dial(family, host, port, kind=socket.SOCK_STREAM):
    with socket.socket(family, kind) as s:
        s.settimeout(10)
        try:
            s.connect((host, port))
            return s.recv(2).decode() if kind == socket.SOCK_STREAM else "sent"
        except OSError as exc:
            return type(exc).__name__
for arg in sys.argv[1:]:
    host, port = arg.rsplit(":", 1)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    print(arg, dial(family, host, int(port)))
print("udp", dial(socket.AF_INET, "127.0.0.1", 9, socket.SOCK_DGRAM))
"""


def probe(shim: pod_loopback.Shim, env: dict[str, str], *targets: str
          ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROBE, *targets], capture_output=True,
                          text=True, timeout=60, env=shim.exec_env(env))


def test_shim_maps_pod_ports_and_refuses_the_others(shim: pod_loopback.Shim,
                                                    listeners: list[int]) -> None:
    """With the shim preloaded, does localhost:15000 (by 127.0.0.1, 127.0.0.2, ::1 and
    ::ffff:127.0.0.1) reach the map's host port, a host port of the map and a direct port go
    as they are, and a listening host port the pod does not have get refused, UDP untouched?"""
    mapped, other = listeners
    env = {localhost.LOCALHOST_ENV: json.dumps({"15000": mapped}),
           localhost.DIRECT_ENV: "[ 9 ]", "PATH": "/usr/bin:/bin"}
    done = probe(shim, env, "127.0.0.1:15000", "127.0.0.2:15000", "::1:15000",
                 "::ffff:127.0.0.1:15000", f"127.0.0.1:{mapped}", f"127.0.0.1:{other}",
                 "::1:15001")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.splitlines() == [
        "127.0.0.1:15000 hi", "127.0.0.2:15000 hi", "::1:15000 hi", "::ffff:127.0.0.1:15000 hi",
        f"127.0.0.1:{mapped} hi", f"127.0.0.1:{other} ConnectionRefusedError",
        "::1:15001 ConnectionRefusedError", "udp sent"]
    direct = probe(shim, {**env, localhost.DIRECT_ENV: f"[{other}]"}, f"127.0.0.1:{other}")
    assert direct.stdout.splitlines()[0] == f"127.0.0.1:{other} hi"


@pytest.mark.parametrize("variable, value", [
    (localhost.LOCALHOST_ENV, '{"15000": "20001"}'), (localhost.LOCALHOST_ENV, '{"15000": 0}'),
    (localhost.LOCALHOST_ENV, "[20001]"), (localhost.DIRECT_ENV, '{"1": 2}')])
def test_shim_with_a_malformed_map_says_so_and_stays_out(
        shim: pod_loopback.Shim, listeners: list[int], variable: str, value: str) -> None:
    """Does a garbled variable leave connect() alone, with one clear line on stderr?"""
    port = listeners[1]
    env = {localhost.LOCALHOST_ENV: "{}", localhost.DIRECT_ENV: "[]", variable: value}
    done = probe(shim, env, f"127.0.0.1:{port}", f"127.0.0.1:{port}")
    assert done.stdout.splitlines()[:2] == [f"127.0.0.1:{port} hi"] * 2
    assert done.stderr.startswith(f"meshlab pod-loopback: {variable}={value} is not a JSON ")
    assert done.stderr.endswith("; localhost is the host's in this process (the embedded "
                                "cluster's runtime sets it: do not change it)\n")
    assert done.stderr.count("\n") == 1


def test_shim_env_appends_to_ld_preload_and_says_why_when_off(tmp_path: Path) -> None:
    """Is the shim appended to a pod's own LD_PRELOAD, left out of a process outside a pod,
    and, where it cannot be built, is the reason in the exec'd environment?"""
    pod_env = {localhost.LOCALHOST_ENV: "{}", "LD_PRELOAD": "/opt/libfoo.so"}
    on = pod_loopback.Shim(tmp_path / "shim.so")
    assert on.exec_env(pod_env)["LD_PRELOAD"] == f"/opt/libfoo.so:{tmp_path / 'shim.so'}"
    assert on.exec_env({"PATH": "/bin"}) == {"PATH": "/bin"}
    no_cc = pod_loopback.build(tmp_path, compiler="meshlab-no-such-cc")
    assert no_cc.path is None and "no C compiler ('meshlab-no-such-cc') on PATH" in no_cc.reason
    off = no_cc.exec_env(pod_env)
    assert off[pod_loopback.SHIM_ENV].startswith("off: no C compiler")
    assert off["LD_PRELOAD"] == "/opt/libfoo.so"
    mac = pod_loopback.build(tmp_path, system="darwin")
    assert mac.path is None and "needs Linux's LD_PRELOAD (this is darwin)" in mac.reason
    assert list(tmp_path.iterdir()) == []


def test_shim_is_built_once_and_must_be_readable_by_the_exec_user(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Is the shim compiled once per source (a second build reuses the file, no temporary file
    left), and, when execs run as another user (the grader's sandbox), used only where that
    user can read it, and off saying why where it cannot?"""
    if shutil.which("cc") is None:
        pytest.skip("no C compiler on this host")
    shared = Path(tempfile.mkdtemp())
    try:
        shared.chmod(0o755)
        first = pod_loopback.build(shared / "cache")
        assert first.path is not None and first.path.parent == shared / "cache"
        stamp = first.path.stat().st_mtime_ns
        assert pod_loopback.build(shared / "cache") == first
        assert first.path.stat().st_mtime_ns == stamp
        assert [p.name for p in first.path.parent.iterdir()] == [first.path.name]
        monkeypatch.setenv(EXEC_UID_ENV, "65534")
        assert pod_loopback.build(shared / "cache") == first
        private = tmp_path / "private"  # under pytest's 0700 directory
        off = pod_loopback.build(private)
        assert off.path is None and "is not readable by the exec user (uid 65534)" in off.reason
    finally:
        shutil.rmtree(shared)


def test_circuit_breaking_task_counts_pending_overflow(mesh: MeshNamespace) -> None:
    """The task step by step: with the DestinationRule applied, does fortio's load see both
    200 and 503, and does `pilot-agent request GET stats` in the fortio pod's sidecar show the
    httpbin cluster's `upstream_rq_pending_overflow` counting them?"""
    mesh.apply(yaml_stream(CIRCUIT_BREAKER))
    try:
        def configured() -> bool:
            clusters = ok(kexec(mesh, "fortio", SIDECAR_CONTAINER,
                                "pilot-agent", "request", "GET", "clusters"))
            return bool(re.search(r"^outbound\|8000\|\|httpbin\.[^:]+::default_priority::"
                                  r"max_pending_requests::1$", clusters, re.M))
        poll(configured, "the circuit breaker in the fortio sidecar's /clusters", timeout=60)
        assert "HTTP/1.1 200" in ok(kexec(mesh, "fortio", "fortio", "/usr/bin/fortio", "curl",
                                          "-quiet", "http://httpbin:8000/get"))

        def overflowed() -> str | None:
            report = ok(kexec(mesh, "fortio", "fortio", *LOAD))
            return report if "Code 503" in report else None
        report = poll(overflowed, "503s in fortio's report", timeout=120, interval=0.5)
        assert "Code 200" in report

        stats = ok(kexec(mesh, "fortio", SIDECAR_CONTAINER,
                         "pilot-agent", "request", "GET", "stats"))
        pending = [line for line in stats.splitlines() if "httpbin" in line and "pending" in line]
        overflow = [line for line in pending
                    if re.search(r"\.upstream_rq_pending_overflow: [1-9][0-9]*$", line)]
        assert overflow and overflow[0].startswith(f"cluster.outbound|8000||httpbin.{mesh.name}")
        assert any(".upstream_rq_pending_total: " in line for line in pending)
    finally:
        mesh.reset_routing()


@pytest.mark.parametrize("container", ["curl", SIDECAR_CONTAINER])
def test_localhost_reaches_the_sidecar_ports(mesh: MeshNamespace, container: str) -> None:
    """From the app container and the sidecar's own, do localhost:15000 (admin), :15021 and
    :15020 `/healthz/ready`, :15090 and :15020 `/stats/prometheus` answer as in Istio?"""
    clusters = ok(kexec(mesh, "curl", container, "curl", "-s", "localhost:15000/clusters"))
    assert re.search(r"^outbound\|8000\|\|httpbin\.", clusters, re.M)
    for url in ("localhost:15021/healthz/ready", "http://127.0.0.1:15020/healthz/ready"):
        assert ok(kexec(mesh, "curl", container, *CURL_CODE, url)) == "200", url
    for port in (15090, 15020):
        metrics = ok(kexec(mesh, "curl", container, "curl", "-s",
                           f"localhost:{port}/stats/prometheus"))
        assert "# TYPE envoy_cluster_upstream_rq_total counter" in metrics, port
    assert ok(kexec(mesh, "curl", container, *CURL_CODE, "localhost:15090/clusters")) == "404"


@pytest.mark.usefixtures("shim")
@pytest.mark.parametrize("container", ["curl", SIDECAR_CONTAINER])
def test_any_program_reaches_the_pods_localhost(mesh: MeshNamespace, container: str) -> None:
    """Through the pod-loopback shim: does a Python program get Envoy's /stats at
    localhost:15000, 127.0.0.1:15000 and [::1]:15000, bash's /dev/tcp the readiness answer at
    localhost:15021, and is a port the pod does not have refused to both?"""
    urls = [f"http://{host}:15000/stats" for host in ("localhost", "127.0.0.1", "[::1]")]
    out = ok(kexec(mesh, "curl", container, "python3", "-c", DIAL, *urls,
                   "http://localhost:15004/"))
    assert out.splitlines() == [f"{url} 200 True" for url in urls] + [
        "http://localhost:15004/ ConnectionRefusedError"]
    ready = ok(kexec(mesh, "curl", container, "bash", "-c",
                     "exec 3<>/dev/tcp/localhost/15021 && "
                     "printf 'GET /healthz/ready HTTP/1.1\\r\\nHost: localhost\\r\\n"
                     "Connection: close\\r\\n\\r\\n' >&3 && head -n 1 <&3"))
    assert ready.rstrip() == "HTTP/1.1 200 OK", ready
    refused = kexec(mesh, "curl", container, "bash", "-c", ": <>/dev/tcp/127.0.0.1/15004")
    assert refused.returncode == 1 and "Connection refused" in refused.stderr


@pytest.mark.usefixtures("shim")
@pytest.mark.skipif(shutil.which("wget") is None, reason="wget is not installed on this host")
def test_wget_reaches_the_sidecar_admin(mesh: MeshNamespace) -> None:
    """Does wget in `istio-proxy` get /stats at localhost:15000, and fail on a port the pod
    does not have (exit 4: network failure)?"""
    stats = ok(kexec(mesh, "curl", SIDECAR_CONTAINER, "wget", "-q", "-O", "-",
                     "http://localhost:15000/stats"))
    assert "server.live: 1" in stats
    failed = kexec(mesh, "curl", SIDECAR_CONTAINER, "wget", "-q", "-O", "-",
                   "http://localhost:15004/")
    assert failed.returncode == 4


@pytest.mark.usefixtures("shim")
def test_other_pods_ports_are_refused_and_services_go_through_the_proxy(
        mesh: MeshNamespace) -> None:
    """Is httpbin's host port, listening on the shared loopback, refused to a program in the
    curl pod (as another pod's port is on a real pod's loopback), while httpbin:8000 through
    the pod's `http_proxy` still answers Python's urllib and curl?"""
    pod = json.loads(mesh.kubectl("get", "pod", mesh.pod("httpbin"), "-o", "json"))
    host_port = min(json.loads(pod["metadata"]["annotations"][HOST_PORTS]).values())
    socket.create_connection(("127.0.0.1", host_port), timeout=10).close()  # it does listen
    out = ok(kexec(mesh, "curl", "curl", "python3", "-c", CONNECT, str(host_port)))
    assert out.split() == [str(host_port), "ConnectionRefusedError"]
    out = ok(kexec(mesh, "curl", "curl", "python3", "-c", DIAL, "http://httpbin:8000/get"))
    assert out.split() == ["http://httpbin:8000/get", "200", "False"]
    assert ok(kexec(mesh, "curl", "curl", *CURL_CODE, "http://httpbin:8000/get")) == "200"


def test_localhost_reaches_the_app_itself(mesh: MeshNamespace) -> None:
    """Does `curl localhost:8080` in httpbin's container reach httpbin directly (loopback is not
    captured by the sidecar: no Envoy request id), and fortio's its own echo server?"""
    body = ok(kexec(mesh, "httpbin", "httpbin", "curl", "-s", "localhost:8080/headers"))
    headers = {name.lower() for name in json.loads(body)["headers"]}
    assert "host" in headers and "x-request-id" not in headers
    assert ok(kexec(mesh, "fortio", "fortio", *CURL_CODE, "localhost:8080/")) == "200"


@pytest.mark.usefixtures("shim")
def test_fortio_curl_reaches_its_own_pod(mesh: MeshNamespace) -> None:
    """Does `fortio curl localhost:8080` (the fortio twin's client, run by exec, dialing
    directly) reach the fortio pod's own echo server through the shim?"""
    assert "HTTP/1.1 200" in ok(kexec(mesh, "fortio", "fortio", "fortio", "curl", "-quiet",
                                      "http://localhost:8080/"))


def test_pilot_agent_request_posts_and_reports_errors(mesh: MeshNamespace) -> None:
    """Does `pilot-agent request POST 'logging?level=...'` change Envoy's log level (absolute
    path as in the image too), and does a status above 399 fail as pilot-agent fails?"""
    out = ok(kexec(mesh, "curl", SIDECAR_CONTAINER, "/usr/local/bin/pilot-agent", "request",
                   "POST", "logging?level=debug"))
    assert "active loggers:" in out and "upstream: debug" in out
    out = ok(kexec(mesh, "curl", SIDECAR_CONTAINER, "pilot-agent", "request", "POST",
                   "logging?level=warning"))
    assert "upstream: warning" in out
    failed = kexec(mesh, "curl", SIDECAR_CONTAINER, "pilot-agent", "request", "GET",
                   "stats?format=nonsense")
    assert failed.returncode == 255
    assert failed.stderr.startswith("Error: received unsuccessful status code 400")
    refused = kexec(mesh, "curl", SIDECAR_CONTAINER, "pilot-agent", "request", "GET",
                    "stats", "--debug-port", "15004")
    assert refused.returncode == 255
    assert 'Get "http://localhost:15004/stats": dial tcp' in refused.stderr


def test_unknown_pilot_agent_command_gives_its_usage_error(mesh: MeshNamespace) -> None:
    """Does an unknown subcommand fail with cobra's error, suggestion and usage hint?"""
    result = kexec(mesh, "curl", SIDECAR_CONTAINER, "pilot-agent", "requets", "GET", "stats")
    assert result.returncode == 255
    assert result.stderr.startswith('Error: unknown command "requets" for "pilot-agent"\n\n'
                                    "Did you mean this?\n\trequest\n")
    assert "\nRun 'pilot-agent --help' for usage.\ncommand terminated with exit code 255" \
        in result.stderr  # kubectl's own last line
    assert "\terror\tunknown command" in result.stdout


def test_pilot_agent_wait_returns_once_the_proxy_is_ready(mesh: MeshNamespace) -> None:
    """Does `pilot-agent wait` poll localhost:15021/healthz/ready and say Envoy is ready, and
    time out with pilot-agent's error against a port where nothing answers?"""
    out = ok(kexec(mesh, "curl", SIDECAR_CONTAINER, "pilot-agent", "wait",
                   "--periodMillis", "100"))
    assert out.rstrip().endswith("\tinfo\tEnvoy is ready!")
    failed = kexec(mesh, "curl", SIDECAR_CONTAINER, "pilot-agent", "wait", "--timeoutSeconds",
                   "1", "--periodMillis", "200", "--url", "http://localhost:15004/ready")
    assert failed.returncode == 255
    assert failed.stderr.startswith("Error: timeout waiting for Envoy proxy to become ready. "
                                    'Last error: Get "http://localhost:15004/ready": dial tcp')
