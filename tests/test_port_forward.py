"""`kubectl port-forward` against the embedded cluster, with the real pinned kubectl.

kubectl 1.37 tunnels SPDY/3.1 through a WebSocket (`SPDY/3.1+portforward.k8s.io`) and, with
`KUBECTL_PORT_FORWARD_WEBSOCKETS=false`, speaks plain SPDY after an `Upgrade: SPDY/3.1`; both
are exercised. Every forward listens on a port the system picks (`:REMOTE`), and is stopped at
the end of its test.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from conftest import Kubectl
from mesh_support import MeshNamespace, mesh_namespace_fixture, wait_available

from labs.cluster import ClusterRef, kubectl_binary
from labs.embedded.runtime.spdy import DICTIONARY, HeaderCodec

READY_TIMEOUT = 30.0
FORWARDING = re.compile(r"^Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)$")
DETAILS = """\
apiVersion: v1
kind: Service
metadata: {name: details, labels: {app: details}}
spec:
  ports: [{name: http, port: 9080}]
  selector: {app: details}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: details}
spec:
  replicas: 1
  selector: {matchLabels: {app: details}}
  template:
    metadata: {labels: {app: details}}
    spec:
      containers:
      - name: details
        image: docker.io/istio/examples-bookinfo-details-v1:1.20.1
        ports: [{containerPort: 9080}]
"""

mesh = mesh_namespace_fixture("httpbin", prefix="pf")


@pytest.fixture(scope="module")
def plain(cluster: ClusterRef) -> Iterator[Kubectl]:
    """A namespace without sidecars running bookinfo's details on 9080."""
    kubectl = Kubectl(cluster, f"pf-plain-{uuid.uuid4().hex[:6]}")
    kubectl("create", "namespace", kubectl.namespace, timeout=30)
    try:
        kubectl("apply", "-f", "-", input=DETAILS)
        wait_available(cluster, kubectl.namespace)
        yield kubectl
    finally:
        cluster.kubectl("delete", "namespace", kubectl.namespace, "--wait=false")


@dataclass
class Forward:
    """A running `kubectl port-forward`: its local ports by remote port, and its output."""

    proc: subprocess.Popen[str]
    local: dict[int, int] = field(default_factory=dict)
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    def url(self, remote: int, path: str) -> str:
        return f"http://127.0.0.1:{self.local[remote]}{path}"

    def wait_exit(self, timeout: float = 15) -> int:
        return self.proc.wait(timeout=timeout)


def _pump(stream: object, into: list[str], lines: queue.Queue[str] | None) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.append(line.rstrip("\n"))
        if lines is not None:
            lines.put(line.rstrip("\n"))


