"""Does the mesh control plane program real Envoys from the cluster's objects?

Each test builds an in-process API (`ObjectApi` over an in-memory `Store`, with the course CRDs)
and a `MeshControlPlane` on a temporary state directory. Pods are created as the runtime leaves
them (sidecar container, port annotations, Endpoints); no runtime runs. Where Envoy matters the
test starts real Envoys on the written files and sends traffic through them; every process a
test starts is stopped before it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import Kubectl, wait_until

from labs.embedded import controllers
from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.resources import ResourceRegistry, ResourceType
from labs.embedded.apiserver.store import Store
from labs.embedded.daemon import install_course_crds
from labs.embedded.loopback import free_port
from labs.embedded.mesh import envoy, writer
from labs.embedded.mesh.ca import TTL_ENV
from labs.embedded.mesh.forwarder import NodeForwarder
from labs.embedded.mesh.istio.controlplane import MeshControlPlane, sidecar_xds_dir
from labs.embedded.mesh.proxyfiles import ProxyFiles
from labs.embedded.paths import pods_dir
from labs.embedded.workload import APP_PORTS, HOST_PORTS, PROXY_PORTS

Obj = dict[str, Any]
NS = "default"
TEST_TIMEOUT = 60.0


def async_test(fn: Callable[[Path], Coroutine[Any, Any, None]]) -> Callable[[Path], None]:
    def run(tmp_path: Path) -> None:
        asyncio.run(asyncio.wait_for(fn(tmp_path), TEST_TIMEOUT))

    run.__name__, run.__doc__ = fn.__name__, fn.__doc__
    return run


@dataclass
class Workload:
    """A pod as the runtime leaves it: sidecar, allocated ports, the pod object."""

    pod: Obj
    app_port: int | None
    admin_port: int
    outbound_port: int


class Mesh:
    """The API with the course CRDs, and helpers to create what the runtime would."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.api = ObjectApi(Store(None), ResourceRegistry())
        install_course_crds(self.api)

    async def bootstrap(self) -> None:
        await controllers.bootstrap(self.api)

    def rt(self, group: str, plural: str) -> ResourceType:
        found = self.api.registry.lookup(group, "v1", plural)
        assert found is not None
        return found

    def create(self, group: str, plural: str, obj: Obj, namespace: str = NS) -> Obj:
        return self.api.create(self.rt(group, plural), namespace, obj).object

    def meshed_pod(self, name: str, app: str, service_account: str,
                   container_port: int | None = None) -> Workload:
        ports = {"15021": free_port()}
        app_ports = {}
        if container_port is not None:
            ports[str(container_port)] = free_port()
            app_ports[str(container_port)] = free_port()
        admin, outbound = free_port(), free_port()
        container: Obj = {"name": app, "image": f"docker.io/example/{app}:1"}
        if container_port is not None:
            container["ports"] = [{"containerPort": container_port}]
        pod = self.api.create(self.rt("", "pods"), NS, {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": app, "version": "v1"}, "annotations": {
                HOST_PORTS: json.dumps(ports), APP_PORTS: json.dumps(app_ports),
                PROXY_PORTS: json.dumps({"admin": admin, "outbound": outbound})}},
            "spec": {"serviceAccountName": service_account, "containers": [
                container, {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.30.0"}]},
        }, validate=False).object
        return Workload(pod, app_ports.get(str(container_port)), admin, outbound)

    def service(self, workload: Workload, port: int) -> None:
        meta = workload.pod["metadata"]
        app = meta["labels"]["app"]
        self.create("", "services", {"metadata": {"name": app}, "spec": {
            "selector": {"app": app}, "ports": [{"name": "http", "port": port,
                                                 "targetPort": port}]}})
        host_port = json.loads(meta["annotations"][HOST_PORTS])[str(port)]
        self.create("", "endpoints", {"metadata": {"name": app}, "subsets": [{
            "addresses": [{"ip": "127.0.0.1", "targetRef": {
                "kind": "Pod", "name": meta["name"], "namespace": NS, "uid": meta["uid"]}}],
            "ports": [{"name": "http", "port": host_port, "protocol": "TCP"}]}]})

    def files(self, workload: Workload) -> ProxyFiles:
        return ProxyFiles(sidecar_xds_dir(pods_dir(self.state_dir), workload.pod))

    def events(self, reason: str) -> list[Obj]:
        return [e for e in self.api.list(self.rt("", "events"), None)[0]
                if e.get("reason") == reason]


async def meshed_pair(tmp_path: Path) -> tuple[Mesh, Workload, Workload]:
    """httpbin (serving port 8000, with its Service) and a curl client, both meshed."""
    mesh = Mesh(tmp_path)
    await mesh.bootstrap()
    httpbin = mesh.meshed_pod("httpbin-1", "httpbin", "httpbin", 8000)
    curl = mesh.meshed_pod("curl-1", "curl", "curl")
    mesh.service(httpbin, 8000)
    return mesh, httpbin, curl


# -- real Envoys ------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def running_envoy(files: ProxyFiles, admin_port: int, name: str) -> AsyncIterator[None]:
    """An Envoy on `files` (the control plane's output), stopped on exit."""
    path = files.xds_dir.parent / "bootstrap.yaml"
    envoy.write_bootstrap(path, envoy.bootstrap(f"sidecar~127.0.0.1~{name}", name, admin_port,
                                                files))
    log_path = files.xds_dir.parent / "envoy.log"
    with log_path.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            *envoy.envoy_command(path), stdout=out, stderr=out)
    try:
        await wait_until(lambda: _ready(admin_port), f"Envoy {name} ready "
                         f"(log: {log_path})", timeout=10)
        yield
    finally:
        proc.terminate()
        await proc.wait()


