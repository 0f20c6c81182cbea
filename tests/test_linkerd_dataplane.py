"""Linkerd's data plane on the embedded cluster: pods in the exact shape `linkerd inject` writes
(upstream golden tests/golden/linkerd/injected_emojivoto_web.yaml) run a real Envoy as their
`linkerd-proxy`, configured by the embedded Linkerd control plane: mTLS between meshed pods
with identities from linkerd-identity's issuer, plaintext to and from unmeshed pods, the
proxy's admin `/ready` and `/live` on 4191, and the default inbound policy.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import poll
from cryptography import x509
from cryptography.x509.oid import NameOID
from mesh_support import MeshNamespace, wait_available

from labs.cluster import ClusterRef
from labs.embedded.apiserver.api import ObjectApi
from labs.embedded.apiserver.resources import ResourceRegistry
from labs.embedded.apiserver.store import Store
from labs.embedded.mesh.linkerd import proxy
from labs.embedded.mesh.linkerd.controlplane import LinkerdControlPlane, proxy_xds_dir
from labs.embedded.mesh.linkerd.identity import (
    ISSUER_SECRET,
    NAMESPACE,
    TRUST_ROOTS_CONFIGMAP,
    IdentityError,
    LinkerdIssuer,
    generate_credentials,
    identity_name,
)
from labs.embedded.mesh.linkerd.install import install_linkerd
from labs.embedded.mesh.linkerd.metrics import LinkerdMetrics
from labs.embedded.mesh.linkerd.state import LinkerdState
from labs.embedded.mesh.proxy_env import ProxyConfigError, xds_files
from labs.embedded.mesh.proxyfiles import ProxyFiles
from labs.embedded.paths import pods_dir
from labs.embedded.workload import (
    ADMIN_PORT_ENV,
    APP_PORTS,
    HOST_PORTS,
    OUTBOUND_PORT_ENV,
    POD_NAME_ENV,
    POD_NAMESPACE_ENV,
    PROXY_PORTS,
    pod_dir_name,
)
from labs.versions import version

pytestmark = pytest.mark.usefixtures("linkerd_installed")  # the cluster starts without it

Obj = dict[str, Any]
GOLDEN = Path(__file__).parent / "golden" / "linkerd" / "injected_emojivoto_web.yaml"
ECHO_IMAGE = "meshlab.test/echo:1"  # unknown to the catalog: the generic echo server
CURL_IMAGE = "curlimages/curl:8.11.0"
POLICY_ENV = "LINKERD2_PROXY_INBOUND_DEFAULT_POLICY"
ANCHORS_ENV = "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS"


# -- workloads made from the golden --------------------------------------------------------------
def golden() -> Obj:
    return yaml.safe_load(GOLDEN.read_text())


def meshed(name: str, namespace: str, container: Obj, anchors: str, *, replicas: int = 1,
           policy: str | None = None) -> Obj:
    """The golden Deployment renamed, in `namespace`, running `container` as its app, with
    ServiceAccount `name`, the pinned proxy version, the cluster's trust `anchors` and
    (optionally) another default inbound policy in the proxy's environment, as injection
    would write them."""
    deployment = golden()
    tag = version("LINKERD_VERSION")
    deployment["metadata"] = {"name": name, "namespace": namespace}
    spec = deployment["spec"]
    spec["replicas"] = replicas
    spec["selector"]["matchLabels"] = {"app": name}
    template = spec["template"]
    template["metadata"]["labels"].update({"app": name, "linkerd.io/proxy-deployment": name,
                                           "linkerd.io/workload-ns": namespace})
    template["metadata"]["annotations"]["linkerd.io/proxy-version"] = tag
    pod = template["spec"]
    pod["serviceAccountName"] = name
    pod["containers"] = [container]
    for init in pod["initContainers"]:
        init["image"] = f"cr.l5d.io/linkerd/proxy:{tag}"
        if init["name"] == "linkerd-proxy":
            values = {ANCHORS_ENV: anchors, POLICY_ENV: policy}
            for env in init["env"]:
                if values.get(env["name"]):
                    env["value"] = values[env["name"]]
    return deployment


def plain(name: str, namespace: str, container: Obj) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [container]}}}}


def echo() -> Obj:
    return {"name": "app", "image": ECHO_IMAGE, "ports": [{"containerPort": 80, "name": "http"}]}


def curl() -> Obj:
    return {"name": "curl", "image": CURL_IMAGE, "command": ["sleep", "infinity"]}


def service(name: str, namespace: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name,
                                                                "namespace": namespace},
            "spec": {"selector": {"app": name},
                     "ports": [{"name": "http", "port": 80, "targetPort": 80}]}}


def account(name: str, namespace: str) -> Obj:
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace}}


def trust_anchors(cluster: ClusterRef) -> str:
    """The cluster's trust anchors, as injection copies them into each proxy's environment."""
    out = cluster.kubectl(f"--namespace={NAMESPACE}", "get", "configmap", TRUST_ROOTS_CONFIGMAP,
                          "-o", "json")
    assert out.returncode == 0, out.stderr
    return str(json.loads(out.stdout)["data"]["ca-bundle.crt"])


@pytest.fixture(scope="module")
def l5d(cluster: ClusterRef) -> Iterator[MeshNamespace]:
    """A namespace with meshed `web` (2 replicas), `strict-web` (all-authenticated) and `curl`,
    unmeshed `plain-web` and `plain-curl`."""
    name = f"l5d-{uuid.uuid4().hex[:6]}"
    assert cluster.kubectl("create", "namespace", name).returncode == 0
    mesh = MeshNamespace(cluster, name)
    anchors = trust_anchors(cluster)
    objects = [
        account("web", name), account("strict-web", name), account("curl", name),
        meshed("web", name, echo(), anchors, replicas=2), service("web", name),
        meshed("strict-web", name, echo(), anchors, policy="all-authenticated"),
        service("strict-web", name),
        meshed("curl", name, curl(), anchors),
        plain("plain-web", name, echo()), service("plain-web", name),
        plain("plain-curl", name, curl()),
    ]
    try:
        mesh.apply(yaml.safe_dump_all(objects, sort_keys=False))
        wait_available(cluster, name, timeout=180)
        # Ready pods reach the proxies' and the node forwarder's configuration a pass later
        for client in ("curl", "plain-curl"):
            for server in ("web", "strict-web", "plain-web"):
                poll(lambda c=client, s=server: mesh.curl(f"http://{s}.{name}/", workload=c)[0],
                     f"{client} reaching {server}", timeout=30, interval=0.3)
        yield mesh
    finally:
        cluster.kubectl("delete", "namespace", name, "--timeout=90s", timeout=120)


def pod_of(mesh: MeshNamespace, app: str) -> Obj:
    def first() -> Obj | None:
        items = json.loads(mesh.kubectl("get", "pods", "-l", f"app={app}", "-o", "json"))["items"]
        return items[0] if items else None
    return poll(first, f"a pod of {app}", timeout=30)


def echoed(mesh: MeshNamespace, url: str, workload: str) -> Obj:
    code, body = mesh.curl(url, workload=workload)
    assert code == 200, f"{workload} -> {url}: {code} {body}"
    return dict(json.loads(body))


# -- traffic ------------------------------------------------------------------------------------
def test_meshed_to_meshed_is_mtls_with_the_clients_identity(l5d: MeshNamespace) -> None:
    """Does the server's proxy see a TLS client certificate naming the client's identity?"""
    headers = echoed(l5d, "http://web/", "curl")["headers"]
    client_id = identity_name(l5d.name, "curl")
    assert headers["l5d-client-id"] == client_id
    xfcc = headers["x-forwarded-client-cert"]
    assert f"DNS={client_id}" in xfcc and f'Subject="CN={client_id}"' in xfcc


def test_unmeshed_to_meshed_is_plaintext(l5d: MeshNamespace) -> None:
    """all-unauthenticated serves a client without a proxy, and no identity is claimed for it
    (a spoofed l5d-client-id is stripped)."""
    # by `web.<namespace>`: the node forwarder serves every namespace (linkerd-viz has a `web`)
    code, body = l5d.curl(f"http://web.{l5d.name}/", "-H", "l5d-client-id: spoofed",
                          workload="plain-curl")
    assert code == 200, body
    headers = json.loads(body)["headers"]
    assert "l5d-client-id" not in headers and "x-forwarded-client-cert" not in headers


def test_meshed_to_unmeshed_is_plaintext(l5d: MeshNamespace) -> None:
    body = echoed(l5d, "http://plain-web/", "curl")
    assert body["hostname"].startswith("plain-web-")
    assert "l5d-client-id" not in body["headers"]


def test_all_authenticated_refuses_plaintext(l5d: MeshNamespace) -> None:
    """A proxy injected with default policy all-authenticated answers 403 to an unmeshed
    client and serves a meshed one."""
    code, _ = l5d.curl(f"http://strict-web.{l5d.name}/", workload="plain-curl")
    assert code == 403
    assert echoed(l5d, "http://strict-web/", "curl")["headers"]["l5d-client-id"] == (
        identity_name(l5d.name, "curl"))


def test_requests_are_balanced_across_endpoints(l5d: MeshNamespace) -> None:
    seen = {echoed(l5d, f"http://web.{l5d.name}.svc.cluster.local/", "curl")["hostname"]
            for _ in range(12)}
    assert len(seen) == 2, seen


def test_unknown_host_is_a_502_that_says_why(l5d: MeshNamespace) -> None:
    code, body = l5d.curl("http://no-such-service/", workload="curl")
    assert code == 502 and "knows no Service" in body


# -- the proxy ----------------------------------------------------------------------------------
def test_proxy_admin_answers_ready_and_live(l5d: MeshNamespace) -> None:
    """linkerd2-proxy's admin texts on the pod's 4191, and the native sidecar is Ready."""
    for path, text in (("/ready", "ready\n"), ("/live", "live\n")):
        code, body = l5d.curl(f"http://localhost:4191{path}", workload="curl")
        assert (code, body) == (200, text)
    code, _ = l5d.curl("http://localhost:4191/no-such-path", workload="curl")
    assert code == 404
    statuses = pod_of(l5d, "curl")["status"]["initContainerStatuses"]
    by_name = {s["name"]: s for s in statuses}
    assert by_name["linkerd-init"]["state"]["terminated"]["reason"] == "Completed"
    assert by_name["linkerd-proxy"]["ready"] is True
    # kubectl counts the native sidecar with the app container, as on Kubernetes
    name = pod_of(l5d, "curl")["metadata"]["name"]
    row = l5d.kubectl("get", "pod", name, "--no-headers").split()
    assert row[1] == "2/2", row
    # the pod says what runs in linkerd2-proxy's place, as a Warning (a stand-in)
    events = json.loads(l5d.kubectl("get", "events", "-o", "json", "--field-selector",
                                    f"involvedObject.name={name}"))["items"]
    said = [(e["type"], e["message"]) for e in events if e["reason"] == "Simulated"
            and "container linkerd-proxy runs" in e["message"]]
    assert said and said[0][0] == "Warning" and "Envoy playing linkerd2-proxy's part" in (
        said[0][1]), said


def _metrics(mesh: MeshNamespace, workload: str) -> str:
    code, body = mesh.curl("http://localhost:4191/metrics", workload=workload)
    assert code == 200, body
    return body


def test_proxy_metrics_are_linkerds(l5d: MeshNamespace) -> None:
    """The client proxy's /metrics counts its outbound requests with the server's identity and
    the destination's labels; the server proxy's counts them inbound with the client's."""
    for _ in range(3):
        echoed(l5d, "http://strict-web/", "curl")
    server_id = identity_name(l5d.name, "strict-web")
    authority = f"strict-web.{l5d.name}.svc.cluster.local:80"

    def counted() -> str:  # all three: the telemetry server reads the lines in batches
        text = _metrics(l5d, "curl")
        ok = [ln for ln in text.splitlines() if ln.startswith("response_total{")
              and authority in ln and f'server_id="{server_id}"' in ln
              and 'status_code="200"' in ln]
        return text if ok and int(ok[0].rsplit(" ", 1)[1]) >= 3 else ""
    text = poll(counted, "the client proxy's metrics", timeout=20, interval=0.3)
    lines = text.splitlines()
    assert lines[:2] == ["# HELP request_total Total count of HTTP requests.",
                         "# TYPE request_total counter"]
    outbound = [ln for ln in lines if ln.startswith("response_total{") and authority in ln]
    assert outbound, text
    assert outbound[0].startswith(
        f'response_total{{direction="outbound",authority="{authority}",target_addr="127.0.0.1:')
    for label in ('tls="true"', f'server_id="{server_id}"', 'dst_control_plane_ns="linkerd"',
                  'dst_deployment="strict-web"', f'dst_namespace="{l5d.name}"',
                  'dst_service="strict-web"', 'dst_serviceaccount="strict-web"',
                  'status_code="200",classification="success",grpc_status="",error=""'):
        assert label in outbound[0], (label, outbound[0])
    assert int(outbound[0].rsplit(" ", 1)[1]) >= 3
    assert 'response_latency_ms_bucket{direction="outbound"' in text and 'le="+Inf"' in text
    # the Envoy's pooled connection to the endpoint, as linkerd's transport metrics give it
    tcp = [ln for ln in lines if ln.startswith(
        'tcp_open_connections{direction="outbound",peer="dst",'
        f'authority="{authority}",target_addr="127.0.0.1:') and f'server_id="{server_id}"' in ln]
    assert tcp and int(tcp[0].rsplit(" ", 1)[1]) in (0, 1), text
    inbound = poll(lambda: [ln for ln in _metrics(l5d, "strict-web").splitlines()
                            if ln.startswith('request_total{direction="inbound"')
                            and 'tls="true"' in ln], "the server proxy's metrics", timeout=20)
    assert f'client_id="{identity_name(l5d.name, "curl")}"' in inbound[0]
    assert 'srv_kind="default",srv_name="all-authenticated",srv_port="80"' in inbound[0]


