"""Linkerd's authorization policy on the embedded cluster: every default inbound policy, Servers
with their accessPolicy, AuthorizationPolicy with MeshTLSAuthentication (identities and
ServiceAccount refs) and NetworkAuthentication, route-level policy with an HTTPRoute, audit
mode, the probe authorization, the policy admission webhook, and the proxies' authz metrics —
with real traffic through the meshed pods' Envoys (linkerd/website `2-edge/features/
server-policy.md`, `2-edge/reference/authorization-policy.md`).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from conftest import poll
from mesh_support import MANIFESTS, MeshNamespace, wait_available
from test_linkerd_dataplane import (
    account,
    curl,
    echo,
    meshed,
    plain,
    service,
    trust_anchors,
)

from labs.cluster import ClusterRef
from labs.embedded.mesh.linkerd.identity import identity_name
from labs.embedded.mesh.linkerd.metrics import LinkerdMetrics
from labs.embedded.mesh.linkerd.policy import port_policy
from labs.embedded.mesh.linkerd.state import LinkerdState
from labs.embedded.workload import pod_dir_name

pytestmark = pytest.mark.usefixtures("linkerd_installed")  # the cluster starts without it

Obj = dict[str, Any]
DEFAULTS = ("all-unauthenticated", "all-authenticated", "cluster-unauthenticated",
            "cluster-authenticated", "deny", "audit")
# (meshed client, unmeshed client) -> expected status, per default policy (every pod is on
# 127.0.0.1, which the emulation treats as the cluster network)
EXPECTED = {"all-unauthenticated": (200, 200), "all-authenticated": (200, 403),
            "cluster-unauthenticated": (200, 200), "cluster-authenticated": (200, 403),
            "deny": (403, 403), "audit": (200, 200)}
POLICY = "policy.linkerd.io"
PROBE_PATH = "/healthz"


def probed_echo() -> Obj:
    """The echo app with a readiness probe on its port, as the kubelet runs it."""
    return {**echo(), "readinessProbe": {"httpGet": {"path": PROBE_PATH, "port": "http"},
                                         "periodSeconds": 1}}


@pytest.fixture(scope="module")
def pol(cluster: ClusterRef) -> Iterator[MeshNamespace]:
    """Meshed `web` (echo with a probe), one meshed echo per default policy (`dp-<policy>`),
    meshed clients `curl` and `other`, unmeshed `plain-curl`."""
    name = f"l5dpol-{uuid.uuid4().hex[:6]}"
    assert cluster.kubectl("create", "namespace", name).returncode == 0
    mesh = MeshNamespace(cluster, name)
    anchors = trust_anchors(cluster)
    objects = [account("web", name), account("curl", name), account("other", name),
               meshed("web", name, probed_echo(), anchors), service("web", name),
               meshed("curl", name, curl(), anchors), meshed("other", name, curl(), anchors),
               plain("plain-curl", name, curl())]
    for policy in DEFAULTS:
        objects += [account(f"dp-{policy}", name),
                    meshed(f"dp-{policy}", name, echo(), anchors, policy=policy),
                    service(f"dp-{policy}", name)]
    try:
        mesh.apply(yaml.safe_dump_all(objects, sort_keys=False))
        wait_available(cluster, name, timeout=240)
        poll(lambda: status(mesh, "web", "curl") == 200, "curl reaching web", timeout=30,
             interval=0.3)
        yield mesh
    finally:
        cluster.kubectl("delete", "namespace", name, "--timeout=90s", timeout=120)


def url(mesh: MeshNamespace, app: str, path: str = "/") -> str:
    # by `<app>.<namespace>`: the unmeshed client goes through the node forwarder
    return f"http://{app}.{mesh.name}{path}"


def status(mesh: MeshNamespace, app: str, client: str, path: str = "/") -> int:
    return mesh.curl(url(mesh, app, path), workload=client)[0]


def response(mesh: MeshNamespace, app: str, client: str, path: str = "/"
             ) -> tuple[int, dict[str, str], str]:
    """(status, headers lower-cased, body) of one request."""
    code, text = mesh.curl(url(mesh, app, path), "-i", workload=client)
    # the last response head (the node forwarder's interim one may come first)
    blocks = text.replace("\r\n", "\n").split("\n\n")
    last = max(i for i, block in enumerate(blocks) if block.startswith("HTTP/"))
    head, body = blocks[last], "\n\n".join(blocks[last + 1:])
    headers = {}
    for line in head.splitlines()[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return code, headers, body


def until(mesh: MeshNamespace, expected: dict[str, int], app: str = "web",
          path: str = "/") -> None:
    """Poll until each client gets its expected status twice in a row: a policy change
    reaches the proxy as a new listener, and a meshed client's pooled connection to the old
    one answers once more with the old policy before it is closed (envoy.py, Drain)."""
    def round_() -> bool:
        return all(status(mesh, app, client, path) == code
                   for client, code in expected.items())
    poll(lambda: round_() and round_(), f"{app}{path}: {expected}", timeout=30, interval=0.3)


def apply(mesh: MeshNamespace, *objects: Obj) -> None:
    mesh.apply(yaml.safe_dump_all(objects, sort_keys=False))


def delete_policies(mesh: MeshNamespace) -> None:
    mesh.kubectl("delete", "servers.policy.linkerd.io,authorizationpolicies,"
                 "meshtlsauthentications,networkauthentications,serverauthorizations,"
                 "httproutes.policy.linkerd.io", "--all", "--ignore-not-found")


@pytest.fixture
def clean(pol: MeshNamespace) -> Iterator[MeshNamespace]:
    """The namespace; its policy objects are deleted after the test, and `web` serves every
    client again before the next one."""
    try:
        yield pol
    finally:
        delete_policies(pol)
        until(pol, {"curl": 200, "plain-curl": 200})


def server(name: str = "web-http", access: str = "deny", **spec: Any) -> Obj:
    return {"apiVersion": f"{POLICY}/v1beta3", "kind": "Server", "metadata": {"name": name},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "port": "http",
                     "accessPolicy": access, **spec}}


def authorization_policy(name: str, target: Obj, *refs: Obj) -> Obj:
    return {"apiVersion": f"{POLICY}/v1alpha1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name},
            "spec": {"targetRef": target, "requiredAuthenticationRefs": list(refs)}}


def ref(kind: str, name: str, group: str = POLICY) -> Obj:
    return {"group": group, "kind": kind, "name": name} if group else {"kind": kind,
                                                                       "name": name}


def mtls(name: str, **spec: Any) -> Obj:
    return {"apiVersion": f"{POLICY}/v1alpha1", "kind": "MeshTLSAuthentication",
            "metadata": {"name": name}, "spec": spec}


def network(name: str, *networks: Obj) -> Obj:
    return {"apiVersion": f"{POLICY}/v1alpha1", "kind": "NetworkAuthentication",
            "metadata": {"name": name}, "spec": {"networks": list(networks)}}


def proxy_metrics(mesh: MeshNamespace, workload: str) -> list[str]:
    code, body = mesh.curl("http://localhost:4191/metrics", workload=workload)
    assert code == 200, body
    return body.splitlines()


def counted(mesh: MeshNamespace, family: str, *fragments: str) -> str:
    """Poll `web`'s proxy metrics (its telemetry arrives a moment after the response) until
    a sample of `family` with every label fragment counts at least 1."""
    def sample() -> str | None:
        return next((line for line in proxy_metrics(mesh, "web")
                     if line.startswith(family + "{") and all(f in line for f in fragments)
                     and int(line.rsplit(" ", 1)[1]) >= 1), None)
    return poll(sample, f"{family} with {fragments}", timeout=30, interval=0.5)


# -- default inbound policies ------------------------------------------------------------------
@pytest.mark.parametrize("policy", DEFAULTS)
def test_default_inbound_policy(pol: MeshNamespace, policy: str) -> None:
    """Each default policy (fixed in the proxy's environment) serves a meshed and an unmeshed
    client as upstream's reference says; a refusal is linkerd2-proxy's 403."""
    for client, expected in zip(("curl", "plain-curl"), EXPECTED[policy], strict=True):
        code, headers, body = response(pol, f"dp-{policy}", client)
        assert code == expected, f"{policy} from {client}: {code} {body}"
        if expected == 403:
            assert headers.get("l5d-proxy-error") == "unauthorized request on route", headers
            assert headers.get("content-length") == "0" and body == ""


def test_default_policy_is_fixed_at_proxy_start(clean: MeshNamespace) -> None:
    """Annotating a running pod with another default policy changes nothing (upstream: "after
    a pod is created, changing the annotation will not change the default policy"): after a
    later policy change has reached the proxies, the `deny` pod still refuses."""
    pod = clean.pod("dp-deny")
    clean.kubectl("annotate", "pod", pod,
                  "config.linkerd.io/default-inbound-policy=all-unauthenticated")
    apply(clean, server())
    until(clean, {"curl": 403, "plain-curl": 403})
    assert status(clean, "dp-deny", "curl") == 403
    assert status(clean, "dp-deny", "plain-curl") == 403


# -- Servers and authorizations ----------------------------------------------------------------
def test_server_deny_refuses_with_l5d_proxy_error(clean: MeshNamespace) -> None:
    """A Server (accessPolicy deny) without authorizations refuses every client with 403 and
    `l5d-proxy-error`; the port's probe path stays authorized (upstream's `probe`
    authorization) and the pod stays Ready; the proxy counts the refusals."""
    apply(clean, server())
    until(clean, {"curl": 403, "plain-curl": 403})
    code, headers, body = response(clean, "web", "curl")
    assert (code, headers["l5d-proxy-error"], body) == (403, "unauthorized request on route",
                                                       "")
    assert status(clean, "web", "plain-curl", PROBE_PATH) == 200
    pod = json.loads(clean.kubectl("get", "pods", "-l", "app=web", "-o", "json"))["items"][0]
    ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert ready["Ready"] == "True"
    counted(clean, "inbound_http_authz_deny_total", 'srv_kind="server",srv_name="web-http"',
            'route_kind="default",route_name="default"', 'tls="no_identity"')


def test_authorization_policy_by_identity_and_service_account(clean: MeshNamespace) -> None:
    """MeshTLSAuthentication by identity admits `curl` only; a ServiceAccount ref instead
    admits `other` only; unmeshed clients are refused by both."""
    curl_id = identity_name(clean.name, "curl")
    target = ref("Server", "web-http")
    apply(clean, server(), mtls("curl-only", identities=[curl_id]),
          authorization_policy("web-curl", target, ref("MeshTLSAuthentication", "curl-only")))
    until(clean, {"curl": 200, "other": 403, "plain-curl": 403})
    code, body = clean.curl(url(clean, "web"), workload="curl")
    assert code == 200, body
    assert json.loads(body)["headers"]["l5d-client-id"] == curl_id
    apply(clean, authorization_policy("web-curl", target, ref("ServiceAccount", "other", "")))
    until(clean, {"curl": 403, "other": 200, "plain-curl": 403})


def test_meshtls_identity_refs_and_wildcard(clean: MeshNamespace) -> None:
    """identityRefs to a ServiceAccount, then `*` (any meshed client)."""
    target = ref("Server", "web-http")
    apply(clean, server(), mtls("by-ref", identityRefs=[{"kind": "ServiceAccount",
                                                         "name": "other"}]),
          authorization_policy("web-ref", target, ref("MeshTLSAuthentication", "by-ref")))
    until(clean, {"curl": 403, "other": 200, "plain-curl": 403})
    apply(clean, mtls("by-ref", identities=["*"]))
    until(clean, {"curl": 200, "other": 200, "plain-curl": 403})


def test_network_authentication(clean: MeshNamespace) -> None:
    """A NetworkAuthentication containing 127.0.0.1 (every pod's address here) admits every
    client, meshed or not; excepting 127.0.0.1 admits none."""
    apply(clean, server(), network("local", {"cidr": "127.0.0.0/8"}),
          authorization_policy("web-net", ref("Namespace", clean.name, ""),
                               ref("NetworkAuthentication", "local")))
    until(clean, {"curl": 200, "plain-curl": 200})
    apply(clean, network("local", {"cidr": "127.0.0.0/8", "except": ["127.0.0.1/32"]}))
    until(clean, {"curl": 403, "plain-curl": 403})


def test_http_route_policy(clean: MeshNamespace) -> None:
    """An HTTPRoute on the Server: its requests are authorized by a policy targeting the
    route; requests matching no route get 404 `no route found for request`."""
    route = {"apiVersion": f"{POLICY}/v1beta3", "kind": "HTTPRoute",
             "metadata": {"name": "web-api"},
             "spec": {"parentRefs": [ref("Server", "web-http")], "rules": [{"matches": [
                 {"path": {"type": "PathPrefix", "value": "/api"}, "method": "GET"}]}]}}
    apply(clean, server(), route, mtls("meshed", identities=["*"]),
          authorization_policy("web-api", ref("HTTPRoute", "web-api"),
                               ref("MeshTLSAuthentication", "meshed")))
    until(clean, {"curl": 200, "plain-curl": 403}, path="/api/items")
    code, headers, _ = response(clean, "web", "curl", "/other")
    assert (code, headers["l5d-proxy-error"]) == (404, "no route found for request")
    counted(clean, "inbound_http_authz_allow_total", 'srv_name="web-http"',
            'route_kind="httproute",route_name="web-api"',
            'authz_kind="authorizationpolicy",authz_name="web-api"', 'tls="true"')


def test_audit_access_policy_allows_and_labels(clean: MeshNamespace) -> None:
    """accessPolicy audit serves unauthorized clients, counted with `authz_name="audit"`."""
    apply(clean, server(access="audit"))

    poll(lambda: status(clean, "web", "plain-curl") == 200 and any(
        'srv_name="web-http"' in line for line in proxy_metrics(clean, "web")),
        "the audit Server reaching the proxy", timeout=30, interval=0.3)
    counted(clean, "inbound_http_authz_allow_total", 'srv_name="web-http"',
            'authz_group="",authz_kind="default",authz_name="audit"', 'tls="no_identity"')
    assert status(clean, "web", "plain-curl") == 200
    assert status(clean, "web", "curl") == 200


def test_opaque_port_is_authorized_per_connection(clean: MeshNamespace) -> None:
    """`proxyProtocol: opaque`: the port is proxied as bytes and authorized per connection; a
    denied connection is closed without an HTTP answer from the proxy (no 403 and no
    `l5d-proxy-error`); an authorized one carries the app's HTTP untouched."""
    apply(clean, server(access="deny", proxyProtocol="opaque"))

    def refused() -> bool:
        code, text = clean.curl(url(clean, "web"), "-i", workload="plain-curl")
        return code != 200 and code != 403 and "l5d-proxy-error" not in text
    poll(lambda: refused() and refused(), "the opaque port refusing", timeout=30,
         interval=0.3)
    apply(clean, server(access="all-unauthenticated", proxyProtocol="opaque"))
    until(clean, {"curl": 200, "plain-curl": 200})


def test_server_authorization_legacy(clean: MeshNamespace) -> None:
    """A v1beta1 ServerAuthorization admitting unauthenticated clients."""
    apply(clean, server(), {
        "apiVersion": f"{POLICY}/v1beta1", "kind": "ServerAuthorization",
        "metadata": {"name": "web-any"},
        "spec": {"server": {"name": "web-http"}, "client": {"unauthenticated": True}}})
    until(clean, {"curl": 200, "plain-curl": 200})
    apply(clean, {
        "apiVersion": f"{POLICY}/v1beta1", "kind": "ServerAuthorization",
        "metadata": {"name": "web-any"},
        "spec": {"server": {"name": "web-http"},
                 "client": {"meshTLS": {"serviceAccounts": [{"name": "other"}]}}}})
    until(clean, {"curl": 403, "other": 200, "plain-curl": 403})


# -- admission ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("obj", "message"), [
    (server("second", podSelector={}),
     "Server spec 'NS/web-http' already defines a policy for port http, and selects pods "
     "that would be selected by this Server"),
    (authorization_policy("two", ref("Server", "web-http"), ref("MeshTLSAuthentication", "a"),
                          ref("MeshTLSAuthentication", "b")),
     "only a single MeshTLSAuthentication may be set"),
    (authorization_policy("ns", ref("Namespace", "elsewhere", "")),
     "cannot target another namespace: elsewhere"),
    (network("bad", {"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16"]}),
     "cidr '10.0.0.0/8' does not include exception '192.168.0.0/16'"),
], ids=["server-overlap", "two-meshtls", "other-namespace", "except-outside"])
def test_policy_admission_refuses(clean: MeshNamespace, obj: Obj, message: str) -> None:
    """What upstream's policy admission webhook refuses (policy-controller/src/admission.rs)
    is refused, with its message; an overlapping Server is judged against the existing one."""
    apply(clean, server())
    out = clean.cluster.kubectl(f"--namespace={clean.name}", "apply", "-f", "-",
                                input=yaml.safe_dump(obj))
    assert out.returncode != 0
    assert 'admission webhook "linkerd-policy-validator.linkerd.io" denied the request' in (
        out.stderr), out.stderr
    assert message.replace("NS", clean.name) in out.stderr


