"""Protobuf request bodies from the pinned kubectl decode to the dict their JSON form gives.

The real kubectl talks to a small aiohttp capture server on 127.0.0.1 that answers just enough
discovery for it to proceed, records every request and echoes POSTs back. The oracle for "the
dict the JSON form would give" is kubectl's own `--dry-run=client -o json` output for the same
command, with the empty values JSON prints for non-pointer Go fields (`status: {}`,
`creationTimestamp: null`) pruned, as the decoder's documented omission rule drops them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from labs.embedded.apiserver.errors import ApiError
from labs.embedded.apiserver.protobuf import PROTOBUF_CONTENT_TYPE, decode_protobuf_object
from labs.embedded.apiserver.protobuf_messages import KINDS, MESSAGES

KUBECTL = Path(sys.executable).with_name("kubectl")
FIXTURES = Path(__file__).parent / "fixtures" / "protobuf"

# group/version -> (resource, kind, namespaced)
RESOURCES: dict[str, list[tuple[str, str, bool]]] = {
    "v1": [
        ("configmaps", "ConfigMap", True),
        ("namespaces", "Namespace", False),
        ("pods", "Pod", True),
        ("resourcequotas", "ResourceQuota", True),
        ("secrets", "Secret", True),
        ("serviceaccounts", "ServiceAccount", True),
        ("serviceaccounts/token", "TokenRequest", True),
        ("services", "Service", True),
    ],
    "apps/v1": [("deployments", "Deployment", True)],
    "batch/v1": [("cronjobs", "CronJob", True), ("jobs", "Job", True)],
    "networking.k8s.io/v1": [("ingresses", "Ingress", True)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "rbac.authorization.k8s.io/v1": [
        ("clusterrolebindings", "ClusterRoleBinding", False),
        ("clusterroles", "ClusterRole", False),
        ("rolebindings", "RoleBinding", True),
        ("roles", "Role", True),
    ],
    "scheduling.k8s.io/v1": [("priorityclasses", "PriorityClass", False)],
}
_OBJECT_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<resource>[a-z]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[a-z]+))?$"
)


@dataclass
class Recorded:
    method: str
    path: str
    content_type: str
    body: bytes


@dataclass
class CaptureServer:
    """Answers kubectl's discovery, records each request, echoes objects back."""

    requests: list[Recorded] = field(default_factory=list)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)  # by object path
    url: str = ""
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None

    def start(self) -> None:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        assert ready.wait(10), "capture server did not start"

    def stop(self) -> None:
        assert self._loop is not None and self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    def _serve(self, ready: threading.Event) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        ready.set()
        self._loop.run_forever()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        content_type = request.headers.get("Content-Type", "")
        self.requests.append(Recorded(request.method, request.path_qs, content_type, body))
        path = request.path
        if path == "/api":
            return web.json_response({"kind": "APIVersions", "versions": ["v1"]})
        if path == "/apis":
            return web.json_response(_group_list())
        group_version = "v1" if path == "/api/v1" else path.removeprefix("/apis/")
        if group_version in RESOURCES:
            return web.json_response(_resource_list(group_version))
        match = _OBJECT_PATH.match(path)
        if match is None:
            return _status(404, "NotFound", f"{path} not found")
        return self._object(request.method, match, content_type, body)

    def _object(
        self, method: str, match: re.Match[str], content_type: str, body: bytes
    ) -> web.Response:
        group_version = match["core"] or f"{match['group']}/{match['version']}"
        kinds = {r: k for r, k, _ in RESOURCES.get(group_version, [])}
        if match["sub"] == "token":
            return web.json_response(_token_request(), status=201)
        if method != "POST":
            stored = self.objects.get(match.group(0).removesuffix("/scale"))
            if stored is None:
                return _status(404, "NotFound", f"{match['resource']} {match['name']} not found")
            if match["sub"] == "scale":
                scale = {"apiVersion": "autoscaling/v1", "kind": "Scale"}
                return web.json_response({**scale, "metadata": stored["metadata"]})
            return web.json_response(stored)
        name = "unnamed"
        if content_type == PROTOBUF_CONTENT_TYPE:
            try:
                name = decode_protobuf_object(body)["metadata"].get("name", name)
            except ApiError as exc:
                return web.json_response(exc.status(), status=exc.code)
        elif body:
            name = json.loads(body)["metadata"].get("name", name)
        kind = kinds.get(match["resource"], "Unknown")
        echo = _workload(group_version, kind, name, match["ns"])
        self.objects[f"{match.group(0)}/{name}"] = echo
        return web.json_response(echo, status=201)