def test_leaf_certificate_is_linkerds(cluster: ClusterRef, l5d: MeshNamespace) -> None:
    """The proxy's SDS certificate: 24 h, the identity as its only DNS SAN and CN, issued by
    the issuer in linkerd-identity-issuer, chained to the trust-roots ConfigMap's anchor."""
    assert cluster.embedded is not None
    pod = pod_of(l5d, "web")
    sds = cluster.embedded.paths.pod_dir(pod) / "linkerd-proxy" / "xds" / "sds"
    secret = json.loads((sds / "default.yaml").read_text())["resources"][0]
    chain_pem = base64.b64decode(secret["tls_certificate"]["certificate_chain"]["inline_bytes"])
    leaf, issuer = x509.load_pem_x509_certificates(chain_pem)
    name = identity_name(l5d.name, "web")
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [name]
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == dt.timedelta(hours=24)
    assert issuer.subject.rfc4514_string() == "CN=identity.linkerd.cluster.local"
    leaf.verify_directly_issued_by(issuer)
    bundle = trust_anchors(cluster)
    anchor = x509.load_pem_x509_certificate(bundle.encode())
    issuer.verify_directly_issued_by(anchor)
    root = json.loads((sds / "rootca.yaml").read_text())["resources"][0]
    assert base64.b64decode(root["validation_context"]["trusted_ca"]["inline_bytes"]).decode(
    ) == bundle


