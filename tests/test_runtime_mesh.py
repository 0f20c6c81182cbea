"""Does the runtime run the data plane of the embedded mesh: capture mode for pods with an
`istio-proxy` container (a real Envoy), the proxy environment of every pod, exec shims for the
commands an image provides, and the node forwarder's Envoy?

Each test builds an in-process API (`ObjectApi` over an in-memory `Store`) with a `PodRuntime`
on a temporary state directory; `kubectl exec` goes over real HTTPS through the `ApiServer`. The
sidecar container is written into the pod spec here (injection is not under test), and the
listener the control plane would write is written by hand. Every process a test starts is
stopped before it ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from conftest import wait_until
from runtime_support import Cluster, Obj, run

from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.resources import ResourceRegistry
from labs.embedded.apiserver.store import Store
from labs.embedded.apps import catalog
from labs.embedded.loopback import port_is_free, tcp_check
from labs.embedded.mesh import envoy
from labs.embedded.mesh.forwarder import NodeForwarder
from labs.embedded.mesh.istio import sidecar
from labs.embedded.mesh.proxyfiles import ProxyFiles
from labs.embedded.runtime import twins
from labs.embedded.runtime.context import BACKOFF_ENV
from labs.embedded.runtime.ports import PortAllocator
from labs.embedded.workload import (
    ADMIN_PORT_ENV,
    APP_PORTS,
    HOST_PORTS,
    HOST_PORTS_ENV,
    OUTBOUND_PORT_ENV,
    POD_NAME_ENV,
    POD_NAMESPACE_ENV,
    PROXY_PORTS,
    SERVICE_CLUSTER_ENV,
)

PROXY_IMAGE = "docker.io/istio/proxyv2:1.30.0"


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BACKOFF_ENV, "0.5")


def plain_pod(name: str, image: str = "example/web:1") -> Obj:
    return {"metadata": {"name": name, "labels": {"app": name}},
            "spec": {"containers": [{"name": "app", "image": image,
                                     "ports": [{"containerPort": 8080}]}]}}


def meshed_pod(name: str, image: str = "example/web:1") -> Obj:
    """A pod as injection leaves it: the app plus an istio-proxy container whose readiness
    probe asks the sidecar's health listener (port 15021)."""
    pod = plain_pod(name, image)
    pod["spec"]["containers"].append({
        "name": "istio-proxy", "image": PROXY_IMAGE,
        "ports": [{"containerPort": 15090, "name": "http-envoy-prom"}],
        "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021},
                           "periodSeconds": 1}})
    return pod


def annotation(pod: Obj, key: str) -> dict[str, int]:
    return json.loads(pod["metadata"]["annotations"][key])


def container_pid(pod: Obj, container: str) -> int:
    status = next(s for s in pod["status"]["containerStatuses"] if s["name"] == container)
    return int(status["containerID"].split("://")[1])


def alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "State:\tZ" not in status.read_text()
    except OSError:
        return False


def http_get(port: int, path: str = "/") -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def accepts(port: int) -> bool:
    return (await tcp_check(port, 1.0)).ok


async def eventually(check: Callable[[], Awaitable[bool]], what: str,
                     timeout: float = 15) -> None:
    """`wait_until` for checks that are coroutines."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.02)


def write_atomically(path: Path, config: Obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(config))
    tmp.replace(path)


def health_listener(port: int) -> Obj:
    """The smallest listener the control plane's health listener could be."""
    hcm = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
           "HttpConnectionManager")
    return {"resources": [{
        "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
        "name": "health",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": hcm, "stat_prefix": "health",
                "route_config": {"virtual_hosts": [{
                    "name": "health", "domains": ["*"],
                    "routes": [{"match": {"path": "/healthz/ready"},
                                "direct_response": {"status": 200}}]}]},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3."
                             "Router"}}]}}]}]}]}


