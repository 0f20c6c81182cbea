"""Shared helpers for the end-to-end mesh tests: a meshed namespace with the course's sample apps
deployed once per test module, applying Istio YAML into it, and resetting routing between tests.

Usage in a test module:

    from mesh_support import MeshNamespace, mesh_namespace_fixture, yaml_stream, virtual_service

    bookinfo = mesh_namespace_fixture("bookinfo", "curl")   # module-scoped fixture

    def test_something(bookinfo: MeshNamespace) -> None:
        bookinfo.apply(yaml_stream(virtual_service("reviews", route("reviews", "v2"))))
        code, body = bookinfo.curl("http://productpage:9080/productpage")

Every name here is imported by other test modules: keep the signatures stable.
"""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Kubectl, poll
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from labs.cluster import ClusterRef

MANIFESTS = Path(__file__).resolve().parent.parent / "labs" / "manifests"
ROUTING_KINDS = ("virtualservices.networking.istio.io", "destinationrules.networking.istio.io",
                 "peerauthentications.security.istio.io", "serviceentries.networking.istio.io")
CURL_STATUS_MARK = "__meshlab_status__="
Obj = dict[str, Any]
JASON_MATCH = [{"headers": {"end-user": {"exact": "jason"}}}]  # the tasks' `end-user: jason`


def manifest(name: str) -> str:
    """The text of a course manifest, e.g. `manifest("bookinfo")` → labs/manifests/bookinfo.yaml."""
    return (MANIFESTS / f"{name}.yaml").read_text()


@dataclass
class MeshNamespace:
    """A namespace labelled `istio-injection=enabled` with sample apps running in it."""

    cluster: ClusterRef
    name: str

    @property
    def kubectl(self) -> Kubectl:
        """kubectl bound to this namespace (fails the test on a non-zero exit)."""
        return Kubectl(self.cluster, self.name)

    def apply(self, yaml_text: str) -> str:
        """`kubectl apply -f -` into this namespace; returns kubectl's output."""
        return self.kubectl("apply", "-f", "-", input=yaml_text)

    def deploy(self, *manifests: str, timeout: float = 120) -> None:
        """Apply course manifests by name and wait until every Deployment is Available."""
        for name in manifests:
            self.apply(manifest(name))
        wait_available(self.cluster, self.name, timeout)

    def reset_routing(self) -> None:
        """Delete every VirtualService, DestinationRule, PeerAuthentication and ServiceEntry
        in the namespace, so each test starts from plain round-robin routing."""
        self.kubectl("delete", ",".join(ROUTING_KINDS), "--all", "--ignore-not-found",
                     "--wait=false")

    def pod(self, app: str, version: str | None = None) -> str:
        """Name of a running pod of app (and version) — e.g. for `kubectl logs`."""
        selector = f"app={app}" + (f",version={version}" if version else "")
        def first() -> str:
            out = self.kubectl("get", "pods", "-l", selector, "--field-selector",
                               "status.phase=Running", "-o",
                               "jsonpath={.items[*].metadata.name}")
            return out.split()[0] if out.split() else ""
        return poll(first, f"a running pod with {selector} in {self.name}", timeout=30)

    def exec(self, workload: str, *command: str, timeout: float = 60
             ) -> subprocess.CompletedProcess[str]:
        """`kubectl exec deploy/<workload> -- command...` (returns the completed process)."""
        return self.cluster.kubectl(f"--namespace={self.name}", "exec", f"deploy/{workload}",
                                    "--", *command, timeout=timeout)

    def curl(self, url: str, *args: str, workload: str = "curl", timeout: float = 60
             ) -> tuple[int, str]:
        """One curl from `workload` (through its sidecar): (HTTP status, body); status 0 when
        curl got no HTTP response (connection reset, TLS refused ...)."""
        result = self.exec(workload, "curl", "-s", "-w", f"\n{CURL_STATUS_MARK}%{{http_code}}",
                           *args, url, timeout=timeout)
        body, _, code = result.stdout.rpartition(CURL_STATUS_MARK)
        if not code.strip().isdigit():
            pytest.fail(f"curl {url} from {workload} printed no status (exit "
                        f"{result.returncode}): {result.stderr}{result.stdout}")
        return int(code.strip()), body.removesuffix("\n")


# --- Istio objects, field for field as the tasks' YAML (networking.istio.io/v1) -----------------

def yaml_stream(*objects: Obj) -> str:
    """The objects as one YAML stream, for `MeshNamespace.apply`."""
    return yaml.safe_dump_all(objects, sort_keys=False)


def destination_rule(host: str, *versions: str, **spec: Any) -> Obj:
    """DestinationRule named after `host` with one subset per `version` label (the shape of
    samples/bookinfo/networking/destination-rule-all.yaml); `spec` adds e.g. trafficPolicy."""
    body: Obj = {"host": host, **spec}
    if versions:
        body["subsets"] = [{"name": v, "labels": {"version": v}} for v in versions]
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": host}, "spec": body}


def virtual_service(host: str, *http: Obj, name: str | None = None, **spec: Any) -> Obj:
    """VirtualService `name` (default: the host) for `host` with these `http` rules; `spec`
    adds other fields (e.g. `tcp`)."""
    body: Obj = {"hosts": [host]}
    if http:
        body["http"] = list(http)
    body.update(spec)
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name or host}, "spec": body}