# -- identity objects, without a cluster --------------------------------------------------------
@pytest.fixture
def api(tmp_path: Path) -> Iterator[ObjectApi]:
    store = Store(tmp_path / "db.sqlite")
    try:
        yield ObjectApi(store, ResourceRegistry())
    finally:
        store.close()


def _get(api: ObjectApi, plural: str, name: str) -> Obj | None:
    rt = api.registry.lookup("", "v1", plural)
    assert rt is not None
    return api.find(rt, NAMESPACE if plural != "namespaces" else "", name)


def test_identity_objects_are_linkerd_installs(api: ObjectApi) -> None:
    """Created by the install, as the chart writes them: an ECDSA P-256 anchor and an issuer it
    signed, 365 days each; installing again keeps them."""
    assert install_linkerd(api) > 25
    namespace = _get(api, "namespaces", NAMESPACE)
    assert namespace is not None
    assert namespace["metadata"]["labels"]["linkerd.io/is-control-plane"] == "true"
    roots, issuer = _get(api, "configmaps", TRUST_ROOTS_CONFIGMAP), _get(api, "secrets",
                                                                         ISSUER_SECRET)
    assert roots is not None and issuer is not None
    assert sorted(issuer["data"]) == ["crt.pem", "key.pem"]
    anchor = x509.load_pem_x509_certificate(roots["data"]["ca-bundle.crt"].encode())
    crt = x509.load_pem_x509_certificate(base64.b64decode(issuer["data"]["crt.pem"]))
    assert anchor.subject.rfc4514_string() == "CN=root.linkerd.cluster.local"
    assert crt.subject.rfc4514_string() == "CN=identity.linkerd.cluster.local"
    assert anchor.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert crt.not_valid_after_utc - crt.not_valid_before_utc == dt.timedelta(days=365)
    crt.verify_directly_issued_by(anchor)
    assert install_linkerd(api) == 0
    assert _get(api, "configmaps", TRUST_ROOTS_CONFIGMAP) == roots


