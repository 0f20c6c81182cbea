"""Does a policy change reach connections a client sidecar already holds, as in Istio?

Envoy drains as pilot-agent starts it (`--drain-strategy immediate`), for 1 s instead of 45
(labs/embedded/mesh/envoy.py, ENVOY_FLAGS): when a listener's filter chain is replaced — a new
AuthorizationPolicy — the next response on each old connection tells the client to close it, so
a kept-alive connection may answer one more request under the old policy, never more, and no
request fails for the change.

The kept-alive connection runs from this process to curl's sidecar (its outbound HTTP proxy port,
what the app uses) and from there, pooled, to httpbin's sidecar. Whether the policy is in force
is learned on fresh connections straight to httpbin's sidecar (plaintext, PERMISSIVE), which never
touch the pooled one.
"""

from __future__ import annotations

import http.client
import json

from conftest import poll
from mesh_support import MeshNamespace, mesh_namespace_fixture, yaml_stream

mesh = mesh_namespace_fixture("httpbin", "curl", prefix="drain")


def annotation(mesh: MeshNamespace, app: str, key: str) -> dict[str, int]:
    pod = json.loads(mesh.kubectl("get", "pods", "-l", f"app={app}", "-o", "json"))["items"][0]
    return {k: int(v) for k, v in json.loads(pod["metadata"]["annotations"][key]).items()}


def fresh_get(port: int, path: str) -> int:
    """Status of one GET on a new connection to 127.0.0.1:`port`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": "httpbin:8000"})
        return conn.getresponse().status
    finally:
        conn.close()


def deny_get(name: str) -> str:
    return yaml_stream({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                        "metadata": {"name": name},
                        "spec": {"selector": {"matchLabels": {"app": "httpbin"}},
                                 "action": "DENY",
                                 "rules": [{"to": [{"operation": {"paths": ["/get"]}}]}]}})


def test_policy_change_reaches_an_open_connection_after_at_most_one_request(
        mesh: MeshNamespace) -> None:
    """A kept-alive connection through curl's sidecar gets 200 from httpbin; once a DENY policy
    answers fresh connections with 403, does the open connection answer at most one more
    request under the old policy (200) and then 403 — and after the policy is deleted, 200 again
    the same way, with no request failing in between?"""
    outbound = annotation(mesh, "curl", "meshlab.dev/proxy-ports")["outbound"]
    inbound = annotation(mesh, "httpbin", "meshlab.dev/host-ports")["8080"]
    kept = http.client.HTTPConnection("127.0.0.1", outbound, timeout=10)

    def kept_get() -> int:
        kept.request("GET", "http://httpbin:8000/get")
        response = kept.getresponse()
        response.read()
        return response.status

    try:
        for _ in range(5):  # open and warm the pooled connection to httpbin's sidecar
            assert kept_get() == 200
        mesh.apply(deny_get("deny-get"))
        poll(lambda: fresh_get(inbound, "/get") == 403, "the DENY policy on fresh connections",
             timeout=30, interval=0.02)
        assert [kept_get(), kept_get()] in ([200, 403], [403, 403])
        mesh.kubectl("delete", "authorizationpolicy", "deny-get")
        poll(lambda: fresh_get(inbound, "/get") == 200, "the policy gone on fresh connections",
             timeout=30, interval=0.02)
        assert [kept_get(), kept_get()] in ([403, 200], [200, 200])
    finally:
        kept.close()
        mesh.kubectl("delete", "authorizationpolicy", "--all", "--ignore-not-found")