def _ready(admin_port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", admin_port)) == 0


async def admin_get(port: int, path: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{port}{path}") as response:
        return await response.text()


async def stat(port: int, name: str) -> int:
    text = await admin_get(port, f"/stats?filter=^{name.replace('.', '[.]')}$")
    return int(text.split(":")[1]) if ":" in text else 0


@contextlib.asynccontextmanager
async def echo_app(port: int) -> AsyncIterator[None]:
    """What httpbin's /headers does: the request headers as JSON."""
    async def headers(request: web.Request) -> web.Response:
        return web.json_response({"headers": {k.lower(): v for k, v in request.headers.items()}})
    app = web.Application()
    app.router.add_get("/headers", headers)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield
    finally:
        await runner.cleanup()


async def through_proxy(proxy_port: int, url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(
            url, proxy=f"http://127.0.0.1:{proxy_port}") as response:
        return response.status, await response.text()


@async_test
async def test_envoys_accept_the_config_and_traffic_flows_with_mtls(tmp_path: Path) -> None:
    """Do real Envoys load every file the control plane writes (sidecars and the node
    forwarder), and does a meshed call carry the caller's SPIFFE id to the app?"""
    mesh, httpbin, curl = await meshed_pair(tmp_path)
    forwarder = NodeForwarder(tmp_path, free_port(), free_port())
    plane = MeshControlPlane(mesh.api, tmp_path, free_port(), forwarder)
    await forwarder.start()
    try:
        plane.sync(None)
        assert httpbin.app_port is not None
        async with echo_app(httpbin.app_port), \
                running_envoy(mesh.files(httpbin), httpbin.admin_port, "httpbin"), \
                running_envoy(mesh.files(curl), curl.admin_port, "curl"):
            for port in (httpbin.admin_port, curl.admin_port, forwarder.admin_port):
                assert await stat(port, "listener_manager.lds.update_rejected") == 0
                assert await stat(port, "cluster_manager.cds.update_rejected") == 0
                assert await stat(port, "listener_manager.total_listeners_active") > 0
            status, body = await through_proxy(curl.outbound_port, "http://httpbin:8000/headers")
            assert status == 200, body
            xfcc = json.loads(body)["headers"]["x-forwarded-client-cert"]
            assert "URI=spiffe://cluster.local/ns/default/sa/curl" in xfcc
            # a client without a sidecar goes through the node forwarder, in plaintext
            status, body = await through_proxy(forwarder.port, "http://httpbin:8000/headers")
            assert status == 200, body
            assert "x-forwarded-client-cert" not in json.loads(body)["headers"]
            ready = await admin_get(httpbin.admin_port, "/ready")
            assert ready.strip() == "LIVE"
    finally:
        await forwarder.stop()


@async_test
async def test_certificates_are_written_before_any_xds_file(tmp_path: Path) -> None:
    """Are a proxy's SDS files in place before the first cds/rds/lds file that refers to them,
    and are the xDS files written clusters, routes, listeners in that order?"""
    mesh, httpbin, _ = await meshed_pair(tmp_path)
    plane = MeshControlPlane(mesh.api, tmp_path, free_port())
    order: list[str] = []
    write_sds = plane.ca.write_sds

    def recording_sds(files: ProxyFiles, cert: Any) -> None:
        order.append(f"sds:{files.xds_dir}")
        write_sds(files, cert)

    def recording_atomic(path: Path, text: str) -> None:
        order.append(f"{path.name}:{path.parent}")
        real_write_atomic(path, text)

    real_write_atomic = writer.write_atomic
    plane.ca.write_sds = recording_sds  # type: ignore[method-assign]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(writer, "write_atomic", recording_atomic)
        plane.sync(None)
    files = mesh.files(httpbin)
    mine = [entry.split(":")[0] for entry in order if entry.endswith(str(files.xds_dir))]
    assert mine == ["sds", "cds.yaml", "rds.yaml", "lds.yaml"]
    assert files.cert_sds.exists() and files.root_sds.exists()
    for path in (files.cds, files.rds, files.lds):
        text = json.loads(path.read_text())
        assert text["resources"], path
        assert all(r["@type"].startswith("type.googleapis.com/envoy.config.")
                   for r in text["resources"])


@async_test
async def test_unchanged_proxies_are_not_rewritten(tmp_path: Path) -> None:
    """Does a pass with nothing new write no file, and does a VirtualService change rewrite
    only the route files?"""
    mesh, httpbin, curl = await meshed_pair(tmp_path)
    plane = MeshControlPlane(mesh.api, tmp_path, free_port())
    plane.sync(None)

    def inodes() -> dict[Path, int]:
        return {p: p.stat().st_ino for w in (httpbin, curl) for f in [mesh.files(w)]
                for p in (f.cds, f.rds, f.lds, f.cert_sds)}

    before = inodes()
    plane.sync(None)
    assert inodes() == before
    mesh.create("networking.istio.io", "virtualservices", {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "httpbin"},
        "spec": {"hosts": ["httpbin"], "http": [{"timeout": "3s",
                                                 "route": [{"destination": {
                                                     "host": "httpbin"}}]}]}})
    plane.sync(None)
    after = inodes()
    changed = {p.name for p in before if before[p] != after[p]}
    assert changed == {"rds.yaml"}
    assert "3s" in mesh.files(curl).rds.read_text()


@async_test
async def test_changes_are_applied_by_the_running_loop(tmp_path: Path) -> None:
    """Does the running control plane pick up a new VirtualService within milliseconds, and
    give a new namespace the mesh root certificate?"""
    mesh, _, curl = await meshed_pair(tmp_path)
    plane = MeshControlPlane(mesh.api, tmp_path, free_port())
    task = asyncio.create_task(plane.run())
    try:
        rds = mesh.files(curl).rds
        await wait_until(lambda: rds.exists(), "the first pass")
        mesh.create("networking.istio.io", "virtualservices", {
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "httpbin"},
            "spec": {"hosts": ["httpbin"], "http": [{
                "timeout": "7s", "route": [{"destination": {"host": "httpbin"}}]}]}})
        await wait_until(lambda: "7s" in rds.read_text(), "the route change", timeout=5)
        mesh.create("", "namespaces", {"metadata": {"name": "late"}}, namespace="")
        configmaps = mesh.rt("", "configmaps")
        root = await wait_until(lambda: mesh.api.find(configmaps, "late", "istio-ca-root-cert"),
                                "the root certificate in a new namespace", timeout=5)
        assert "BEGIN CERTIFICATE" in root["data"]["root-cert.pem"]
        assert mesh.api.find(configmaps, NS, "istio-ca-root-cert") is not None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@async_test
async def test_fields_not_emulated_get_a_condition_and_one_warning_event(tmp_path: Path) -> None:
    """Does a VirtualService with `tcp:` get Reconciled=False/NotEmulated naming the field and
    one Warning event, while a fully emulated one gets no status at all (as in Istio)?"""
    mesh, _, _ = await meshed_pair(tmp_path)
    plane = MeshControlPlane(mesh.api, tmp_path, free_port())
    vs_rt = mesh.rt("networking.istio.io", "virtualservices")
    mesh.create("networking.istio.io", "virtualservices", {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "tcp-route"},
        "spec": {"hosts": ["httpbin"], "tcp": [{"route": [{"destination": {
            "host": "httpbin", "port": {"number": 8000}}}]}]}})
    mesh.create("networking.istio.io", "virtualservices", {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "plain"},
        "spec": {"hosts": ["httpbin"], "http": [{"route": [{"destination": {
            "host": "httpbin"}}]}]}})
    plane.sync(None)
    plane.sync(None)  # a second pass must not repeat the event
    obj = mesh.api.get(vs_rt, NS, "tcp-route")
    [cond] = [c for c in obj["status"]["conditions"] if c["type"] == "Reconciled"]
    assert (cond["status"], cond["reason"]) == ("False", "NotEmulated")
    assert "spec.tcp" in cond["message"]
    assert cond["observedGeneration"] == obj["metadata"]["generation"]
    events = [e for e in mesh.events("NotEmulated")
              if e["involvedObject"]["name"] == "tcp-route"]
    assert len(events) == 1 and events[0]["type"] == "Warning"
    assert "spec.tcp" in events[0]["message"]
    plain = mesh.api.get(vs_rt, NS, "plain")
    assert "status" not in plain, "an object applied in full gets no status (as in Istio)"
    assert mesh.events("NotApplied") == []