def _objects() -> tuple[Obj, Obj]:
    anchor, crt, key = generate_credentials()
    return ({"data": {"ca-bundle.crt": anchor}},
            {"data": {"crt.pem": base64.b64encode(crt.encode()).decode(),
                      "key.pem": base64.b64encode(key.encode()).decode()}})


def test_issuer_rejects_broken_objects_with_a_fix() -> None:
    roots, issuer = _objects()
    with pytest.raises(IdentityError, match="is missing: Linkerd's control plane is not installed"):
        LinkerdIssuer.from_objects(roots, None)
    broken = copy.deepcopy(issuer)
    broken["data"]["key.pem"] = base64.b64encode(b"not a key").decode()
    with pytest.raises(IdentityError, match="cannot be read"):
        LinkerdIssuer.from_objects(roots, broken)
    other_roots, _ = _objects()
    with pytest.raises(IdentityError, match="not signed by a trust anchor"):
        LinkerdIssuer.from_objects(other_roots, issuer)


@pytest.mark.filterwarnings("ignore:Attribute's length:UserWarning")  # the long CN, parsed
def test_leaf_is_24h_dns_san_with_the_issuer_in_its_chain() -> None:
    roots, issuer = _objects()
    cert = LinkerdIssuer.from_objects(roots, issuer).issue("emojivoto", "web")
    leaf, chained = x509.load_pem_x509_certificates(cert.cert_pem.encode())
    assert cert.identity == "web.emojivoto.serviceaccount.identity.linkerd.cluster.local"
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == [cert.identity]
    assert cert.not_after - cert.not_before == dt.timedelta(hours=24)
    leaf.verify_directly_issued_by(chained)
    # CN is the identity even past X.509's 64 characters, as Go writes the proxy's CSR
    long = LinkerdIssuer.from_objects(roots, issuer).issue("linkerd", "linkerd-destination")
    assert x509.load_pem_x509_certificate(long.cert_pem.encode()).subject.rfc4514_string() == (
        "CN=linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local")