def test_server_with_both_selectors_is_refused_by_the_schema(pol: MeshNamespace) -> None:
    out = pol.cluster.kubectl(f"--namespace={pol.name}", "apply", "-f", "-", input=yaml.safe_dump(
        server(externalWorkloadSelector={"matchLabels": {"app": "web"}})))
    assert out.returncode != 0
    assert "must validate one and only one schema (oneOf)" in out.stderr


# -- linkerd/website 2-edge/tasks/restricting-access.md, on emojivoto ---------------------------
EMOJIVOTO = "emojivoto"  # the task's identities name it
VOTING_SERVER = {  # the task's Server, as written
    "apiVersion": f"{POLICY}/v1beta3", "kind": "Server",
    "metadata": {"namespace": EMOJIVOTO, "name": "voting-grpc", "labels": {"app": "voting-svc"}},
    "spec": {"podSelector": {"matchLabels": {"app": "voting-svc"}}, "port": "grpc",
             "proxyProtocol": "gRPC"}}
VOTING_POLICY = [  # the task's AuthorizationPolicy and MeshTLSAuthentication
    {"apiVersion": f"{POLICY}/v1alpha1", "kind": "AuthorizationPolicy",
     "metadata": {"namespace": EMOJIVOTO, "name": "voting-policy"},
     "spec": {"targetRef": {"group": POLICY, "kind": "Server", "name": "voting-grpc"},
              "requiredAuthenticationRefs": [{"name": "voting-authn",
                                              "kind": "MeshTLSAuthentication",
                                              "group": POLICY}]}},
    {"apiVersion": f"{POLICY}/v1alpha1", "kind": "MeshTLSAuthentication",
     "metadata": {"namespace": EMOJIVOTO, "name": "voting-authn"},
     "spec": {"identities": ["web.emojivoto.serviceaccount.identity.linkerd.cluster.local"]}}]