def _group_list() -> dict[str, Any]:
    groups = []
    for gv in RESOURCES:
        if "/" in gv:
            group, version = gv.split("/")
            ref = {"groupVersion": gv, "version": version}
            groups.append({"name": group, "versions": [ref], "preferredVersion": ref})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def _resource_list(group_version: str) -> dict[str, Any]:
    resources = [
        {
            "name": name,
            "singularName": "" if "/" in name else kind.lower(),
            "namespaced": namespaced,
            "kind": kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
        }
        for name, kind, namespaced in RESOURCES[group_version]
    ]
    return {"kind": "APIResourceList", "groupVersion": group_version, "resources": resources}


def _workload(group_version: str, kind: str, name: str, namespace: str | None) -> dict[str, Any]:
    """A minimal stored object; workloads get a pod template so `expose`/`set image` can work."""
    meta: dict[str, Any] = {"name": name, "resourceVersion": "1", "uid": f"uid-{name}"}
    if namespace:
        meta["namespace"] = namespace
    obj: dict[str, Any] = {"apiVersion": group_version, "kind": kind, "metadata": meta}
    labels = {"app": name}
    container = {"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80}]}
    pod_spec = {"containers": [container]}
    if kind == "Deployment":
        obj["spec"] = {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        }
    elif kind == "Pod":
        meta["labels"] = labels
        obj["spec"] = pod_spec
    return obj


def _token_request() -> dict[str, Any]:
    return {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "metadata": {},
        "spec": {"audiences": []},
        "status": {"token": "t0ken", "expirationTimestamp": "2030-01-01T00:00:00Z"},
    }


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
            "message": message, "code": code}  # fmt: skip
    return web.json_response(body, status=code)


@dataclass
class Kubectl:
    server: CaptureServer
    kubeconfig: Path
    cache: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(KUBECTL), "--kubeconfig", str(self.kubeconfig), "--cache-dir",
                   str(self.cache), *args]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    def capture(self, *args: str) -> list[Recorded]:
        """Run a command for real and return the non-GET requests it made."""
        before = len(self.server.requests)
        result = self.run(*args)
        assert result.returncode == 0, result.stderr
        return [r for r in self.server.requests[before:] if r.method != "GET"]

    def created_body(self, *args: str) -> bytes:
        (post,) = [r for r in self.capture(*args) if r.method == "POST"]
        assert post.content_type == PROTOBUF_CONTENT_TYPE, post
        return post.body

    def dry_run_json(self, *args: str) -> dict[str, Any]:
        """kubectl's own JSON for the object the same command would create."""
        split = args.index("--") if "--" in args else len(args)
        result = self.run(*args[:split], "--dry-run=client", "-o", "json", *args[split:])
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


@pytest.fixture(scope="module")
def kubectl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kubectl]:
    assert KUBECTL.exists(), f"the pinned kubectl is missing at {KUBECTL}"
    server = CaptureServer()
    server.objects["/apis/apps/v1/namespaces/lab/deployments/web"] = _workload(
        "apps/v1", "Deployment", "web", "lab"
    )
    server.start()
    home = tmp_path_factory.mktemp("kubectl")
    kubeconfig = home / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "capture", "cluster": {"server": server.url}}],
                "users": [{"name": "learner", "user": {"token": "capture-token"}}],
                "contexts": [
                    {
                        "name": "capture",
                        "context": {"cluster": "capture", "user": "learner", "namespace": "lab"},
                    }
                ],
                "current-context": "capture",
            }
        )
    )
    try:
        yield Kubectl(server, kubeconfig, home / "cache")
    finally:
        server.stop()