@async_test
async def test_objects_without_effect_say_why(tmp_path: Path) -> None:
    """Does a VirtualService for a host that matches no service get Reconciled=False /
    NotApplied, and does it turn True once the service exists?"""
    mesh, _, _ = await meshed_pair(tmp_path)
    plane = MeshControlPlane(mesh.api, tmp_path, free_port())
    vs_rt = mesh.rt("networking.istio.io", "virtualservices")
    mesh.create("networking.istio.io", "virtualservices", {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "later"},
        "spec": {"hosts": ["later"], "http": [{"route": [{"destination": {"host": "later"}}]}]}})
    plane.sync(None)
    [cond] = mesh.api.get(vs_rt, NS, "later")["status"]["conditions"]
    assert (cond["status"], cond["reason"]) == ("False", "NotApplied")
    assert "matches no Service" in cond["message"]
    assert len(mesh.events("NotApplied")) == 1
    mesh.create("", "services", {"metadata": {"name": "later"},
                                 "spec": {"ports": [{"port": 80}]}})
    plane.sync(None)
    [cond] = mesh.api.get(vs_rt, NS, "later")["status"]["conditions"]
    assert (cond["status"], cond["reason"]) == ("True", "Emulated")


@async_test
async def test_kinds_not_emulated_are_reported(tmp_path: Path) -> None:
    """Does an object of a kind the embedded mesh ignores say so on its status?"""
    mesh, _, _ = await meshed_pair(tmp_path)
    plane = MeshControlPlane(mesh.api, tmp_path, free_port())
    mesh.create("networking.istio.io", "sidecars", {
        "apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
        "metadata": {"name": "default"}, "spec": {"egress": [{"hosts": ["./*"]}]}})
    plane.sync(None)
    obj = mesh.api.get(mesh.rt("networking.istio.io", "sidecars"), NS, "default")
    [cond] = obj["status"]["conditions"]
    assert cond["reason"] == "NotEmulated" and "Sidecar resources" in cond["message"]


