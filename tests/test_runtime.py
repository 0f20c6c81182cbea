"""Does the embedded runtime (the "kubelet") run pods as local processes the way a node would?

Each test builds an in-process API (`ObjectApi` over an in-memory `Store`) with a `PodRuntime`
on a temporary state directory; logs and exec go over real HTTP through the lead's `ApiServer`,
with the real kubectl and the official Python client. Every process a test starts is stopped by
the runtime's shutdown (or by the test itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until
from runtime_support import KUBECTL, NODE, Cluster, Obj, run

from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.resources import ResourceRegistry
from labs.embedded.apiserver.store import Store
from labs.embedded.runtime.context import BACKOFF_ENV
from labs.embedded.workload import HOST_PORTS


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BACKOFF_ENV, "0.5")


def pod_spec(name: str, ports: tuple[int, ...] = (8080,), **container: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"containers": [{"name": "app", "image": "example/web:1",
                                     "ports": [{"containerPort": p} for p in ports],
                                     **container}]}}


def host_ports(pod: Obj) -> dict[str, int]:
    return json.loads(pod["metadata"]["annotations"][HOST_PORTS])


def container_pid(pod: Obj, index: int = 0) -> int:
    return int(pod["status"]["containerStatuses"][index]["containerID"].split("://")[1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").exists() and "State:\tZ" not in Path(
        f"/proc/{pid}/status").read_text()


def http_get(port: int, path: str = "/") -> Obj:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


# -- tests --------------------------------------------------------------------------------------
def test_pod_becomes_ready_with_host_ports_that_answer(tmp_path: Path) -> None:
    """Is a pod scheduled, given host ports, started, Ready, and does its echo server answer?"""
    async def scenario() -> None:
        async with Cluster(tmp_path, http=True) as c:
            c.create("pods", pod_spec("web", ports=(8080, 9090)))
            pod = await c.ready_pod("web")
            assert pod["spec"]["nodeName"] == NODE
            status = pod["status"]
            assert status["phase"] == "Running" and status["podIP"] == "127.0.0.1"
            cs = status["containerStatuses"][0]
            assert cs["ready"] and cs["started"] and cs["restartCount"] == 0
            assert cs["imageID"] and cs["containerID"].startswith("meshlab://")
            ports = host_ports(pod)
            assert set(ports) == {"8080", "9090"} and len(set(ports.values())) == 2
            answer = await asyncio.to_thread(http_get, ports["9090"], "/hello?x=1")
            assert answer["hostname"] == "web" and answer["namespace"] == "default"
            assert answer["path"] == "/hello" and answer["method"] == "GET"
            reasons = [e["reason"] for e in c.events("web")]
            for reason in ("Scheduled", "Simulated", "Created", "Started"):
                assert reason in reasons
            node = c.api.get(c.rt["nodes"], "", NODE)
            ready = next(x for x in node["status"]["conditions"] if x["type"] == "Ready")
            assert ready["status"] == "True" and ready["reason"] == "KubeletReady"

            # the official client's models accept the statuses the runtime writes
            from kubernetes import client
            api_client = c.python_client()
            core = client.CoreV1Api(api_client)
            pods = await asyncio.to_thread(core.list_namespaced_pod, "default")
            assert pods.items[0].status.container_statuses[0].ready is True
            nodes = await asyncio.to_thread(core.list_node)
            assert nodes.items[0].status.node_info.kubelet_version == "v1.37.0-meshlab"
            api_client.close()
    run(scenario())


def test_env_from_configmap_secret_and_fields_reaches_exec(tmp_path: Path) -> None:
    """Do env/envFrom from ConfigMaps and Secrets, fieldRefs and service links reach `exec env`?"""
    async def scenario() -> None:
        async with Cluster(tmp_path, http=True) as c:
            c.create("configmaps", {"metadata": {"name": "cfg"},
                                    "data": {"GREETING": "hello", "COLOR": "blue"}})
            c.create("secrets", {"metadata": {"name": "creds"},
                                 "data": {"password": "czNjcjN0"}})  # s3cr3t
            c.create("services", {"metadata": {"name": "reviews-db"},
                                  "spec": {"ports": [{"name": "http", "port": 9080}],
                                           "selector": {"app": "x"}}})
            c.create("pods", pod_spec(
                "envy", envFrom=[{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
                env=[{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds",
                                                                         "key": "password"}}},
                     {"name": "GREETING", "valueFrom": {"configMapKeyRef": {
                         "name": "cfg", "key": "GREETING"}}},
                     {"name": "MY_POD", "valueFrom": {"fieldRef": {
                         "fieldPath": "metadata.name"}}},
                     {"name": "MY_APP", "valueFrom": {"fieldRef": {
                         "fieldPath": "metadata.labels['app']"}}},
                     {"name": "MESSAGE", "value": "$(GREETING) from $(MY_POD) $$(MY_POD)"}]))
            await c.ready_pod("envy")
            code, out, err = await c.kubectl("exec", "envy", "--", "env")
            assert code == 0, err
            env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
            assert env["PASSWORD"] == "s3cr3t" and env["GREETING"] == "hello"
            assert env["CFG_COLOR"] == "blue" and env["MY_POD"] == "envy"
            assert env["MY_APP"] == "envy"
            assert env["MESSAGE"] == "hello from envy $(MY_POD)"
            assert env["REVIEWS_DB_SERVICE_PORT"] == "9080"
            assert env["REVIEWS_DB_SERVICE_PORT_HTTP"] == "9080"
            assert env["REVIEWS_DB_SERVICE_HOST"].startswith("127.")
            assert env["HOSTNAME"] == "envy" and "POD_NAME" not in env
    run(scenario())


def test_missing_config_key_waits_then_starts(tmp_path: Path) -> None:
    """Does a missing ConfigMap key hold the container in CreateContainerConfigError until the
    key appears?"""
    async def scenario() -> None:
        async with Cluster(tmp_path) as c:
            c.create("pods", pod_spec("needy", env=[{"name": "X", "valueFrom": {
                "configMapKeyRef": {"name": "later", "key": "x"}}}]))

            def waiting() -> Obj | None:
                statuses = ((c.pod("needy") or {}).get("status") or {}).get(
                    "containerStatuses") or [{}]
                return statuses[0].get("state", {}).get("waiting")
            state = await wait_until(waiting, "a waiting container")
            assert state["reason"] == "CreateContainerConfigError"
            assert state["message"] == 'configmap "later" not found'
            assert c.pod("needy")["status"]["phase"] == "Pending"
            assert any(e["reason"] == "Failed" and e["type"] == "Warning"
                       for e in c.events("needy"))
            c.create("configmaps", {"metadata": {"name": "later"}, "data": {"x": "1"}})
            await c.ready_pod("needy")
    run(scenario())


def test_kubectl_exec_streams_exit_codes_and_stdin(tmp_path: Path) -> None:
    """Does `kubectl exec` (v5 WebSocket) report stdout, stderr, exit codes and take stdin, and
    does the Python client's `stream()` work too?"""
    async def scenario() -> None:
        async with Cluster(tmp_path, http=True) as c:
            c.create("pods", pod_spec("box"))
            await c.ready_pod("box")
            code, out, err = await c.kubectl(
                "exec", "box", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
            assert code == 3
            assert out == "out\n"
            assert "err\n" in err and "command terminated with exit code 3" in err
            code, out, err = await c.kubectl("exec", "-i", "box", "--", "tr", "a-z", "A-Z",
                                             stdin=b"hello\nworld\n")
            assert (code, out) == (0, "HELLO\nWORLD\n"), err
            code, out, err = await c.kubectl("exec", "box", "--", "no-such-tool")
            assert code != 0
            assert 'exec: "no-such-tool": executable file not found in $PATH' in err
            code, out, err = await c.kubectl("exec", "box", "--", "pwd")
            assert out.strip().endswith("/app") and "box" in out, err

            from kubernetes import client
            from kubernetes.stream import stream
            api_client = c.python_client()
            core = client.CoreV1Api(api_client)

            def python_exec(protocol: str) -> tuple[str, str, int | None]:
                ws = stream(core.connect_get_namespaced_pod_exec, "box", "default",
                            command=["sh", "-c", "echo from-python; echo oops >&2; exit 4"],
                            stderr=True, stdin=False, stdout=True, tty=False,
                            _preload_content=False,
                            _headers={"sec-websocket-protocol": protocol})
                assert ws.subprotocol == protocol
                ws.run_forever(timeout=10)
                return ws.read_stdout(), ws.read_stderr(), ws.returncode
            for protocol in ("v4.channel.k8s.io", "v5.channel.k8s.io"):
                output = await asyncio.to_thread(python_exec, protocol)
                assert output == ("from-python\n", "oops\n", 4)

            def python_tty() -> str:
                ws = stream(core.connect_get_namespaced_pod_exec, "box", "default",
                            command=["sh", "-c", "tty; read line; echo got-$line"],
                            stderr=True, stdin=True, stdout=True, tty=True,
                            _preload_content=False)
                ws.write_stdin("typed\n")
                ws.run_forever(timeout=10)
                return ws.read_stdout()
            output = await asyncio.to_thread(python_tty)
            assert "/dev/pts/" in output and "got-typed\r\n" in output  # a terminal: CRLF
            api_client.close()
    run(scenario())


def test_kubectl_logs_tail_follow_and_previous(tmp_path: Path) -> None:
    """Do `kubectl logs`, `--tail`, `--timestamps`, `-f` and `--previous` behave as on a node?"""
    async def scenario() -> None:
        async with Cluster(tmp_path, http=True) as c:
            c.create("pods", pod_spec("talky"))
            pod = await c.ready_pod("talky")
            port = host_ports(pod)["8080"]
            code, _, err = await c.kubectl("logs", "talky", "--previous")
            assert code != 0
            assert 'previous terminated container "app" in pod "talky" not found' in err
            for path in ("/one", "/two"):
                await asyncio.to_thread(http_get, port, path)
            code, out, err = await c.kubectl("logs", "talky")
            assert code == 0, err
            assert "echo server listening" in out and '"GET /one' in out and '"GET /two' in out
            code, out, _ = await c.kubectl("logs", "talky", "--tail=1")
            assert out.count("\n") == 1 and '"GET /two' in out
            code, out, _ = await c.kubectl("logs", "talky", "--tail=1", "--timestamps")
            stamp = out.split(" ", 1)[0]
            assert len(stamp) == 30 and stamp.endswith("Z") and stamp[10] == "T"

            follower = await asyncio.create_subprocess_exec(
                str(KUBECTL), f"--kubeconfig={c.kubeconfig}", "logs", "-f", "talky",
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env={**os.environ, "HOME": str(tmp_path)})
            assert follower.stdout is not None
            await asyncio.to_thread(http_get, port, "/three")
            seen = b""
            while b"GET /three" not in seen:
                seen += await asyncio.wait_for(follower.stdout.readline(), 10)
            os.kill(container_pid(c.pod("talky")), signal.SIGKILL)
            await asyncio.wait_for(follower.wait(), 10)  # -f ends with the container's run
            assert follower.returncode == 0

            await c.ready_pod("talky")
            await wait_until(lambda: c.pod("talky")["status"]["containerStatuses"][0][
                "restartCount"] == 1, "a restart")
            code, out, err = await c.kubectl("logs", "talky", "--previous")
            assert code == 0 and "GET /three" in out, err
            code, out, _ = await c.kubectl("logs", "talky")
            assert "GET /three" not in out and "echo server listening" in out
    run(scenario())


def test_killed_process_restarts_with_back_off(tmp_path: Path) -> None:
    """Is a SIGKILLed container restarted (restartCount, lastState), then backed off?"""
    async def scenario() -> None:
        async with Cluster(tmp_path) as c:
            c.create("pods", pod_spec("crashy"))
            pod = await c.ready_pod("crashy")
            first = container_pid(pod)
            os.kill(first, signal.SIGKILL)

            def restarted() -> Obj | None:
                pod = c.pod("crashy")
                cs = pod["status"]["containerStatuses"][0]
                return pod if cs["restartCount"] == 1 and cs["ready"] else None
            pod = await wait_until(restarted, "restartCount 1 and ready")
            cs = pod["status"]["containerStatuses"][0]
            assert cs["lastState"]["terminated"]["exitCode"] == 137
            assert cs["lastState"]["terminated"]["reason"] == "Error"
            assert container_pid(pod) != first and not alive(first)

            os.kill(container_pid(pod), signal.SIGKILL)  # second crash: back-off this time

            def backing_off() -> Obj | None:
                cs = c.pod("crashy")["status"]["containerStatuses"][0]
                return cs["state"].get("waiting")
            waiting = await wait_until(backing_off, "CrashLoopBackOff")
            assert waiting["reason"] == "CrashLoopBackOff"
            assert any(e["reason"] == "BackOff" for e in c.events("crashy"))
            await wait_until(lambda: c.pod("crashy")["status"]["containerStatuses"][0][
                "restartCount"] == 2 and c.pod("crashy")["status"]["containerStatuses"][0][
                "ready"], "restartCount 2")
    run(scenario())


def test_restart_policy_never_ends_in_succeeded_or_failed(tmp_path: Path) -> None:
    """With restartPolicy Never, does a clean exit give Succeeded and a kill give Failed?"""
    async def scenario() -> None:
        async with Cluster(tmp_path) as c:
            for name in ("clean", "killed"):
                spec = pod_spec(name)
                spec["spec"]["restartPolicy"] = "Never"
                c.create("pods", spec)
            for name, sig, phase in (("clean", signal.SIGTERM, "Succeeded"),
                                     ("killed", signal.SIGKILL, "Failed")):
                pod = await c.ready_pod(name)
                pid = container_pid(pod)
                os.kill(pid, sig)
                pod = await wait_until(lambda n=name, p=phase: (c.pod(n) or {}).get("status", {})
                                       .get("phase") == p and c.pod(n), f"{name} {phase}")
                cs = pod["status"]["containerStatuses"][0]
                assert cs["restartCount"] == 0 and "terminated" in cs["state"]
                assert not any(x["status"] == "True" for x in pod["status"]["conditions"]
                               if x["type"] == "Ready")
    run(scenario())


def test_deletion_stops_processes_and_removes_the_pod(tmp_path: Path) -> None:
    """Does deleting a pod (graceful, and grace 0) stop its processes and free its ports?"""
    async def scenario() -> None:
        async with Cluster(tmp_path) as c:
            c.create("pods", pod_spec("gone"))
            c.create("pods", pod_spec("gone-now"))
            gone, now_ = await c.ready_pod("gone"), await c.ready_pod("gone-now")
            pids = [container_pid(gone), container_pid(now_)]
            c.api.delete(c.rt["pods"], "default", "gone")
            assert c.pod("gone")["metadata"]["deletionTimestamp"]  # graceful: still there
            c.api.delete(c.rt["pods"], "default", "gone-now", grace_period=0)
            await wait_until(lambda: c.pod("gone") is None, "the pod removed")
            assert any(e["reason"] == "Killing" for e in c.events("gone"))
            await wait_until(lambda: not any(alive(p) for p in pids), "processes stopped")
            await wait_until(lambda: not any((tmp_path / "pods").iterdir()), "pod dirs removed")
            assert c.runtime.ctx.ports._in_use == set()
    run(scenario())


def test_leftover_processes_are_killed_at_start_up(tmp_path: Path) -> None:
    """After a daemon was `kill -9`ed, are its containers (and only its containers) killed?"""
    pod_dir = tmp_path / "pods" / "default_old_1234-uid"
    pod_dir.mkdir(parents=True)
    ours = subprocess.Popen(["sleep", "60"], start_new_session=True,
                            env={"PATH": os.defpath, "MESHLAB_POD_UID": "1234-uid"})
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True,
                                env={"PATH": os.defpath})
    (pod_dir / "app.pid").write_text(f"{ours.pid}\n")
    (pod_dir / "other.pid").write_text(f"{stranger.pid}\n")
    try:
        async def scenario() -> None:
            async with Cluster(tmp_path) as c:
                await wait_until(lambda: c.api.find(c.rt["nodes"], "", NODE), "the node")
                await wait_until(lambda: not pod_dir.exists(), "the stale pod dir removed")
        run(scenario())
        assert ours.wait(timeout=5) == -signal.SIGKILL
        assert stranger.poll() is None  # a pid file naming someone else's process
    finally:
        for proc in (ours, stranger):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()