# -- the proxies' metrics, from log lines ---------------------------------------------------------
def test_metrics_render_linkerds_format_from_log_lines() -> None:
    """Lines as the proxy's listeners write them become linkerd2-proxy's families: inbound
    without authority, no_tls_reason for plaintext, 5xx classified as failures, latency in
    linkerd's buckets; an unknown pod folder has no metrics."""
    pod = {"metadata": {"name": "web-1", "namespace": "shop", "uid": "u1"},
           "spec": {"initContainers": [{"name": "linkerd-proxy", "restartPolicy": "Always"}]}}
    metrics = LinkerdMetrics()
    metrics.update_state(LinkerdState(pods=[pod]))
    folder = pod_dir_name(pod)
    assert asyncio.run(metrics.render(folder)) == (
        "# HELP request_total Total count of HTTP requests.\n# TYPE request_total counter\n"
        "# HELP response_latency_ms Elapsed times between a request's headers being received "
        "and its response stream completing\n# TYPE response_latency_ms histogram\n"
        "# HELP response_total Total count of HTTP responses.\n# TYPE response_total counter\n"
        "# HELP inbound_http_authz_allow_total The total number of inbound HTTP requests that "
        "were authorized\n# TYPE inbound_http_authz_allow_total counter\n"
        "# HELP inbound_http_authz_deny_total The total number of inbound HTTP requests that "
        "could not be authorized\n# TYPE inbound_http_authz_deny_total counter\n"
        "# HELP tcp_open_connections Number of currently-open connections\n"
        "# TYPE tcp_open_connections gauge\n")
    assert asyncio.run(metrics.render("shop_other_u2")) is None
    metrics.ingest(folder, [
        {"direction": "inbound", "port": "80",
         "route": "|default|all-unauthenticated||default|default",
         "authz": "000||default|all-unauthenticated", "tls": None, "client_id": None,
         "response_code": "503", "duration": "7"},
        {"direction": "outbound", "authority": None, "upstream_host": None, "tls": None,
         "response_code": "502", "duration": "0"},  # no Service by that name: not counted
    ])
    text = asyncio.run(metrics.render(folder))
    assert text is not None
    prefix = ('direction="inbound",target_addr="127.0.0.1:80",target_ip="127.0.0.1",'
              'target_port="80",tls="no_identity",no_tls_reason="no_tls_from_remote",'
              'srv_group="",srv_kind="default",srv_name="all-unauthenticated",srv_port="80",'
              'route_group="",route_kind="default",route_name="default",authz_group="",'
              'authz_kind="default",authz_name="all-unauthenticated"')
    assert f"request_total{{{prefix}}} 1" in text.splitlines()
    assert (f'response_total{{{prefix},status_code="503",classification="failure",'
            'grpc_status="",error=""} 1') in text.splitlines()
    assert f'response_latency_ms_bucket{{{prefix},status_code="503",le="5"}} 0' in text
    assert f'response_latency_ms_bucket{{{prefix},status_code="503",le="10"}} 1' in text
    assert text.count("request_total{") == 1
    # gRPC: classified by grpc-status (2 = Unknown: the doughnut vote), not by HTTP 200
    metrics.ingest(folder, [{**line, "grpc_status": code} for code in ("2", "0") for line in [
        {"direction": "inbound", "port": "80", "route": "|default|all-unauthenticated||"
         "default|default", "authz": "000||default|all-unauthenticated", "tls": None,
         "client_id": None, "response_code": "200", "duration": "1"}]])
    lines = asyncio.run(metrics.render(folder)).splitlines()
    for code, verdict in (("2", "failure"), ("0", "success")):
        assert (f'response_total{{{prefix},status_code="200",classification="{verdict}",'
                f'grpc_status="{code}",error=""}} 1') in lines