@async_test
async def test_certificates_rotate_at_half_life(tmp_path: Path) -> None:
    """With a 4 s TTL, is each workload certificate reissued after 2 s, and not before?"""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(TTL_ENV, "4s")
        mesh, httpbin, _ = await meshed_pair(tmp_path)
        plane = MeshControlPlane(mesh.api, tmp_path, free_port())
    plane.sync(None)
    cert_file = mesh.files(httpbin).cert_sds
    first = cert_file.read_text()
    assert plane.rotate_due() == 0
    await asyncio.sleep(2.1)
    assert plane.rotate_due() == 2
    assert cert_file.read_text() != first


@async_test
async def test_pods_without_ports_wait_and_deleted_pods_are_forgotten(tmp_path: Path) -> None:
    """Is a meshed pod the runtime has not started yet left alone, and a deleted one dropped?"""
    mesh, httpbin, curl = await meshed_pair(tmp_path)
    pods = mesh.rt("", "pods")
    waiting = mesh.api.create(pods, NS, {
        "metadata": {"name": "not-started", "labels": {"app": "x"}},
        "spec": {"containers": [{"name": "x", "image": "x"},
                                {"name": "istio-proxy", "image": "proxy"}]}},
        validate=False).object
    plane = MeshControlPlane(mesh.api, tmp_path, free_port())
    plane.sync(None)
    assert not sidecar_xds_dir(pods_dir(tmp_path), waiting).exists()
    assert len(plane._proxies) == 2
    mesh.api.delete(pods, NS, curl.pod["metadata"]["name"], grace_period=0)
    plane.sync(None)
    assert set(plane._proxies) == {httpbin.pod["metadata"]["uid"]}


# -- through the whole daemon -----------------------------------------------------------------
MANIFESTS = Path(__file__).resolve().parent.parent / "labs" / "manifests"


def test_meshed_curl_reaches_httpbin_with_its_identity(kubectl: Kubectl) -> None:
    """In a namespace labelled for injection, does `kubectl exec deploy/curl -- curl
    http://httpbin:8000/headers` answer 200 through both sidecars, with the curl pod's SPIFFE
    id in X-Forwarded-Client-Cert?"""
    kubectl("label", "namespace", kubectl.namespace, "istio-injection=enabled")
    kubectl("apply", "-f", str(MANIFESTS / "httpbin.yaml"), "-f", str(MANIFESTS / "curl.yaml"))
    kubectl("wait", "--for=condition=Available", "deployment/httpbin", "deployment/curl",
            "--timeout=60s")
    out = kubectl("exec", "deploy/curl", "--", "curl", "-s", "-w", "\n%{http_code}",
                  "http://httpbin:8000/headers")
    body, code = out.rsplit("\n", 1)
    assert code == "200", out
    xfcc = json.loads(body)["headers"]["X-Forwarded-Client-Cert"]
    assert f"URI=spiffe://cluster.local/ns/{kubectl.namespace}/sa/curl" in str(xfcc)
