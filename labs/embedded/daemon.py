"""One embedded cluster: API server, controllers, runtime and mesh in one asyncio process.

Started in the background by `meshlab up`; `python -m labs.embedded.daemon --name N --state-dir D`.
It writes `endpoint.json` only once it serves requests, so a client that sees the file can connect;
the file also names the telemetry server's port (`telemetry`) and the host port of the Prometheus
addon's pod (`prometheus`, istio-system; the file is rewritten when that port changes).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import fcntl
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from aiohttp import web

from labs.embedded import controllers
from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.builtin_schemas import builtin_schema
from labs.embedded.apiserver.course_crds import course_crds, forget_parsed
from labs.embedded.apiserver.crd_types import established_status
from labs.embedded.apiserver.errors import ApiError
from labs.embedded.apiserver.objects import random_token, with_last_applied
from labs.embedded.apiserver.resources import ResourceRegistry
from labs.embedded.apiserver.server import ApiServer
from labs.embedded.apiserver.store import Store
from labs.embedded.heap import pin_malloc_thresholds
from labs.embedded.loopback import free_port, port_is_free
from labs.embedded.mesh.forwarder import NodeForwarder
from labs.embedded.mesh.install import install_addons
from labs.embedded.mesh.prometheus import PrometheusTargets
from labs.embedded.mesh.telemetry import TelemetryServer
from labs.embedded.paths import ClusterPaths, write_private
from labs.embedded.pki import server_context, serving_files
from labs.embedded.runtime import PodRuntime

from .mesh.istio.config_validation import register_istio_validation
from .mesh.istio.gateway_install import install_ingress_gateway
from .mesh.istio.injection import register_injection
from .mesh.linkerd import injection as linkerd_injection
from .mesh.linkerd.policy_validation import register_policy_validation

if TYPE_CHECKING:
    from .mesh.istio.controlplane import MeshControlPlane
    from .mesh.linkerd.controlplane import LinkerdControlPlane

log = logging.getLogger("meshlab.daemon")
STATE_DIR_CHECK_S = 2.0


def kubeconfig_text(name: str, port: int, token: str, ca_pem: bytes) -> str:
    cluster = {"server": f"https://127.0.0.1:{port}",
               "certificate-authority-data": base64.b64encode(ca_pem).decode()}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": f"{name}-admin", "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-admin",
                                                "namespace": "default"}}],
        "current-context": name,
        "preferences": {},
    }
    return yaml.safe_dump(config, sort_keys=False)


def _existing_token(paths: ClusterPaths) -> str | None:
    try:
        config = yaml.safe_load(paths.kubeconfig.read_text())
        return str(config["users"][0]["user"]["token"])
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError):
        return None


def choose_port(paths: ClusterPaths) -> int:
    """Keep the port of the previous run when free, so existing kubeconfigs keep working."""
    try:
        config = yaml.safe_load(paths.kubeconfig.read_text())
        previous = int(config["clusters"][0]["cluster"]["server"].rsplit(":", 1)[1])
        if port_is_free(previous):
            return previous
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError, ValueError):
        pass
    return free_port()


def install_course_crds(api: ObjectApi) -> None:
    """Create the course's CRDs, or bring them up to date with the packaged versions."""
    rt = api.registry.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    assert rt is not None
    for crd in course_crds():
        name = crd["metadata"]["name"]
        existing = api.find(rt, "", name)
        # annotated as if applied (a learner may apply them), only when written: ~20 ms
        if existing is None:
            crd = with_last_applied(crd)
            # Established at once, the status the API would write right after: one write each
            crd["status"] = established_status(crd)
            api.create(rt, "", crd, validate=False, packaged=True)
        elif existing.get("spec") != crd.get("spec"):
            crd = with_last_applied(crd)
            crd["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            api.update(rt, "", name, crd, validate=False, packaged=True)
    forget_parsed()


def publish_api_service(api: ObjectApi, port: int) -> None:
    """The `kubernetes` Service in `default` and its Endpoints (the API server), as on a real
    cluster; the Endpoints follow the port this run listens on."""
    svc_rt = api.registry.lookup("", "v1", "services")
    ep_rt = api.registry.lookup("", "v1", "endpoints")
    assert svc_rt is not None and ep_rt is not None
    if api.find(svc_rt, "default", "kubernetes") is None:
        api.create(svc_rt, "default", {
            "metadata": {"name": "kubernetes", "labels": {
                "component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": "127.96.0.1", "clusterIPs": ["127.96.0.1"],
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                                "targetPort": 6443}]}}, validate=False,
                   packaged=True)
    endpoints = {"metadata": {"name": "kubernetes", "namespace": "default",
                              "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                 "subsets": [{"addresses": [{"ip": "127.0.0.1"}],
                              "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]}
    if api.find(ep_rt, "default", "kubernetes") is None:
        api.create(ep_rt, "default", endpoints, validate=False, packaged=True)
    else:
        api.update(ep_rt, "default", "kubernetes", endpoints, validate=False, packaged=True)


def warm_up_schemas() -> None:
    """Build the schemas of the kinds learners write first, off the event loop, so the first
    `kubectl apply` does not pay for importing the client models (about 0.6 s)."""
    for api_version, kind in (("v1", "Namespace"), ("v1", "Pod"), ("apps/v1", "Deployment"),
                              ("v1", "Service"), ("v1", "ConfigMap")):
        builtin_schema(api_version, kind)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped: %r", task.get_name(), task.exception())


class Mesh:
    """The mesh beside the cluster: node forwarder, telemetry server, control plane and the
    Prometheus addon's target lists. Each piece that fails to start is logged and left out, so
    the cluster itself still comes up. Prometheus itself runs as the addon's pod. The node
    forwarder starts only when a pod without a sidecar needs it (the runtime calls
    `forwarder.ensure_running`), so an all-meshed cluster runs one Envoy fewer."""

    def __init__(self, api: ObjectApi, state_dir: os.PathLike[str]) -> None:
        self.api = api
        self.state_dir = state_dir
        self.forwarder = NodeForwarder(state_dir, free_port(), free_port())
        self.telemetry = TelemetryServer(state_dir, free_port())
        self.prometheus: PrometheusTargets | None = None
        self.control_plane: MeshControlPlane | None = None
        self.linkerd: LinkerdControlPlane | None = None
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start what can start; the control planes (Istio's, Linkerd's) run as tasks in
        `self.tasks`."""
        # Imported here, once the API serves: ~25 ms of the daemon's start that no API request
        # needs (the xDS builders, the Gateway API translation, the CA).
        from .mesh.istio.controlplane import MeshControlPlane
        from .mesh.linkerd.controlplane import LinkerdControlPlane
        from .mesh.linkerd.metrics import LinkerdMetrics

        try:
            await self.telemetry.start()
        except Exception as exc:
            log.error("the telemetry server did not start (%r); the mesh runs without it", exc)
        try:
            plane = MeshControlPlane(self.api, self.state_dir, self.telemetry.port,
                                     self.forwarder)
        except Exception:
            log.exception("the mesh control plane did not start: sidecars get no configuration")
        else:
            self.prometheus = PrometheusTargets(plane.pods_dir, self.telemetry.port)
            plane.observers += [self.telemetry.update_state, self.prometheus.update]
            self.control_plane = plane
            self.tasks.append(asyncio.create_task(plane.run(), name="mesh-control-plane"))
        self.linkerd = LinkerdControlPlane(self.api, Path(self.state_dir), self.telemetry.port)
        metrics = LinkerdMetrics()
        self.telemetry.add_proxy_metrics(metrics)
        self.linkerd.observers.append(metrics.update_state)
        self.tasks.append(asyncio.create_task(self.linkerd.run(),
                                              name="linkerd-control-plane"))
        for task in self.tasks:
            task.add_done_callback(_log_failure)

    def endpoint_ports(self) -> dict[str, int]:
        ports = {"telemetry": self.telemetry.port}
        if self.prometheus is not None and self.prometheus.port is not None:
            ports["prometheus"] = self.prometheus.port
        return ports

    async def stop(self) -> None:
        """Control plane first (no more writes), then the processes and servers."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for piece in (self.forwarder, self.telemetry):
            try:
                await piece.stop()
            except Exception:
                log.exception("stopping %s failed", type(piece).__name__)


class Daemon:
    def __init__(self, paths: ClusterPaths) -> None:
        self.paths = paths
        self.stop_requested = asyncio.Event()

    async def _stop_when_state_dir_goes(self) -> None:
        """A daemon whose state directory was deleted (a removed temp dir, `rm -rf ~/.meshlab`)
        can no longer be found by `meshlab down`: it stops itself instead of lingering."""
        # The database, not the directory: running pods keep re-creating their own folders.
        while self.paths.database.exists():
            await asyncio.sleep(STATE_DIR_CHECK_S)
        log.warning("state directory %s is gone; stopping", self.paths.dir)
        self.stop_requested.set()

    async def serve(self) -> None:
        paths = self.paths
        token = _existing_token(paths) or random_token()
        port = choose_port(paths)
        # The schemas come from the `kubernetes` client's models (imports of ~0.5 s): built in
        # a thread while the start (which needs none: packaged objects are not decoded) goes
        # on, so the controllers' first writes right after the start do not wait for them.
        warm_up = asyncio.get_running_loop().run_in_executor(None, warm_up_schemas)
        warm_up.add_done_callback(lambda f: f.exception() and log.error(
            "warming up schemas failed: %r", f.exception()))
        store = Store(paths.database)
        api = ObjectApi(store, ResourceRegistry())
        install_course_crds(api)
        await controllers.bootstrap(api)
        publish_api_service(api, port)
        register_injection(api)
        linkerd_injection.register_injection(api)  # after Istio's, as webhooks run by name
        register_istio_validation(api)
        register_policy_validation(api)
        mesh = Mesh(api, paths.dir)
        runtime = PodRuntime(api, paths.dir, node_name=f"{paths.name}-control-plane",
                             forwarder_port=mesh.forwarder.port,
                             start_forwarder=mesh.forwarder.ensure_running)
        server = ApiServer(api, token, pod_io=runtime)
        server.address = f"127.0.0.1:{port}"
        runner = web.AppRunner(server.app(), access_log=None, shutdown_timeout=2)
        await runner.setup()
        tls = serving_files(paths.dir, paths.name)
        site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True,
                           ssl_context=server_context(tls))
        await site.start()
        write_private(paths.kubeconfig,
                      kubeconfig_text(paths.name, port, token, tls.ca_cert.read_bytes()))
        tasks = [asyncio.create_task(c.run(), name=type(c).__name__)
                 for c in controllers.all_controllers(api, ca_pem=tls.ca_cert.read_text())]
        install_ingress_gateway(api)  # Linkerd is not: `linkerd install` does (labs/linkerd)
        install_addons(api)

        def publish_endpoint() -> None:
            write_private(paths.endpoint, json.dumps(
                {"pid": os.getpid(), "port": port, **mesh.endpoint_ports()}))
        # The API serves every object a learner starts from: clients may come now (`meshlab
        # up` returns). The mesh and the pods start behind it; the control plane reconciles
        # whatever was applied meanwhile.
        publish_endpoint()
        await mesh.start()
        tasks.append(asyncio.create_task(runtime.run(), name="runtime"))
        # Flagger watches Canaries only: idle (one store subscription) until one exists.
        # Imported here, once the API serves: ~40 ms no start-up request needs.
        from .flagger import FlaggerController
        tasks.append(asyncio.create_task(FlaggerController(api).run(), name="flagger"))
        if mesh.prometheus is not None:  # from now on, a new addon pod's port is published
            mesh.prometheus.on_change = publish_endpoint
        log.info("cluster %s serving on 127.0.0.1:%d", paths.name, port)
        try:
            done_waiter = asyncio.create_task(self.stop_requested.wait())
            tasks.append(asyncio.create_task(self._stop_when_state_dir_goes(),
                                             name="state-dir-watch"))
            finished, _ = await asyncio.wait([done_waiter, *tasks],
                                             return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                if task is not done_waiter and task.exception() is not None:
                    log.error("%s stopped: %r", task.get_name(), task.exception())
        finally:
            log.info("stopping cluster %s", paths.name)
            if mesh.prometheus is not None:
                mesh.prometheus.on_change = None
            with contextlib.suppress(OSError):
                paths.endpoint.unlink()
            server.stopping.set()
            for task in mesh.tasks:
                task.cancel()
            await runtime.shutdown()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await mesh.stop()
            await runner.cleanup()
            store.close()


def _hold_lock(paths: ClusterPaths) -> int:
    """One daemon per cluster: a second one exits at once instead of corrupting state."""
    paths.dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"cluster {paths.name} is already running (lock {paths.lock})", file=sys.stderr)
        raise SystemExit(3) from None
    return fd


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", default=None)
    parser.add_argument("--state-dir", default=None)
    args = parser.parse_args(argv)
    paths = ClusterPaths.of(args.name, args.state_dir)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _hold_lock(paths)
    pin_malloc_thresholds()
    daemon = Daemon(paths)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, daemon.stop_requested.set)
        await daemon.serve()

    try:
        asyncio.run(run())
    except ApiError as err:  # e.g. a packaged CRD the server rejects: a bug worth a clear line
        print(f"meshlab daemon could not start: {err.message}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