def test_daemon_restart_restarts_containers_and_counts_it(tmp_path: Path) -> None:
    """When the daemon comes back, are its pods running again, counted as a restart?"""
    async def scenario() -> None:
        api = ObjectApi(Store(None), ResourceRegistry())
        async with Cluster(tmp_path, api=api) as c:
            c.create("pods", pod_spec("durable"))
            pod = await c.ready_pod("durable")
            old_pid, old_ports = container_pid(pod), host_ports(pod)
        assert not alive(old_pid)  # shutdown stopped it
        async with Cluster(tmp_path, api=api) as c:
            def restarted() -> bool:  # a container still waiting to start has no containerID
                status = c.pod("durable")["status"]["containerStatuses"][0]
                return "containerID" in status and container_pid(c.pod("durable")) != old_pid
            await wait_until(restarted, "a new process")
            pod = await c.ready_pod("durable")
            cs = pod["status"]["containerStatuses"][0]
            assert cs["restartCount"] == 1 and cs["lastState"]["terminated"]["reason"] == "Unknown"
            assert host_ports(pod) == old_ports  # the same ports again when they are free
    run(scenario())


def test_probes_gate_readiness_and_restart_on_liveness_failure(tmp_path: Path) -> None:
    """Does a readiness probe keep a running pod unready until it passes, and does a failing
    liveness probe get the container restarted?"""
    async def scenario() -> None:
        async with Cluster(tmp_path) as c:
            c.create("pods", pod_spec(
                "probed", ports=(),
                readinessProbe={"exec": {"command": ["sh", "-c", "test -f ready"]},
                                "periodSeconds": 1},
                livenessProbe={"exec": {"command": ["sh", "-c", "test ! -f broken"]},
                               "periodSeconds": 1, "failureThreshold": 1}))
            await wait_until(lambda: (c.pod("probed") or {}).get("status", {}).get(
                "phase") == "Running", "Running")
            await wait_until(lambda: any(e["reason"] == "Unhealthy" for e in c.events("probed")),
                             "an Unhealthy event")
            assert not c.pod("probed")["status"]["containerStatuses"][0]["ready"]
            workdir = next((tmp_path / "pods").iterdir()) / "app"
            (workdir / "ready").touch()
            pod = await c.ready_pod("probed")
            (workdir / "broken").touch()
            await wait_until(lambda: c.pod("probed")["status"]["containerStatuses"][0][
                "restartCount"] == 1, "a liveness restart")
            assert any(e["reason"] == "Killing" and "liveness" in e["message"]
                       for e in c.events("probed"))
            assert container_pid(c.pod("probed")) != container_pid(pod)
    run(scenario())


def test_http_readiness_probe_uses_the_named_port(tmp_path: Path) -> None:
    """Is an httpGet readiness probe on a named port sent to that port's host port?"""
    async def scenario() -> None:
        async with Cluster(tmp_path) as c:
            spec = pod_spec("named", ports=(), readinessProbe={
                "httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1})
            spec["spec"]["containers"][0]["ports"] = [{"name": "http", "containerPort": 8000}]
            c.create("pods", spec)
            pod = await c.ready_pod("named")
            assert set(host_ports(pod)) == {"8000"}
            chunks = [chunk async for chunk in c.runtime.log_stream(
                pod, "app", follow=False, tail_lines=None, previous=False, since_seconds=60,
                timestamps=False)]
            assert b'"GET /healthz HTTP/1.1" 200' in b"".join(chunks)
    run(scenario())