def destination(host: str, subset: str | None = None, weight: int | None = None) -> Obj:
    """One item of an http rule's `route` list."""
    target: Obj = {"host": host}
    if subset:
        target["subset"] = subset
    return {"destination": target} | ({} if weight is None else {"weight": weight})


def route(host: str, subset: str | None = None, **rule: Any) -> Obj:
    """An http rule sending everything it matches to `host` (`subset`); `rule` adds match,
    fault, timeout, retries ..."""
    return {**rule, "route": [destination(host, subset)]}


def ready_pod(cluster: ClusterRef, namespace: str, selector: str, what: str) -> Obj:
    """The first pod matching `selector` whose containers are all ready (an addon's, say)."""
    def ready() -> Obj | None:
        got = cluster.kubectl("-n", namespace, "get", "pods", "-l", selector, "-o", "json")
        for pod in json.loads(got.stdout or "{}").get("items", []):
            statuses = pod.get("status", {}).get("containerStatuses") or []
            if statuses and all(s["ready"] for s in statuses):
                return dict(pod)
        return None
    return poll(ready, f"{what} to be Ready", timeout=60, interval=0.5)


def wait_available(cluster: ClusterRef, namespace: str, timeout: float = 120) -> None:
    """Wait until every Deployment in the namespace reports condition Available."""
    result = cluster.kubectl(f"--namespace={namespace}", "wait", "--for=condition=Available",
                             "deployment", "--all", f"--timeout={int(timeout)}s",
                             timeout=timeout + 15)
    if result.returncode != 0:
        pods = cluster.kubectl(f"--namespace={namespace}", "get", "pods", "-o", "wide").stdout
        pytest.fail(f"deployments in {namespace} not Available within {timeout:.0f}s:\n"
                    f"{result.stderr}\n{pods}{_sidecar_hint(cluster, namespace)}")


def _sidecar_hint(cluster: ClusterRef, namespace: str) -> str:
    """Why sidecars crash-loop, when it is the machine: Envoy's file-based xDS takes inotify
    instances, and the per-user limit is shared by every meshed cluster on the host."""
    names = cluster.kubectl(f"--namespace={namespace}", "get", "pods", "-o",
                            "jsonpath={.items[*].metadata.name}").stdout.split()
    for name in names:
        log = cluster.kubectl(f"--namespace={namespace}", "logs", name, "-c", "istio-proxy")
        if "inotify" in log.stdout:
            return ("\nsidecar Envoys fail for lack of inotify instances "
                    "(fs.inotify.max_user_instances, shared by every meshed cluster of this "
                    "user); stop other clusters or raise the limit")
    return ""


def create_meshed_namespace(cluster: ClusterRef, prefix: str = "mesh") -> str:
    """A new namespace labelled istio-injection=enabled; returns its name."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    for args in (("create", "namespace", name),
                 ("label", "namespace", name, "istio-injection=enabled")):
        result = cluster.kubectl(*args)
        assert result.returncode == 0, result.stderr
    return name


def mesh_namespace_fixture(*manifests: str, prefix: str = "mesh", extra_yaml: str = ""
                           ) -> Callable[..., Iterator[MeshNamespace]]:
    """A module-scoped fixture: a fresh meshed namespace with `manifests` deployed (names in
    labs/manifests, e.g. "bookinfo", "curl", "httpbin") plus `extra_yaml` (more workloads a
    module needs), deleted at the end of the module. Tests sharing it call `reset_routing()`
    (e.g. from an autouse fixture) so routing objects of one test never leak into the next.

    Teardown waits until the namespace is gone: every sidecar is a real Envoy holding inotify
    instances (a per-user kernel limit, 128 by default), so the next module must not start
    while this one's proxies still run."""

    @pytest.fixture(scope="module")
    def fixture(cluster: ClusterRef) -> Iterator[MeshNamespace]:
        mesh = MeshNamespace(cluster, create_meshed_namespace(cluster, prefix))
        try:
            if extra_yaml:
                mesh.apply(extra_yaml)
            mesh.deploy(*manifests)
            yield mesh
        finally:
            cluster.kubectl("delete", "namespace", mesh.name, "--timeout=60s", timeout=90)

    return fixture


# --- requests from the test process to a gateway's host port (the learner's browser) -----------

def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """GET without any proxy: (status, body); status 0 when no HTTP answer came back."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
    except OSError as err:
        return 0, str(err)


def self_signed_cert(directory: Path, host: str) -> tuple[Path, Path]:
    """A self-signed certificate and key for `host` (tls.crt, tls.key in `directory`)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    moment = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(moment - datetime.timedelta(minutes=5))
            .not_valid_after(moment + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def https_get(port: int, ca: Path, host: str, path: str) -> int:
    """GET over TLS with SNI and Host `host` (curl --resolve in Istio's tasks): the status
    code, 0 on failure."""
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                        .encode())
            head = tls.recv(64).decode(errors="replace")
    except OSError:
        return 0
    parts = head.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def node_port(cluster: ClusterRef, namespace: str, service: str, port_name: str) -> int:
    """The nodePort of a Service port (the docs' INGRESS_PORT)."""
    return int(Kubectl(cluster, namespace)(
        "get", "service", service, "-o",
        f'jsonpath={{.spec.ports[?(@.name=="{port_name}")].nodePort}}'))