# -- the control plane, on an in-process API ----------------------------------------------------
def _create(api: ObjectApi, plural: str, namespace: str, obj: Obj) -> Obj:
    rt = api.registry.lookup("", "v1", plural)
    assert rt is not None
    return api.create(rt, namespace, obj, validate=False).object


def _proxy_pod(api: ObjectApi, name: str, *, started: bool = True,
               anchors: str | None = None) -> Obj:
    annotations = {HOST_PORTS: json.dumps({"80": 31080, "4143": 31143, "4191": 31191}),
                   APP_PORTS: json.dumps({"80": 31081}),
                   PROXY_PORTS: json.dumps({"admin": 31200, "outbound": 31201})}
    return _create(api, "pods", "shop", {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": name, "labels": {"app": "web"}, "annotations": annotations if started else {}},
        "spec": {"serviceAccountName": "web",
                 "initContainers": [{"name": "linkerd-proxy", "restartPolicy": "Always",
                                     "image": "cr.l5d.io/linkerd/proxy:edge-26.7.2",
                                     "env": [{"name": ANCHORS_ENV, "value": anchors}]
                                     if anchors else []}],
                 "containers": [{"name": "app", "image": ECHO_IMAGE,
                                 "ports": [{"containerPort": 80}]}]}})


def _serial(files: ProxyFiles) -> int:
    secret = json.loads(files.cert_sds.read_text())["resources"][0]
    chain = base64.b64decode(secret["tls_certificate"]["certificate_chain"]["inline_bytes"])
    return x509.load_pem_x509_certificates(chain)[0].serial_number


def test_control_plane_configures_started_proxies(api: ObjectApi, tmp_path: Path) -> None:
    """A started proxy gets its certificate and listeners (admin on 4191's host port, inbound
    on the app port's, outbound); one the runtime has not started gets nothing, nor does one
    injected with other trust anchors (the golden's); renewal reissues at half life only; a
    new issuer reissues at once."""
    install_linkerd(api)
    _create(api, "namespaces", "", {"metadata": {"name": "shop"}})
    pod, waiting = _proxy_pod(api, "web-1"), _proxy_pod(api, "web-2", started=False)
    foreign_anchors = next(e["value"] for e in golden()["spec"]["template"]["spec"][
        "initContainers"][1]["env"] if e["name"] == ANCHORS_ENV)
    foreign = _proxy_pod(api, "web-3", anchors=foreign_anchors)
    plane = LinkerdControlPlane(api, tmp_path, 15999)
    plane.cert_ttl = dt.timedelta(seconds=2)
    plane.sync()
    files = ProxyFiles(proxy_xds_dir(pods_dir(tmp_path), pod))
    listeners = {item["name"]: item["address"]["socket_address"]["port_value"]
                 for item in json.loads(files.lds.read_text())["resources"]}
    assert listeners == {"inbound|80": 31080, "outbound": 31201, "admin": 31191}
    assert not proxy_xds_dir(pods_dir(tmp_path), waiting).exists()
    assert not proxy_xds_dir(pods_dir(tmp_path), foreign).exists()
    first = _serial(files)
    plane.sync(renew=True)
    assert _serial(files) == first  # not yet at half life
    time.sleep(1.1)
    plane.sync()
    assert _serial(files) == first  # a pass after a change issues only missing ones
    plane.sync(renew=True)
    renewed = _serial(files)
    assert renewed != first
    for plural, name in (("configmaps", TRUST_ROOTS_CONFIGMAP), ("secrets", ISSUER_SECRET)):
        rt = api.registry.lookup("", "v1", plural)
        assert rt is not None
        api.delete(rt, NAMESPACE, name)
    install_linkerd(api)
    plane.sync()
    assert _serial(files) not in (first, renewed)