def _prune(value: Any) -> Any:
    """Drop what JSON prints for empty non-pointer Go fields: null, {} and []."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


CREATE_COMMANDS = [
    "create namespace team-a",
    "create configmap settings --from-literal=mode=debug --from-literal=level=3",
    "create secret generic creds --from-literal=user=admin --type=Opaque",
    "create secret docker-registry pull --docker-server=registry.local:5000 --docker-username=u"
    " --docker-password=p --docker-email=u@example.com",
    "create serviceaccount robot",
    "create deployment web --image=nginx:1.27 --replicas=3 --port=80",
    "create deployment idle --image=busybox --replicas=0 -- sleep 3600",
    "create service clusterip reviews --tcp=9080:9080 --tcp=9443:http",
    "create service clusterip headless --clusterip=None",
    "create service nodeport front --tcp=80:8080 --node-port=30080",
    "create service loadbalancer edge --tcp=443:8443",
    "create service externalname ext --external-name=example.com",
    "create job once --image=busybox -- echo hi",
    "create cronjob tick --image=busybox '--schedule=*/5 * * * *' --restart=Never",
    "create quota small --hard=pods=2,requests.cpu=500m,limits.memory=1Gi --scopes=NotTerminating",
    "create priorityclass high --value=1000 --description=important --preemption-policy=Never",
    "create role reader --verb=get,list --resource=pods,services",
    "create rolebinding reader --role=reader --user=alice --serviceaccount=lab:robot",
    "create clusterrole viewer --verb=get --non-resource-url=/healthz",
    "create clusterrolebinding viewer --clusterrole=viewer --group=devs",
    "create ingress site --rule=foo.example.com/bar*=svc1:8080,tls=cert --annotation=a=b"
    " --class=nginx",
    "create poddisruptionbudget keep --selector=app=web --min-available=50%",
]


@pytest.mark.parametrize("command", CREATE_COMMANDS, ids=lambda c: " ".join(c.split()[1:3]))
def test_kubectl_create_body_decodes_to_the_json_form(kubectl: Kubectl, command: str) -> None:
    """Does each protobuf body from `kubectl create` decode to what `-o json` shows?"""
    args = shlex.split(command)
    decoded = decode_protobuf_object(kubectl.created_body(*args))
    expected = kubectl.dry_run_json(*args)
    # The server owns status: the JSON form prints zero counters of non-omitempty status fields
    # (a PodDisruptionBudget's currentHealthy: 0), which the omission rule drops.
    expected.pop("status", None)
    assert decoded == _prune(expected)


def test_deployment_fields(kubectl: Kubectl) -> None:
    """Are replicas, selector, image and ports of `create deployment` all there?"""
    body = kubectl.created_body(
        "create", "deployment", "web", "--image=nginx:1.27", "--replicas=3", "--port=80"
    )
    assert decode_protobuf_object(body) == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}
                    ]
                },
            },
        },
    }


def test_zero_replicas_is_kept(kubectl: Kubectl) -> None:
    """Is an explicit `replicas: 0` (a Go pointer) kept rather than dropped as empty?"""
    body = kubectl.created_body("create", "deployment", "zero", "--image=nginx", "--replicas=0")
    assert decode_protobuf_object(body)["spec"]["replicas"] == 0


def test_secret_data_is_base64(kubectl: Kubectl) -> None:
    """Are Secret `data` bytes base64 in the dict, as in JSON?"""
    body = kubectl.created_body("create", "secret", "generic", "s", "--from-literal=a=b")
    decoded = decode_protobuf_object(body)
    assert decoded["data"] == {"a": base64.b64encode(b"b").decode()}


def test_docker_registry_secret(kubectl: Kubectl) -> None:
    """Does the .dockerconfigjson of a docker-registry secret survive byte for byte?"""
    body = kubectl.created_body(
        "create", "secret", "docker-registry", "reg", "--docker-server=r.local",
        "--docker-username=u", "--docker-password=p",
    )  # fmt: skip
    decoded = decode_protobuf_object(body)
    assert decoded["type"] == "kubernetes.io/dockerconfigjson"
    config = json.loads(base64.b64decode(decoded["data"][".dockerconfigjson"]))
    assert config["auths"]["r.local"]["auth"] == base64.b64encode(b"u:p").decode()


def test_nodeport_service(kubectl: Kubectl) -> None:
    """Does `create service nodeport` give type, selector, port, targetPort and nodePort?"""
    body = kubectl.created_body(
        "create", "service", "nodeport", "front", "--tcp=80:8080", "--node-port=30080"
    )
    assert decode_protobuf_object(body) == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "front", "labels": {"app": "front"}},
        "spec": {
            "type": "NodePort",
            "selector": {"app": "front"},
            "ports": [
                {
                    "name": "80-8080",
                    "protocol": "TCP",
                    "port": 80,
                    "targetPort": 8080,
                    "nodePort": 30080,
                }
            ],
        },
    }


def test_named_target_port_is_a_string(kubectl: Kubectl) -> None:
    """Is an IntOrString holding a port name decoded as a string?"""
    body = kubectl.created_body("create", "service", "clusterip", "named", "--tcp=9443:http")
    assert decode_protobuf_object(body)["spec"]["ports"][0]["targetPort"] == "http"


def test_quota_quantities(kubectl: Kubectl) -> None:
    """Are resource.Quantity map values their canonical strings?"""
    body = kubectl.created_body("create", "quota", "q", "--hard=pods=2,requests.cpu=500m")
    assert decode_protobuf_object(body)["spec"]["hard"] == {"pods": "2", "requests.cpu": "500m"}


def test_create_token_sends_a_token_request(kubectl: Kubectl) -> None:
    """Does the TokenRequest of `kubectl create token` decode, audience and expiry included?"""
    body = kubectl.created_body("create", "token", "robot", "--audience=mesh", "--duration=1h")
    assert decode_protobuf_object(body) == {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"audiences": ["mesh"], "expirationSeconds": 3600},
    }


def _content_types(kubectl: Kubectl, *args: str) -> set[tuple[str, str]]:
    return {(r.method, r.content_type) for r in kubectl.capture(*args)}


def test_which_commands_send_protobuf(kubectl: Kubectl) -> None:
    """Which kubectl commands send protobuf, and which JSON or patches?"""
    json_ = "application/json"
    merge, strategic = "application/merge-patch+json", "application/strategic-merge-patch+json"
    survey = {
        ("run", "p", "--image=nginx", "--port=80"): {("POST", json_)},
        ("expose", "deployment", "web", "--port=80"): {("POST", json_)},
        ("label", "deployment", "web", "tier=a"): {("PATCH", merge)},
        ("annotate", "deployment", "web", "note=a"): {("PATCH", merge)},
        ("scale", "deployment", "web", "--replicas=2"): {("PATCH", merge)},
        ("set", "image", "deployment/web", "nginx=nginx:2"): {("PATCH", strategic)},
        ("patch", "deployment", "web", "-p", '{"spec":{"replicas":2}}'): {("PATCH", strategic)},
        ("rollout", "restart", "deployment/web"): {("PATCH", strategic)},
        ("delete", "deployment", "web", "--wait=false"): {("DELETE", json_)},
        ("create", "deployment", "d", "--image=nginx"): {("POST", PROTOBUF_CONTENT_TYPE)},
    }
    for args, expected in survey.items():
        assert _content_types(kubectl, *args) == expected, args


def test_apply_sends_json(kubectl: Kubectl, tmp_path: Path) -> None:
    """Does `kubectl apply -f` (the workaround the errors suggest) send JSON?"""
    manifest = tmp_path / "cm.yaml"
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}}
    manifest.write_text(json.dumps(config_map))
    posts = [r for r in kubectl.capture("apply", "--validate=false", "-f", str(manifest))]
    assert [(r.method, r.content_type) for r in posts] == [("POST", "application/json")]


# -- committed captures: fast decoding without kubectl --------------------------------------

FIXTURE_NAMES = sorted(p.stem for p in FIXTURES.glob("*.pb"))


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_committed_capture_decodes(name: str) -> None:
    """Does each committed kubectl capture still decode to its recorded JSON?"""
    body = (FIXTURES / f"{name}.pb").read_bytes()
    expected = json.loads((FIXTURES / f"{name}.json").read_text())
    assert decode_protobuf_object(body) == expected


def test_fixtures_are_committed() -> None:
    """Are the fast fixture captures present (so the fast tests are not silently empty)?"""
    assert len(FIXTURE_NAMES) >= 3


# -- hand-built bodies: wire details and errors ---------------------------------------------


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = _field(1, api_version.encode()) + _field(2, kind.encode())
    return b"k8s\x00" + _field(1, type_meta) + _field(2, raw) + _field(3, b"") + _field(4, b"")


def _meta(name: str) -> bytes:
    return _field(1, _field(1, name.encode()))


def test_negative_and_packed_integers() -> None:
    """Are negative int64s and packed repeated int32s decoded like Go does?"""
    exit_codes = _field(2, b"In") + _field(3, _varint(1) + _varint(42))
    rule = _field(1, b"FailJob") + _field(2, exit_codes)
    spec = _field(11, _field(1, rule)) + _field(3, -5)  # podFailurePolicy, activeDeadlineSeconds
    decoded = decode_protobuf_object(_envelope("batch/v1", "Job", _meta("j") + _field(2, spec)))
    assert decoded["spec"]["activeDeadlineSeconds"] == -5
    assert decoded["spec"]["podFailurePolicy"]["rules"][0] == {
        "action": "FailJob",
        "onExitCodes": {"operator": "In", "values": [1, 42]},
    }


def test_pointer_and_plain_zero_values() -> None:
    """Is a present zero kept for pointers (emptyDir: {}) but dropped for plain fields?"""
    volume = _field(1, b"scratch") + _field(2, _field(2, b""))  # name, inline VolumeSource.emptyDir
    container = _field(1, b"app") + _field(16, 0) + _field(8, b"")  # stdin false, resources {}
    pod_spec = _field(1, volume) + _field(2, container) + _field(21, 0)  # automount... = false
    decoded = decode_protobuf_object(_envelope("v1", "Pod", _meta("p") + _field(2, pod_spec)))
    assert decoded["spec"] == {
        "volumes": [{"name": "scratch", "emptyDir": {}}],
        "containers": [{"name": "app"}],
        "automountServiceAccountToken": False,
    }


def test_embedded_structs_are_inlined() -> None:
    """Are Go embedded structs (LocalObjectReference, ProbeHandler) inlined as JSON does?"""
    key_ref = _field(1, _field(1, b"settings")) + _field(2, b"mode")  # inline name, key
    env = _field(1, b"MODE") + _field(3, _field(3, key_ref))  # valueFrom.configMapKeyRef
    http_get = _field(1, b"/healthz") + _field(2, _field(1, 1) + _field(3, b"http"))
    probe = _field(1, _field(2, http_get)) + _field(4, 5)  # inline handler.httpGet, periodSeconds
    container = _field(1, b"app") + _field(7, env) + _field(11, probe)
    decoded = decode_protobuf_object(_envelope("v1", "Pod", _field(2, _field(2, container))))
    assert decoded["spec"]["containers"] == [
        {
            "name": "app",
            "env": [
                {
                    "name": "MODE",
                    "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}},
                }
            ],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5},
        }
    ]


def test_time_and_managed_fields() -> None:
    """Do metav1.Time and FieldsV1 decode to an RFC 3339 string and a JSON object?"""
    entry = (
        _field(1, b"kubectl")
        + _field(2, b"Update")
        + _field(4, _field(1, 1704164645))
        + _field(6, b"FieldsV1")
        + _field(7, _field(1, b'{"f:data":{}}'))
    )
    meta = _field(1, b"cm") + _field(8, b"") + _field(17, entry)
    decoded = decode_protobuf_object(_envelope("v1", "ConfigMap", _field(1, meta)))
    assert decoded["metadata"] == {
        "name": "cm",
        "managedFields": [
            {
                "manager": "kubectl",
                "operation": "Update",
                "time": "2024-01-02T03:04:05Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:data": {}},
            }
        ],
    }


def _error(body: bytes) -> str:
    with pytest.raises(ApiError) as caught:
        decode_protobuf_object(body)
    assert caught.value.code == 400 and caught.value.reason == "BadRequest"
    assert "kubectl apply -f" in caught.value.message
    return caught.value.message


def test_wrong_magic_is_a_400() -> None:
    """Is a JSON body sent with the protobuf Content-Type rejected with a clear 400?"""
    assert "magic" in _error(b'{"kind":"ConfigMap"}')


def test_truncated_body_is_a_400() -> None:
    """Does a body cut short give a 400 naming the truncated field, never a traceback?"""
    body = _envelope("v1", "ConfigMap", _meta("cm") + _field(2, _field(1, b"k") + _field(2, b"v")))
    assert "truncated field 2 in runtime.Unknown" in _error(body[:-8])
    for cut in range(len(body)):
        try:
            decode_protobuf_object(body[:cut])
        except ApiError as exc:
            assert exc.code == 400, (cut, exc)


def test_truncated_varint_reports_its_byte() -> None:
    """Is a varint running off the end reported with its offset?"""
    assert "truncated varint at byte 4" in _error(b"k8s\x00\x8a")


def test_unknown_kind_is_a_400() -> None:
    """Is an object kind without a table (for example a StatefulSet) refused, not guessed?"""
    message = _error(_envelope("apps/v1", "StatefulSet", _meta("db")))
    assert "apps/v1" in message and "StatefulSet" in message


def test_unknown_field_is_a_400() -> None:
    """Is a field number the tables do not know refused with message and number?"""
    message = _error(_envelope("v1", "ConfigMap", _meta("cm") + _field(99, b"x")))
    assert "unknown field number 99 in message ConfigMap" in message


def test_wrong_wire_type_is_a_400() -> None:
    """Is a string field sent as a varint refused?"""
    message = _error(_envelope("v1", "ConfigMap", _field(1, _field(1, 7))))
    assert "ObjectMeta.name" in message and "wire type 0" in message


def test_invalid_utf8_is_a_400() -> None:
    """Are invalid UTF-8 strings refused rather than mangled?"""
    assert "UTF-8" in _error(_envelope("v1", "ConfigMap", _field(1, _field(1, b"\xff"))))


def test_content_encoding_is_refused() -> None:
    """Is a compressed (contentEncoding) payload refused?"""
    body = b"k8s\x00" + _field(1, _field(1, b"v1") + _field(2, b"ConfigMap")) + _field(3, b"gzip")
    assert "gzip" in _error(body)


def test_tables_reference_only_known_types() -> None:
    """Does every field type in the tables name a scalar, a special type or a table?"""
    known = set(MESSAGES) | {"string", "int32", "int64", "bool", "bytes"}
    known |= {"Time", "IntOrString", "Quantity", "FieldsV1"}
    for message, fields in MESSAGES.items():
        for number, (name, ftype) in fields.items():
            base = ftype.removeprefix("map[string]").lstrip("*").removeprefix("[]")
            assert base in known, (message, number, name, ftype)
    assert set(KINDS.values()) <= set(MESSAGES)