def test_restricting_access_task_on_emojivoto(cluster: ClusterRef) -> None:
    """The task's steps: emojivoto meshed; the `voting-grpc` Server alone denies web's gRPC
    votes (web answers 500 with the PermissionDenied status the voting proxy returned); the
    task's AuthorizationPolicy lets web vote again, counted on the voting proxy under
    `authz_name="voting-policy"` (what `linkerd viz authz` shows)."""
    mesh = MeshNamespace(cluster, EMOJIVOTO)
    text = (MANIFESTS / "emojivoto.yaml").read_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
    for doc in docs:
        if doc["kind"] == "Namespace":
            doc["metadata"]["annotations"] = {"linkerd.io/inject": "enabled"}
    try:
        out = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
        assert out.returncode == 0, out.stderr
        wait_available(cluster, EMOJIVOTO, timeout=240)

        def vote() -> tuple[int, str]:
            return mesh.curl("http://web-svc.emojivoto/api/vote?choice=:joy:",
                             workload="vote-bot")
        poll(lambda: vote()[0] == 200, "a vote through web", timeout=60, interval=0.5)
        apply(mesh, VOTING_SERVER)
        _, body = poll(lambda: (r := vote())[0] == 500 and r, "votes refused",
                       timeout=30, interval=0.3)
        assert "PermissionDenied" in body and "unauthorized request on route" in body, body
        apply(mesh, *VOTING_POLICY)
        poll(lambda: vote()[0] == 200 and vote()[0] == 200, "votes authorized again",
             timeout=30, interval=0.3)

        def allowed() -> bool:
            code, body = mesh.curl("http://localhost:4191/metrics", workload="voting")
            return code == 200 and any(
                line.startswith("inbound_http_authz_allow_total{")
                and 'srv_name="voting-grpc"' in line and 'authz_name="voting-policy"' in line
                and 'client_id="web.emojivoto.serviceaccount.identity.linkerd.cluster.local"'
                in line for line in body.splitlines())
        poll(allowed, "the voting proxy's allow count", timeout=30, interval=0.5)
    finally:
        cluster.kubectl("delete", "namespace", EMOJIVOTO, "--timeout=90s", timeout=120)