@contextmanager
def port_forward(cluster: ClusterRef, namespace: str, target: str, *ports: str,
                 websockets: bool = True) -> Iterator[Forward]:
    """Start `kubectl port-forward`, wait (bounded) for one `Forwarding from` line per port,
    stop it on exit."""
    env = dict(os.environ)
    if not websockets:
        env["KUBECTL_PORT_FORWARD_WEBSOCKETS"] = "false"
    proc = subprocess.Popen(
        [kubectl_binary(), f"--kubeconfig={cluster.kubeconfig}", f"--context={cluster.context}",
         f"--namespace={namespace}", "port-forward", target, *ports],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    forward = Forward(proc)
    lines: queue.Queue[str] = queue.Queue()
    pumps = [threading.Thread(target=_pump, args=(proc.stdout, forward.stdout, lines)),
             threading.Thread(target=_pump, args=(proc.stderr, forward.stderr, None))]
    for pump in pumps:
        pump.start()
    try:
        while len(forward.local) < len(ports):
            try:
                line = lines.get(timeout=READY_TIMEOUT)
            except queue.Empty:
                pytest.fail(f"kubectl port-forward {target} printed no 'Forwarding from' line "
                            f"within {READY_TIMEOUT:g}s: {forward.stdout} {forward.stderr}")
            if match := FORWARDING.match(line):
                forward.local[int(match[2])] = int(match[1])
        try:
            yield forward
        except OSError as exc:
            pytest.fail(f"no answer through kubectl port-forward {target} ({exc}); kubectl "
                        f"said: {' '.join(forward.stderr)}")
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pump in pumps:
            pump.join(timeout=10)


def get(url: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def running_pod(kubectl: Kubectl, app: str) -> str:
    names = kubectl("get", "pods", "-l", f"app={app}", "--field-selector=status.phase=Running",
                    "-o", "jsonpath={.items[*].metadata.name}").split()
    assert names, f"no running {app} pod in {kubectl.namespace}"
    return names[0]


def test_the_spdy_dictionary_is_spdystreams() -> None:
    """Byte for byte the dictionary of moby/spdystream (spdy/dictionary.go), or the client's
    zlib cannot inflate a single header block."""
    import hashlib

    assert len(DICTIONARY) == 1423
    assert hashlib.sha256(DICTIONARY).hexdigest() == (
        "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02")


def test_header_blocks_share_one_zlib_context() -> None:
    sender, receiver = HeaderCodec(), HeaderCodec()
    first = {"streamtype": ["error"], "port": ["9080"], "requestid": ["0"]}
    second = {"streamtype": ["data"], "port": ["9080"], "requestid": ["0"]}
    assert receiver.decode(sender.encode(first)) == first
    block = sender.encode(second)
    assert receiver.decode(block) == second
    assert HeaderCodec().decode(HeaderCodec().encode(second)) == second
    with pytest.raises(Exception, match="header block"):  # out of step with the sender
        HeaderCodec().decode(block)


def test_port_forward_to_a_pod(cluster: ClusterRef, plain: Kubectl) -> None:
    pod = running_pod(plain, "details")
    with port_forward(cluster, plain.namespace, f"pod/{pod}", ":9080") as forward:
        status, body = get(forward.url(9080, "/details/0"))
        assert status == 200, body
        assert json.loads(body)["id"] == 0
        assert any("Handling connection for" in line for line in forward.stdout)


def test_port_forward_to_a_deployment_over_plain_spdy(cluster: ClusterRef, plain: Kubectl
                                                      ) -> None:
    with port_forward(cluster, plain.namespace, "deploy/details", ":9080",
                      websockets=False) as forward:
        status, body = get(forward.url(9080, "/details/1"))
    assert status == 200, body
    assert json.loads(body)["id"] == 1


def test_port_forward_to_a_service_maps_its_port_to_the_target_port(
        cluster: ClusterRef, mesh: MeshNamespace) -> None:
    """Service port 8000 → targetPort 8080 (kubectl resolves it); in a meshed pod the forward
    reaches the app itself, not the sidecar's inbound listener (no Envoy request headers)."""
    with port_forward(cluster, mesh.name, "svc/httpbin", ":8000") as forward:
        assert list(forward.local) == [8080]
        status, body = get(forward.url(8080, "/headers"))
    assert status == 200, body
    headers = {name.lower() for name in json.loads(body)["headers"]}
    assert "user-agent" in headers
    assert not {h for h in headers if h.startswith("x-envoy") or h in (
        "x-request-id", "x-forwarded-client-cert")}, headers


def test_several_ports_and_concurrent_connections(cluster: ClusterRef,
                                                 mesh: MeshNamespace) -> None:
    """The app port and the sidecar's Envoy admin (15000) at once; two requests in flight on
    one forward at the same time."""
    pod = mesh.pod("httpbin")
    with port_forward(cluster, mesh.name, f"pod/{pod}", ":8080", ":15000") as forward:
        status, body = get(forward.url(15000, "/server_info"))
        assert status == 200, body
        assert json.loads(body)["state"] == "LIVE"
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(get, [forward.url(8080, "/delay/1"),
                                          forward.url(8080, "/get?second=1")]))
    assert [status for status, _ in results] == [200, 200], results
    assert json.loads(results[1][1])["args"] == {"second": ["1"]}


def test_a_port_nothing_listens_on_gives_the_kubelet_error(cluster: ClusterRef,
                                                           plain: Kubectl) -> None:
    pod = running_pod(plain, "details")
    with port_forward(cluster, plain.namespace, f"pod/{pod}", ":9999") as forward:
        with pytest.raises(OSError):
            get(forward.url(9999, "/"))
        forward.wait_exit()  # kubectl drops the connection after an error, and exits
    stderr = "\n".join(forward.stderr)
    assert "error forwarding port 9999 to pod" in stderr, stderr
    assert "dial tcp4 127.0.0.1:9999: connect: connection refused" in stderr, stderr
    assert "lost connection to pod" in stderr, stderr
    assert forward.proc.returncode != 0


def test_port_forward_to_the_ingress_gateway_in_istio_system(cluster: ClusterRef) -> None:
    """The gateway's status port, as the kubelet's readiness probe reaches it (its port 80 has a
    listener only once a Gateway asks for one, as on a real cluster)."""
    wait_available(cluster, "istio-system")
    with port_forward(cluster, "istio-system", "svc/istio-ingressgateway", ":15021") as forward:
        status, _ = get(forward.url(15021, "/healthz/ready"))
    assert status == 200


def test_port_forward_refuses_a_missing_pod(cluster: ClusterRef, plain: Kubectl) -> None:
    stderr = plain.fails("port-forward", "pod/no-such-pod", ":9080")
    assert 'pods "no-such-pod" not found' in stderr