# -- native sidecars start first ------------------------------------------------------------------
def test_app_starts_after_its_native_sidecar_started(cluster: ClusterRef, namespace: str,
                                                     tmp_path: Path) -> None:
    """As the kubelet orders them (what an injected linkerd-proxy relies on): the app waits
    until the restartable init container's startup probe passes, and the pod is not Ready
    while the sidecar is not."""
    marker = tmp_path / "sidecar-started"
    tmp_path.chmod(0o755)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ordered"}, "spec": {
        "initContainers": [{"name": "sidecar", "image": ECHO_IMAGE, "restartPolicy": "Always",
                            "startupProbe": {"exec": {"command": ["test", "-e", str(marker)]},
                                             "periodSeconds": 1, "failureThreshold": 600}}],
        "containers": [echo()]}}
    created = cluster.kubectl(f"--namespace={namespace}", "apply", "-f", "-",
                              input=json.dumps(pod))
    assert created.returncode == 0, created.stderr

    def status() -> Obj:
        out = cluster.kubectl(f"--namespace={namespace}", "get", "pod", "ordered", "-o", "json")
        return dict(json.loads(out.stdout).get("status") or {})
    poll(lambda: "running" in ((status().get("initContainerStatuses") or [{}])[0].get("state")
                               or {}), "the sidecar running", timeout=30)
    time.sleep(2)  # two startup probes fail meanwhile
    waiting = status()
    assert "running" not in waiting["containerStatuses"][0]["state"], waiting
    ready = {c["type"]: c["status"] for c in waiting["conditions"]}["Ready"]
    assert ready == "False"
    marker.touch()
    poll(lambda: {c["type"]: c["status"] for c in status().get("conditions") or []}.get(
        "Ready") == "True", "the pod Ready once its sidecar started", timeout=30)
    assert "running" in status()["containerStatuses"][0]["state"]


# -- the proxy's program --------------------------------------------------------------------------
def test_proxy_bootstrap_is_valid_for_envoy_and_bad_env_is_explained(tmp_path: Path) -> None:
    """`python -m labs.embedded.mesh.linkerd.proxy` writes a bootstrap the real Envoy accepts
    (admin on the internal port, every listener left to the control plane); without the
    runtime's environment it says what is missing instead of failing in Envoy."""
    home = tmp_path / "linkerd-proxy"
    argv = proxy.prepare({"HOME": str(home), POD_NAME_ENV: "web-1", POD_NAMESPACE_ENV: "shop",
                          ADMIN_PORT_ENV: "15000", OUTBOUND_PORT_ENV: "15001"})
    config = yaml.safe_load((home / "bootstrap.yaml").read_text())
    assert config["node"]["id"] == "linkerd-proxy~web-1.shop"
    assert "static_resources" not in config
    assert xds_files(home).lds.read_text() == "resources: []\n"
    done = subprocess.run([*argv, "--mode", "validate"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    with pytest.raises(ProxyConfigError, match=f"{ADMIN_PORT_ENV} is not set: the "
                                               "linkerd-proxy container is started by"):
        proxy.prepare({"HOME": str(home)})
    with pytest.raises(ProxyConfigError, match="is not a TCP port number"):
        proxy.prepare({"HOME": str(home), ADMIN_PORT_ENV: "4191x"})