# -- tests --------------------------------------------------------------------------------------
def test_sidecar_bootstrap_is_valid_for_envoy(tmp_path: Path) -> None:
    """Does the sidecar write a bootstrap (Istio-style node id) and empty xDS files that the
    real Envoy accepts, without replacing files the control plane already wrote?"""
    home = tmp_path / "istio-proxy"
    files = ProxyFiles(home / "xds")
    files.xds_dir.mkdir(parents=True)
    files.cds.write_text("resources: []  # written by the control plane\n")
    argv = sidecar.prepare({"HOME": str(home), POD_NAME_ENV: "reviews-v1-abc",
                            POD_NAMESPACE_ENV: "shop", SERVICE_CLUSTER_ENV: "reviews",
                            ADMIN_PORT_ENV: "15000", OUTBOUND_PORT_ENV: "15001"})
    assert argv[0] == str(envoy.envoy_binary()) and "--disable-hot-restart" in argv
    text = (home / "bootstrap.yaml").read_text()
    assert "sidecar~127.0.0.1~reviews-v1-abc.shop~shop.svc.cluster.local" in text
    assert "cluster: reviews.shop" in text
    assert files.lds.read_text() == files.rds.read_text() == "resources: []\n"
    assert "control plane" in files.cds.read_text()
    assert files.cert_sds.parent.is_dir()
    result = subprocess.run([*argv, "--mode", "validate"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout

    with pytest.raises(sidecar.ProxyConfigError, match=ADMIN_PORT_ENV):
        sidecar.prepare({"HOME": str(home)})


def test_sidecar_image_is_recognised_with_or_without_registry() -> None:
    """Is `istio/proxyv2` recognised at any tag, with or without a registry, and only it?"""
    for image in ("istio/proxyv2:1.30.0", PROXY_IMAGE, "docker.io/istio/proxyv2",
                  "gcr.io/istio-release/proxyv2:1.30.0", "localhost:5000/istio/proxyv2:dev"):
        assert twins.twin_for(image) is catalog.SIDECAR, image
    for image in ("istio/pilot:1.30.0", "example/proxyv2:1", "myistio/proxyv2:1"):
        assert twins.twin_for(image) is not catalog.SIDECAR, image


def test_meshed_pod_runs_envoy_and_turns_ready_once_configured(tmp_path: Path) -> None:
    """Does a pod with an istio-proxy container get host, app and proxy ports before it
    starts, its app listen on the app port, a real Envoy answer on the admin port, and the pod
    turn Ready only once a health listener is configured on port 15021's host port?"""
    async def scenario() -> None:
        async with Cluster(tmp_path, http=True) as c:
            c.create("pods", meshed_pod("web"))
            pod = await wait_until(lambda: c.container_ready("web", "app") and c.pod("web"),
                                   "the app container ready")
            host, app, proxy = (annotation(pod, k) for k in (HOST_PORTS, APP_PORTS, PROXY_PORTS))
            assert set(host) == {"8080", "15090", "15021", "15020"} and set(app) == {"8080"}
            assert set(proxy) == {"admin", "outbound"}
            allocated = [*host.values(), *app.values(), *proxy.values()]
            assert len(set(allocated)) == len(allocated)

            status, body = await asyncio.to_thread(http_get, app["8080"], "/hi")
            assert status == 200 and json.loads(body)["path"] == "/hi"
            assert not await accepts(host["8080"])  # the sidecar's inbound port, later

            await eventually(lambda: accepts(proxy["admin"]), "Envoy's admin listener")
            pid = container_pid(pod, "istio-proxy")
            exe = Path(os.readlink(f"/proc/{pid}/exe"))
            assert exe == envoy.envoy_binary().resolve()  # the container's pid is Envoy
            live = await asyncio.to_thread(http_get, proxy["admin"], "/ready")
            assert live == (200, b"LIVE\n")
            assert not c.container_ready("web", "istio-proxy")  # no health listener yet
            ready = next(x for x in c.pod("web")["status"]["conditions"]
                         if x["type"] == "Ready")
            assert ready["status"] == "False" and "istio-proxy" in ready["message"]

            files = ProxyFiles(c.runtime.ctx.pod_dir(pod) / "istio-proxy" / "xds")
            write_atomically(files.lds, health_listener(host["15021"]))
            pod = await c.ready_pod("web")
            statuses = {s["name"]: s for s in pod["status"]["containerStatuses"]}
            assert statuses["istio-proxy"]["ready"] and statuses["istio-proxy"]["restartCount"] == 0

            simulated = [e for e in c.events("web") if e["reason"] == "Simulated"]
            proxy_event = next(e for e in simulated if "istio-proxy" in e["message"])
            assert proxy_event["type"] == "Normal" and "Envoy" in proxy_event["message"]
            chunks = [chunk async for chunk in c.runtime.log_stream(
                pod, "istio-proxy", follow=False, tail_lines=None, previous=False,
                since_seconds=None, timestamps=False)]
            assert b"sidecar for default/web" in b"".join(chunks)
        assert not alive(pid)
    run(scenario())


def test_daemon_restart_keeps_a_meshed_pods_ports(tmp_path: Path) -> None:
    """When the daemon comes back, does a meshed pod keep its host, app and proxy ports?"""
    async def scenario() -> None:
        api = ObjectApi(Store(None), ResourceRegistry())
        async with Cluster(tmp_path, http=True, api=api) as c:
            c.create("pods", meshed_pod("durable"))
            pod = await wait_until(lambda: c.container_ready("durable", "app")
                                   and c.pod("durable"), "the app container ready")
            before = {k: pod["metadata"]["annotations"][k]
                      for k in (HOST_PORTS, APP_PORTS, PROXY_PORTS)}
        async with Cluster(tmp_path, http=True, api=api) as c:
            def restarted() -> Obj | None:
                pod = c.pod("durable")
                statuses = pod["status"]["containerStatuses"]
                return pod if all(s["restartCount"] == 1 for s in statuses) and \
                    c.container_ready("durable", "app") else None
            pod = await wait_until(restarted, "containers running again")
            assert {k: pod["metadata"]["annotations"][k] for k in before} == before
    run(scenario())


def test_proxy_environment_of_meshed_and_plain_pods(tmp_path: Path) -> None:
    """Do exec sessions in a meshed pod go through its sidecar's outbound port, the sidecar
    itself get its ports but no proxy, and a pod without a sidecar go through the node
    forwarder with a `.curlrc` that makes curl tunnel?"""
    forwarder_port = PortAllocator().allocate()

    async def scenario() -> None:
        async with Cluster(tmp_path, http=True, forwarder_port=forwarder_port) as c:
            c.create("pods", meshed_pod("meshed"))
            c.create("pods", plain_pod("plain"))
            await c.ready_pod("plain")
            pod = await wait_until(lambda: c.container_ready("meshed", "app")
                                   and c.pod("meshed"), "the meshed app container ready")
            outbound = annotation(pod, PROXY_PORTS)["outbound"]

            env = await c.exec_env("meshed", "app")
            assert env["http_proxy"] == env["HTTP_PROXY"] == f"http://127.0.0.1:{outbound}"
            assert env["no_proxy"] == env["NO_PROXY"] == "localhost,127.0.0.1,::1"
            env = await c.exec_env("meshed", "istio-proxy")
            assert "http_proxy" not in env and "HTTP_PROXY" not in env
            assert env[ADMIN_PORT_ENV] == str(annotation(pod, PROXY_PORTS)["admin"])
            assert env[OUTBOUND_PORT_ENV] == str(outbound)
            assert json.loads(env[HOST_PORTS_ENV]) == annotation(pod, HOST_PORTS)
            env = await c.exec_env("plain", "app")
            assert env["http_proxy"] == env["HTTP_PROXY"] == f"http://127.0.0.1:{forwarder_port}"

            code, out, _ = await c.kubectl("exec", "plain", "--", "cat", ".curlrc")
            assert code == 0 and out.endswith("\nproxytunnel\n")
            for container in ("app", "istio-proxy"):  # the pod's localhost only, no tunnel
                code, out, _ = await c.kubectl("exec", "meshed", "-c", container, "--",
                                               "cat", ".curlrc")
                assert code == 0 and "connect-to" in out and "proxytunnel" not in out, container
            assert "meshlab.dev/app-ports" not in c.pod("plain")["metadata"]["annotations"]
    run(scenario())


def test_forwarder_starts_for_the_first_plain_pod_that_dials_services(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Is the node forwarder started on first need only: not for a meshed pod nor for a plain
    pod whose program dials no service (Prometheus), but before an exec into that one and before
    the containers of a plain pod whose program may dial services start?"""
    quiet = catalog.App(description="quiet twin", argv=twins.GENERIC_ECHO.argv,
                        dials_services=False)
    monkeypatch.setattr(twins, "app_for",
                        lambda image: quiet if image.startswith("example/quiet") else None)
    calls: list[bool | None] = []  # per call: whether the pod "plain" had a log yet

    async def scenario() -> None:
        async def start_forwarder() -> None:
            pod = c.pod("plain")
            calls.append(None if pod is None
                         else (c.runtime.ctx.pod_dir(pod) / "app.log").exists())

        async with Cluster(tmp_path, http=True, forwarder_port=PortAllocator().allocate(),
                           start_forwarder=start_forwarder) as c:
            c.create("pods", meshed_pod("meshed"))
            c.create("pods", plain_pod("quiet", image="example/quiet:1"))
            await c.ready_pod("quiet")
            await wait_until(lambda: c.container_ready("meshed", "app"), "the meshed app")
            assert calls == []
            code, _, err = await c.kubectl("exec", "quiet", "--", "true")
            assert code == 0, err
            assert len(calls) == 1 and calls[0] is None  # no pod "plain" yet
            c.create("pods", plain_pod("plain"))
            await c.ready_pod("plain")
            assert calls[1:] == [False], "the forwarder was asked for after the app started"
            assert (c.runtime.ctx.pod_dir(c.pod("plain")) / "app.log").exists()
    run(scenario())
    assert not twins.twin_for("prom/prometheus:v3.5.0").dials_services


def test_no_proxy_settings_without_a_forwarder(tmp_path: Path) -> None:
    """Without a node forwarder, does a plain pod get no proxy settings and a `.curlrc` that
    does not tunnel?"""
    async def scenario() -> None:
        async with Cluster(tmp_path, http=True) as c:
            c.create("pods", plain_pod("plain"))
            await c.ready_pod("plain")
            env = await c.exec_env("plain", "app")
            assert "http_proxy" not in env and "HTTP_PROXY" not in env
            code, out, _ = await c.kubectl("exec", "plain", "--", "cat", ".curlrc")
            assert code == 0 and "proxytunnel" not in out
    run(scenario())


def test_commands_an_image_provides_are_on_path(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Does a command the catalog says an image provides (like `fortio`) run in
    `kubectl exec`, through a shim first on PATH, and is the catalog's description the
    `Simulated` event?"""
    tool = [sys.executable, "-c", "import sys; print('tool', *sys.argv[1:])"]
    loadgen = catalog.App(description="load generator twin", argv=twins.GENERIC_ECHO.argv,
                          commands={"loadgen": tool})
    monkeypatch.setattr(twins, "app_for",
                        lambda image: loadgen if image.startswith("example/loadgen") else None)

    async def scenario() -> None:
        async with Cluster(tmp_path, http=True) as c:
            c.create("pods", plain_pod("gen", image="example/loadgen:1"))
            c.create("pods", plain_pod("other"))
            pod = await c.ready_pod("gen")
            await c.ready_pod("other")
            code, out, err = await c.kubectl("exec", "gen", "--", "loadgen", "load", "-n", "3")
            assert (code, out) == (0, "tool load -n 3\n"), err
            code, out, _ = await c.kubectl("exec", "gen", "--", "sh", "-c", "command -v loadgen")
            assert out.strip() == str(c.runtime.ctx.pod_dir(pod) / "bin" / "loadgen")
            code, _, err = await c.kubectl("exec", "other", "--", "loadgen")
            assert code != 0 and "executable file not found" in err
            event = next(e for e in c.events("gen") if e["reason"] == "Simulated")
            assert event["type"] == "Normal" and "load generator twin" in event["message"]
    run(scenario())


def test_catalog_fortio_runs_in_exec_by_name_and_by_image_path(tmp_path: Path) -> None:
    """Does `kubectl exec <fortio pod> -- fortio …` work, and `/usr/bin/fortio …` as Istio's
    tasks type it?"""
    async def scenario() -> None:
        async with Cluster(tmp_path, http=True) as c:
            c.create("pods", plain_pod("fortio", image="fortio/fortio:latest_release"))
            pod = await c.ready_pod("fortio")
            code, out, err = await c.kubectl("exec", "fortio", "--", "sh", "-c",
                                             "command -v fortio")
            assert (code, out.strip()) == (0, str(c.runtime.ctx.pod_dir(pod) / "bin" / "fortio"))
            for command in ("fortio", "/usr/bin/fortio"):
                code, out, err = await c.kubectl("exec", "fortio", "--", command, "version")
                assert code == 0 and out.strip()[:1].isdigit(), (command, out, err)
    run(scenario())


def test_node_forwarder_runs_restarts_and_stops(tmp_path: Path) -> None:
    """Does the node forwarder start a real Envoy that reads its xDS directory, restart it
    after a SIGKILL, and stop it cleanly?"""
    ports = PortAllocator()
    port, admin = ports.allocate(), ports.allocate()

    async def scenario() -> None:
        forwarder = NodeForwarder(tmp_path, port, admin)
        await forwarder.start()
        try:
            assert (await asyncio.to_thread(http_get, admin, "/ready")) == (200, b"LIVE\n")
            write_atomically(forwarder.files.lds, health_listener(port))
            await eventually(lambda: accepts(port), "the forwarder's listener")
            assert (await asyncio.to_thread(http_get, port, "/healthz/ready"))[0] == 200

            first = forwarder.pid
            assert first is not None
            os.kill(first, signal.SIGKILL)
            await wait_until(lambda: forwarder.pid not in (None, first), "a restarted Envoy")
            assert forwarder.restarts == 1
            await eventually(lambda: accepts(port), "the listener after the restart")
            second = forwarder.pid
        finally:
            await forwarder.stop()
        assert second is not None and not alive(second) and forwarder.pid is None
        assert forwarder.log_path.exists()
    run(scenario())


def test_forwarder_holds_its_ports_until_started_on_demand(tmp_path: Path) -> None:
    """Are the forwarder's ports taken (for other clusters and pods) before it starts, and does
    `ensure_running` start Envoy once, serving the listener the control plane wrote before, even
    when the first caller is cancelled mid-start (its pod deleted)?"""
    ports = PortAllocator()
    port, admin = ports.allocate(), ports.allocate()

    async def scenario() -> None:
        forwarder = NodeForwarder(tmp_path, port, admin)
        try:
            assert not port_is_free(port) and not port_is_free(admin)
            assert not await accepts(port) and not forwarder.running
            forwarder.files.lds.parent.mkdir(parents=True)
            write_atomically(forwarder.files.lds, health_listener(port))
            caller = asyncio.create_task(forwarder.ensure_running())
            first = await wait_until(lambda: forwarder.pid, "the forwarder's Envoy spawned")
            caller.cancel()
            await asyncio.gather(forwarder.ensure_running(), forwarder.ensure_running())
            assert forwarder.running and forwarder.pid == first
            assert (await asyncio.to_thread(http_get, port, "/healthz/ready"))[0] == 200
            await forwarder.ensure_running()
            assert forwarder.pid == first and forwarder.restarts == 0
        finally:
            await forwarder.stop()
    run(scenario())