# -- resolution and metrics, without a cluster --------------------------------------------------
def _pod() -> Obj:
    return {"metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "ports": [
                {"containerPort": 80, "name": "http"}, {"containerPort": 9000}]}]}}


def _obj(kind: str, name: str, spec: Obj, created: str = "2026-01-01T00:00:00Z") -> Obj:
    version = "v1beta3" if kind in ("Server", "HTTPRoute") else "v1alpha1"
    return {"apiVersion": f"{POLICY}/{version}", "kind": kind,
            "metadata": {"name": name, "namespace": "shop", "creationTimestamp": created},
            "spec": spec}


def test_port_policy_resolution() -> None:
    """Servers select ports by name or number (the oldest wins a conflict); authorizations
    come from the Server's and the Namespace's policies; a policy whose authentication does
    not exist is ignored; ports no Server selects keep the default policy and its probes."""
    selector = {"matchLabels": {"app": "web"}}
    state = LinkerdState(
        pods=[_pod()],
        servers=[_obj("Server", "newer", {"podSelector": selector, "port": 80},
                      "2026-02-01T00:00:00Z"),
                 _obj("Server", "older", {"podSelector": selector, "port": "http",
                                          "accessPolicy": "all-authenticated"})],
        meshtls_authentications=[_obj("MeshTLSAuthentication", "ns-wide", {
            "identityRefs": [{"kind": "Namespace", "name": "shop"}]})],
        authorization_policies=[
            _obj("AuthorizationPolicy", "ns", {
                "targetRef": {"kind": "Namespace", "name": "shop"},
                "requiredAuthenticationRefs": [{"group": POLICY, "kind": "MeshTLSAuthentication",
                                                "name": "ns-wide"}]}),
            _obj("AuthorizationPolicy", "dangling", {
                "targetRef": {"group": POLICY, "kind": "Server", "name": "older"},
                "requiredAuthenticationRefs": [{"group": POLICY, "kind": "NetworkAuthentication",
                                                "name": "missing"}]})])
    port = port_policy(state, _pod(), 80, "deny")
    assert port.server == (POLICY, "server", "older")
    assert [a.meta[2] for a in port.authorizations] == ["ns", "all-authenticated"]
    ns_wide = port.authorizations[0]
    assert not ns_wide.unauthenticated
    assert ns_wide.identities == ("*.shop.serviceaccount.identity.linkerd.cluster.local",)
    other = port_policy(state, _pod(), 9000, "cluster-unauthenticated")
    assert other.server == ("", "default", "cluster-unauthenticated")
    assert other.authorizations[0].unauthenticated
    assert other.authorizations[0].networks == (("127.0.0.0/8", ()),)
    assert [r.meta for r in other.routes] == [("", "default", "default")]


