"""The in-process node the runtime tests share: an `ObjectApi` over an in-memory `Store`, a
`PodRuntime` on a temporary state directory and, with `http=True`, the `ApiServer` over HTTPS
with a kubeconfig, so the real kubectl and the official Python client can reach it.

Usage in a test module:

    from runtime_support import Cluster, run

    def test_something(tmp_path: Path) -> None:
        async def scenario() -> None:
            async with Cluster(tmp_path, http=True) as c:
                c.create("pods", {...})
                pod = await c.ready_pod("web")
        run(scenario())
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web
from conftest import wait_until

from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.resources import ResourceRegistry
from labs.embedded.apiserver.server import ApiServer
from labs.embedded.apiserver.store import Store
from labs.embedded.daemon import kubeconfig_text
from labs.embedded.pki import server_context, serving_files
from labs.embedded.runtime import PodRuntime

KUBECTL = Path(sys.executable).parent / "kubectl"
TOKEN = "runtime-test-token"
NODE = "meshlab-test-node"
Obj = dict[str, Any]
CORE_PLURALS = ("pods", "configmaps", "secrets", "services", "namespaces", "events", "nodes")


class Cluster:
    """API + runtime (+ HTTPS server and kubeconfig when `http=True`) for one test; `api`
    lets a test restart the runtime on the same objects, `forwarder_port` is the runtime's
    node forwarder port (the `http_proxy` of pods without a sidecar) and `start_forwarder` what
    the runtime awaits when a pod needs it."""

    def __init__(self, state_dir: Path, http: bool = False, api: ObjectApi | None = None,
                 forwarder_port: int | None = None,
                 start_forwarder: Callable[[], Awaitable[None]] | None = None) -> None:
        self.state_dir = state_dir
        self.http = http
        self.forwarder_port = forwarder_port
        self.start_forwarder = start_forwarder
        self.api = api or ObjectApi(Store(None), ResourceRegistry())
        self.rt = {p: self.api.registry.lookup("", "v1", p) for p in CORE_PLURALS}
        self.kubeconfig = state_dir / "kubeconfig"

    async def __aenter__(self) -> Cluster:
        if self.api.find(self.rt["namespaces"], "", "default") is None:
            self.api.create(self.rt["namespaces"], "", {"metadata": {"name": "default"}})
        self.runtime = PodRuntime(self.api, self.state_dir, NODE,
                                  forwarder_port=self.forwarder_port,
                                  start_forwarder=self.start_forwarder)
        self.task = asyncio.create_task(self.runtime.run())
        if self.http:
            # kubectl sends its token only over TLS: serve HTTPS as the daemon does
            tls = serving_files(self.state_dir, "t")
            self.ca = str(tls.ca_cert)
            self.server = web.AppRunner(ApiServer(self.api, TOKEN, pod_io=self.runtime).app(),
                                        access_log=None, shutdown_timeout=1)
            await self.server.setup()
            site = web.TCPSite(self.server, "127.0.0.1", 0, ssl_context=server_context(tls))
            await site.start()
            port = self.server.addresses[0][1]
            self.url = f"https://127.0.0.1:{port}"
            self.kubeconfig.write_text(kubeconfig_text("t", port, TOKEN,
                                                       tls.ca_cert.read_bytes()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        if self.http:
            await self.server.cleanup()

    # -- helpers -------------------------------------------------------------------------
    def python_client(self) -> Any:
        from kubernetes import client
        config = client.Configuration(host=self.url, api_key={"authorization": f"Bearer {TOKEN}"})
        config.ssl_ca_cert = self.ca
        return client.ApiClient(config)

    def create(self, plural: str, obj: Obj) -> Obj:
        return self.api.create(self.rt[plural], "default", obj).object

    def pod(self, name: str) -> Obj | None:
        return self.api.find(self.rt["pods"], "default", name)

    def events(self, name: str) -> list[Obj]:
        items, _ = self.api.list(self.rt["events"], "default")
        return [e for e in items if e["involvedObject"]["name"] == name]

    def container_ready(self, name: str, container: str) -> bool:
        statuses = ((self.pod(name) or {}).get("status") or {}).get("containerStatuses") or []
        return any(s["name"] == container and s["ready"] for s in statuses)

    async def ready_pod(self, name: str) -> Obj:
        def ready() -> Obj | None:
            pod = self.pod(name)
            conds = (pod or {}).get("status", {}).get("conditions") or []
            ok = any(c["type"] == "Ready" and c["status"] == "True" for c in conds)
            return pod if ok else None
        return await wait_until(ready, f"pod {name} Ready")

    async def kubectl(self, *args: str, stdin: bytes | None = None,
                      timeout: float = 30) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            str(KUBECTL), f"--kubeconfig={self.kubeconfig}", *args,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "HOME": str(self.state_dir)})
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async def exec_env(self, pod: str, container: str) -> dict[str, str]:
        """`kubectl exec <pod> -c <container> -- env`, as a dict."""
        code, out, err = await self.kubectl("exec", pod, "-c", container, "--", "env")
        assert code == 0, err
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)