def test_metrics_count_authorization_decisions() -> None:
    """The inbound line's decision fields become linkerd2-proxy's authz families."""
    pod = {"metadata": {"name": "web-1", "namespace": "shop", "uid": "u1"},
           "spec": {"initContainers": [{"name": "linkerd-proxy", "restartPolicy": "Always"}]}}
    metrics = LinkerdMetrics()
    metrics.update_state(LinkerdState(pods=[pod]))
    base = {"direction": "inbound", "port": "80",
            "route": f"{POLICY}|server|web-http||default|default", "duration": "1"}
    metrics.ingest(pod_dir_name(pod), [
        {**base, "authz": f"000|{POLICY}|authorizationpolicy|web-curl", "tls": "TLSv1.3",
         "client_id": "curl.shop.serviceaccount.identity.linkerd.cluster.local",
         "details": "via_upstream", "response_code": "200"},
        {**base, "authz": None, "tls": None, "client_id": None,
         "details": "rbac_access_denied_matched_policy[none]", "response_code": "403"}])
    text = asyncio.run(metrics.render(pod_dir_name(pod)))
    assert text is not None
    target = 'target_addr="127.0.0.1:80",target_ip="127.0.0.1",target_port="80"'
    server_route = (f'srv_group="{POLICY}",srv_kind="server",srv_name="web-http",srv_port="80",'
                    'route_group="",route_kind="default",route_name="default"')
    assert (f'inbound_http_authz_allow_total{{{target},{server_route},authz_group="{POLICY}",'
            'authz_kind="authorizationpolicy",authz_name="web-curl",tls="true",'
            'client_id="curl.shop.serviceaccount.identity.linkerd.cluster.local"} 1'
            ) in text.splitlines()
    assert (f'inbound_http_authz_deny_total{{{target},{server_route},tls="no_identity",'
            'no_tls_reason="no_tls_from_remote"} 1') in text.splitlines()
