"""The HTTP face of the embedded API server (aiohttp).

Parses Kubernetes URLs, authenticates the bearer token, decodes bodies (JSON, YAML, protobuf),
and turns `ObjectApi` results and `ApiError`s into the responses kubectl expects. Pod `log`,
`exec` and `portforward` are handed to the runtime through the `PodIO` protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import yaml
from aiohttp import web
from multidict import CIMultiDict

from . import access_review, discovery, metrics_api, openapi_v2, tables
from .api import APPLY_PATCH, ObjectApi, scale_patch
from .errors import ApiError, bad_request, method_not_allowed, not_found, unauthorized
from .protobuf import PROTOBUF_CONTENT_TYPE, decode_protobuf_object
from .resources import ResourceType
from .store import Event

log = logging.getLogger(__name__)
Obj = dict[str, Any]
KUBERNETES_VERSION = {"major": "1", "minor": "37", "gitVersion": "v1.37.0-meshlab",
                      "gitCommit": "meshlab", "gitTreeState": "clean", "buildDate": "2026-11-01",
                      "goVersion": "n/a", "compiler": "python", "platform": "linux/amd64",
                      "emulationMajor": "1", "emulationMinor": "37",
                      "minCompatibilityMajor": "1", "minCompatibilityMinor": "36"}
WATCH_DEFAULT_TIMEOUT = 1800
BOOKMARK_INTERVAL_S = 30.0  # kube-apiserver sends one about every minute
# Kinds whose DELETE answers with the object, as kube-apiserver's registries do; the others
# (and every graceful deletion aside) answer with a `Status` of Success.
RETURNS_DELETED_OBJECT = frozenset({"/pods", "/services", "/serviceaccounts"})


class PodIO(metrics_api.MetricsSource, Protocol):
    """What the runtime provides for `pods/log`, `pods/exec`, `pods/portforward` and
    `metrics.k8s.io`."""

    def log_stream(self, pod: Obj, container: str, *, follow: bool, tail_lines: int | None,
                   previous: bool, since_seconds: int | None, timestamps: bool,
                   ) -> AsyncIterator[bytes]: ...

    async def exec_websocket(self, request: web.Request, pod: Obj, container: str,
                             command: list[str], stdin: bool, tty: bool,
                             ) -> web.StreamResponse: ...

    async def portforward(self, request: web.Request, pod: Obj) -> web.StreamResponse: ...


@dataclass
class Target:
    """What a resource URL names."""

    rt: ResourceType
    namespace: str
    name: str
    subresource: str


def _json_response(body: Obj, status: int = 200, warnings: list[str] | None = None
                   ) -> web.Response:
    headers: CIMultiDict[str] = CIMultiDict()
    for warning in warnings or []:
        headers.add("Warning", _warning_value(warning))
    return web.Response(text=json.dumps(body, separators=(",", ":")), status=status,
                        content_type="application/json", headers=headers)


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _warning_value(text: str) -> str:
    """One RFC 7234 warning (`299 - "text"`) with the text's quotes and backslashes escaped
    (apimachinery's `NewWarningHeader`), and control characters (a field name a client sent)
    as spaces: Go's net/http writes CR and LF so, and no header may carry them."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '299 - "' + _CONTROL.sub(" ", escaped) + '"'


def _error_response(err: ApiError) -> web.Response:
    return _json_response(err.status(), err.code)


def _wants_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


def _bool(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("true", "1")


def _manager(request: web.Request) -> str:
    """The field manager: `?fieldManager=`, else the User-Agent's program name, as kube does."""
    manager = request.query.get("fieldManager") or request.headers.get(
        "User-Agent", "unknown").split("/")[0]
    if len(manager) > 128:
        raise bad_request("fieldManager must be at most 128 characters")
    return manager


def _field_validation(request: web.Request) -> str:
    """`?fieldValidation=`, `Warn` when absent or empty, as kube-apiserver's `fieldValidation()`
    (staging/src/k8s.io/apiserver/pkg/endpoints/handlers/rest.go); kubectl asks for Strict."""
    return request.query.get("fieldValidation") or "Warn"


def _int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise bad_request(f"query parameter {name}={raw!r} must be an integer") from None


def _bookmark(rt: ResourceType, rv: int, initial_events_end: bool = False) -> bytes:
    meta: Obj = {"resourceVersion": str(rv)}
    if initial_events_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    body = {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta}
    return json.dumps({"type": "BOOKMARK", "object": body}).encode() + b"\n"


async def _write(response: web.StreamResponse, data: bytes) -> bool:
    """Write to a streaming response; False once the client has gone."""
    try:
        await response.write(data)
    except ConnectionResetError:
        return False
    return True


class ApiServer:
    """Routes Kubernetes API requests to an `ObjectApi`."""

    def __init__(self, api: ObjectApi, token: str, pod_io: PodIO | None = None) -> None:
        self.api = api
        access_review.register(api.registry)
        self.token = token
        self.pod_io = pod_io
        self.address = "127.0.0.1:0"
        self._watch_tasks: set[asyncio.Task[Any]] = set()
        self.stopping = asyncio.Event()
        self.bookmark_interval = BOOKMARK_INTERVAL_S

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=16 * 1024 * 1024)
        # [\s\S]: also paths with an encoded newline, which `.` would leave to aiohttp's 404
        app.router.add_route("*", r"/{path:[\s\S]*}", self._dispatch)
        return app

    # -- middleware --------------------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            if request.path not in ("/healthz", "/livez", "/readyz"):
                self._authenticate(request)
            return await handler(request)
        except ApiError as err:
            return _error_response(err)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except web.HTTPException:
            raise
        except Exception as exc:  # a bug must still answer as a Status, and be logged
            log.exception("internal error on %s %s", request.method, request.path)
            return _error_response(ApiError(500, "InternalError",
                                            f"an internal error occurred: {exc!r}"))

    def _authenticate(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), self.token):
            raise unauthorized()

    # -- routing -----------------------------------------------------------------------------
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if request.method not in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"):
            raise method_not_allowed(f"method {request.method} is not supported")
        if not parts or parts[0] in ("healthz", "livez", "readyz"):
            return web.Response(text="ok")
        if parts == ["version"]:
            return _json_response(KUBERNETES_VERSION)
        if parts[0] == "openapi":
            return self._openapi(request, parts)
        if parts[0] in ("api", "apis") and len(parts) == 1 and discovery.wants_aggregated(
                request.headers.get("Accept", "")):
            return self._aggregated_discovery(legacy=parts[0] == "api")
        if parts[0] == "api":
            if len(parts) == 1:
                return _json_response(discovery.api_versions(self.address))
            return await self._group_version(request, "", parts[1], parts[2:])
        if parts[0] == "apis":
            if len(parts) == 1:
                return _json_response(self._api_group_list())
            if parts[1] == metrics_api.GROUP and self.pod_io is not None:
                return await self._metrics(request, parts[2:], self.pod_io)
            if len(parts) == 2:
                versions = self.api.registry.group_versions().get(parts[1])
                if not versions:
                    raise not_found("groups", parts[1])
                return _json_response(discovery.api_group(parts[1], versions))
            return await self._group_version(request, parts[1], parts[2], parts[3:])
        raise ApiError(404, "NotFound", f"the server could not find the requested resource "
                       f"({request.method} {request.path})")

    def _api_group_list(self) -> Obj:
        """The registry's groups, and metrics.k8s.io when a runtime measures pods (as a cluster
        lists it once metrics-server is installed)."""
        groups = discovery.api_group_list(self.api.registry)
        if self.pod_io is not None:
            groups["groups"].append(metrics_api.api_group())
        return groups

    def _aggregated_discovery(self, legacy: bool) -> web.Response:
        """`/api` or `/apis` as an APIGroupDiscoveryList, metrics.k8s.io included as in
        `_api_group_list`."""
        extra = ([discovery.group_discovery(metrics_api.GROUP, {
            metrics_api.VERSION: metrics_api.resource_list()})] if self.pod_io is not None else [])
        body = discovery.aggregated_discovery(self.api.registry, legacy, extra)
        return web.Response(text=json.dumps(body, separators=(",", ":")),
                            headers={"Content-Type": discovery.AGGREGATED_CONTENT_TYPE,
                                     "Vary": "Accept"})

    async def _metrics(self, request: web.Request, rest: list[str],
                       source: metrics_api.MetricsSource) -> web.Response:
        if not rest:
            return _json_response(metrics_api.api_group())
        if rest[0] != metrics_api.VERSION:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource "
                           f"(group version {metrics_api.GROUP}/{rest[0]} is not served; "
                           f"use {metrics_api.GROUP_VERSION})")
        return _json_response(await metrics_api.serve(self.api, source, request.method,
                                                      rest[1:], request.query))

    def _openapi(self, request: web.Request, parts: list[str]) -> web.Response:
        if parts[1:] == ["v2"]:
            version = KUBERNETES_VERSION["gitVersion"]
            if "protobuf" in request.headers.get("Accept", ""):
                return web.Response(body=openapi_v2.document_protobuf(version),
                                    content_type=openapi_v2.PROTOBUF_CONTENT_TYPE)
            return _json_response(openapi_v2.document_json(version))
        if len(parts) >= 2 and parts[1] == "v3":
            if len(parts) == 2:
                return _json_response(discovery.openapi_index(self.api.registry))
            doc = discovery.openapi_document(self.api.registry, "/".join(parts[2:]))
            if doc is not None:
                return _json_response(doc)
        raise ApiError(404, "NotFound", f"no OpenAPI document at {request.path}")

    def _target(self, group: str, version: str, rest: list[str]) -> Target:
        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        elif len(rest) in (2, 3) and rest[0] == "namespaces":
            # /api/v1/namespaces/NAME[/status|/finalize]: the namespace object itself
            rest = ["namespaces", rest[1], *rest[2:]]
        plural = rest[0]
        rt = self.api.registry.lookup(group, version, plural)
        if rt is None:
            gv = f"{group}/{version}" if group else version
            raise ApiError(404, "NotFound", f"the server could not find the requested resource "
                           f"({plural} in {gv}): check `kubectl api-resources` for what this "
                           "cluster serves")
        if namespace and not rt.namespaced:
            raise ApiError(404, "NotFound", f"{rt.plural} are cluster-scoped; drop the namespace")
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        if len(rest) > 3 or (sub and sub not in rt.subresources):
            raise ApiError(404, "NotFound", f"the server could not find the requested resource: "
                           f"{rt.plural} has no subresource {'/'.join(rest[2:])!r}")
        return Target(rt, namespace, name, sub)

    async def _group_version(self, request: web.Request, group: str, version: str,
                             rest: list[str]) -> web.StreamResponse:
        if not rest:
            doc = discovery.api_resource_list(self.api.registry, group, version)
            if doc is None:
                gv = f"{group}/{version}" if group else version
                raise ApiError(404, "NotFound", f"the server could not find the requested "
                               f"resource (group version {gv} is not served)")
            return _json_response(doc)
        target = self._target(group, version, rest)
        method = request.method
        if target.rt.group == access_review.GROUP:
            return await self._review(request, target)
        if target.subresource == "log":
            return await self._pod_log(request, target)
        if target.subresource == "exec":
            return await self._pod_exec(request, target)
        if target.subresource == "portforward":
            return await self._pod_portforward(request, target)
        if target.subresource == "scale":
            return await self._scale(request, target)
        if not target.name:
            if method == "GET":
                if _bool(request, "watch"):
                    return await self._watch(request, target)
                return self._list(request, target)
            if method == "POST":
                return await self._create(request, target)
            if method == "DELETE":
                return self._delete_collection(request, target)
            raise method_not_allowed(f"{method} is not allowed on a collection")
        if method == "GET":
            obj = self.api.get(target.rt, target.namespace, target.name)
            if _wants_table(request):
                return _json_response(tables.table(target.rt, [obj], obj["metadata"].get(
                    "resourceVersion", ""), request.query.get("includeObject", "Metadata")))
            return _json_response(obj)
        if method == "PUT":
            body = await self._read_object(request)
            result = self.api.update(
                target.rt, target.namespace, target.name, body,
                subresource=target.subresource or None, dry_run=self._dry_run(request),
                field_validation=_field_validation(request),
                manager=_manager(request))
            return _json_response(result.object, 200, result.warnings)
        if method == "PATCH":
            result = self.api.patch(
                target.rt, target.namespace, target.name, request.content_type,
                await request.read(), subresource=target.subresource or None,
                dry_run=self._dry_run(request),
                field_validation=_field_validation(request),
                field_manager=(request.query.get("fieldManager")
                               if request.content_type == APPLY_PATCH else _manager(request)),
                force=_bool(request, "force"))
            return _json_response(result.object, 200, result.warnings)
        if method == "DELETE":
            return await self._delete(request, target)
        raise method_not_allowed(f"{method} is not allowed on {target.rt.plural}")

    # -- bodies ------------------------------------------------------------------------------
    async def _read_object(self, request: web.Request) -> Any:
        raw = await request.read()
        ctype = request.content_type
        if ctype == PROTOBUF_CONTENT_TYPE:
            return decode_protobuf_object(raw)
        if not raw.strip():
            raise bad_request("the request body is empty: send the object as JSON or YAML")
        try:
            if ctype in ("application/yaml", "application/x-yaml", "text/yaml"):
                return yaml.safe_load(raw.decode("utf-8"))
            return json.loads(raw)
        except UnicodeDecodeError as exc:
            raise bad_request(f"the request body is not UTF-8 text: {exc}") from None
        except json.JSONDecodeError as exc:
            raise bad_request(f"the request body is not valid JSON: {exc.msg} at line "
                              f"{exc.lineno} column {exc.colno}") from None
        except yaml.YAMLError as exc:
            raise bad_request(f"the request body is not valid YAML: {exc}") from None

    @staticmethod
    def _dry_run(request: web.Request) -> bool:
        values = request.query.getall("dryRun", [])
        for value in values:
            if value != "All":
                raise bad_request(f'dryRun "{value}" is not supported: the only value is "All"')
        return bool(values)

    # -- handlers ----------------------------------------------------------------------------
    def _list(self, request: web.Request, target: Target) -> web.Response:
        items, rv = self.api.list(target.rt, target.namespace or None,
                                  request.query.get("labelSelector"),
                                  request.query.get("fieldSelector"))
        limit = _int(request, "limit")
        remaining: Obj = {}
        cont = request.query.get("continue", "")
        if cont:
            try:
                start = int(cont)
            except ValueError:
                raise ApiError(410, "Expired", "the continue token is not valid; list again "
                               "without it") from None
            items = items[start:]
        else:
            start = 0
        if limit and len(items) > limit:
            remaining = {"continue": str(start + limit),
                         "remainingItemCount": len(items) - limit}
            items = items[:limit]
        if _wants_table(request):
            doc = tables.table(target.rt, items, rv, request.query.get("includeObject",
                                                                       "Metadata"))
            doc["metadata"].update(remaining)
            return _json_response(doc)
        return _json_response({"kind": target.rt.list_kind, "apiVersion": target.rt.api_version,
                               "metadata": {"resourceVersion": rv, **remaining},
                               "items": items})

    async def _create(self, request: web.Request, target: Target) -> web.Response:
        body = await self._read_object(request)
        result = self.api.create(target.rt, target.namespace, body,
                                 dry_run=self._dry_run(request),
                                 field_validation=_field_validation(request),
                                 manager=_manager(request))
        return _json_response(result.object, 201, result.warnings)

    async def _review(self, request: web.Request, target: Target) -> web.Response:
        """An access review: answered, never stored (POST to the collection only)."""
        if request.method != "POST" or target.name:
            raise method_not_allowed(f"{request.method} is not allowed on {target.rt.plural}: "
                                     "only create (POST to the collection)")
        result = self.api.decode(target.rt, await self._read_object(request),
                                 _field_validation(request))
        return _json_response(access_review.answer(target.rt, result.object), 201,
                              result.warnings)

    async def _delete(self, request: web.Request, target: Target) -> web.Response:
        options: Obj = {}
        raw = await request.read()
        if raw.strip():
            try:
                options = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise bad_request(f"DeleteOptions are not valid JSON: {exc.msg}") from None
            if not isinstance(options, dict):
                raise bad_request("DeleteOptions must be a JSON object")
        pre = options.get("preconditions") or {}
        grace = options.get("gracePeriodSeconds", _int(request, "gracePeriodSeconds"))
        obj = self.api.delete(
            target.rt, target.namespace, target.name,
            propagation=options.get("propagationPolicy") or request.query.get(
                "propagationPolicy"),
            grace_period=grace if isinstance(grace, int) else None,
            precondition_uid=pre.get("uid"), precondition_rv=pre.get("resourceVersion"),
            dry_run=self._dry_run(request) or options.get("dryRun") == ["All"])
        meta = obj.get("metadata", {})
        if target.rt.custom or target.rt.key in RETURNS_DELETED_OBJECT or meta.get(
                "deletionTimestamp"):
            return _json_response(obj)
        return _json_response({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": meta.get("name"), "group": target.rt.group,
                        "kind": target.rt.plural, "uid": meta.get("uid")}})

    def _delete_collection(self, request: web.Request, target: Target) -> web.Response:
        items, _ = self.api.list(target.rt, target.namespace or None,
                                 request.query.get("labelSelector"),
                                 request.query.get("fieldSelector"))
        deleted = []
        for item in items:
            meta = item["metadata"]
            with contextlib.suppress(ApiError):  # gone meanwhile: already what was asked
                deleted.append(self.api.delete(target.rt, meta.get("namespace", ""),
                                               meta["name"]))
        return _json_response({"kind": target.rt.list_kind, "apiVersion":
                               target.rt.api_version, "metadata": {}, "items": deleted})

    async def _scale(self, request: web.Request, target: Target) -> web.Response:
        rt = target.rt
        if request.method == "GET":
            return _json_response(self._scale_of(self.api.get(rt, target.namespace,
                                                              target.name)))
        if request.method not in ("PUT", "PATCH"):
            raise method_not_allowed(f"{request.method} is not allowed on {rt.plural}/scale")
        current = self.api.get(rt, target.namespace, target.name)
        if request.method == "PUT":
            scale = await self._read_object(request)
        else:
            scale = scale_patch(self._scale_of(current), request.content_type,
                                await request.read())
        replicas = (scale.get("spec") or {}).get("replicas") if isinstance(scale, dict) else None
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(422, "Invalid", f'Scale.autoscaling "{target.name}" is invalid: '
                           "spec.replicas: Invalid value: must be a non-negative integer")
        current["spec"]["replicas"] = replicas
        current["metadata"].pop("resourceVersion", None)
        result = self.api.update(rt, target.namespace, target.name, current)
        return _json_response(self._scale_of(result.object))

    @staticmethod
    def _scale_of(obj: Obj) -> Obj:
        meta = obj["metadata"]
        selector = obj.get("spec", {}).get("selector", {}).get("matchLabels", {})
        return {
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                                "creationTimestamp") if k in meta},
            "spec": {"replicas": obj.get("spec", {}).get("replicas", 0)},
            "status": {"replicas": obj.get("status", {}).get("replicas", 0),
                       "selector": ",".join(f"{k}={v}" for k, v in selector.items())},
        }

    async def _pod_log(self, request: web.Request, target: Target) -> web.StreamResponse:
        pod = self.api.get(target.rt, target.namespace, target.name)
        container = self._container(pod, request.query.get("container"), "logs")
        if self.pod_io is None:
            raise ApiError(503, "ServiceUnavailable", "no runtime is attached to this server")
        follow = _bool(request, "follow")
        stream = self.pod_io.log_stream(
            pod, container, follow=follow, tail_lines=_int(request, "tailLines"),
            previous=_bool(request, "previous"), since_seconds=_int(request, "sinceSeconds"),
            timestamps=_bool(request, "timestamps"))
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        async for chunk in stream:
            await response.write(chunk)
            if self.stopping.is_set():
                break
        await response.write_eof()
        return response

    async def _pod_exec(self, request: web.Request, target: Target) -> web.StreamResponse:
        pod = self.api.get(target.rt, target.namespace, target.name)
        container = self._container(pod, request.query.get("container"), "exec")
        command = request.query.getall("command", [])
        if not command:
            raise bad_request("you must specify at least one command for the container "
                              "(kubectl exec POD -- COMMAND)")
        if self.pod_io is None:
            raise ApiError(503, "ServiceUnavailable", "no runtime is attached to this server")
        return await self.pod_io.exec_websocket(request, pod, container, command,
                                                _bool(request, "stdin"), _bool(request, "tty"))

    async def _pod_portforward(self, request: web.Request, target: Target
                               ) -> web.StreamResponse:
        pod = self.api.get(target.rt, target.namespace, target.name)
        if self.pod_io is None:
            raise ApiError(503, "ServiceUnavailable", "no runtime is attached to this server")
        return await self.pod_io.portforward(request, pod)

    @staticmethod
    def _container(pod: Obj, requested: str | None, verb: str) -> str:
        names = [c.get("name", "") for c in pod.get("spec", {}).get("containers") or []]
        if requested:
            if requested not in names:
                raise bad_request(
                    f"container {requested} is not valid for pod {pod['metadata']['name']}: "
                    f"choose one of: [{' '.join(names)}]")
            return requested
        if not names:
            raise bad_request(f"pod {pod['metadata']['name']} has no containers")
        if len(names) > 1 and verb == "logs":
            default = pod["metadata"].get("annotations", {}).get(
                "kubectl.kubernetes.io/default-container")
            if default in names:
                return default
            raise bad_request(
                f"a container name must be specified for pod {pod['metadata']['name']}, "
                f"choose one of: [{' '.join(names)}]")
        return names[0]

    # -- watch -------------------------------------------------------------------------------
    async def _watch(self, request: web.Request, target: Target) -> web.StreamResponse:
        rt = target.rt
        matches = self.api.matcher(rt, request.query.get("labelSelector"),
                                   request.query.get("fieldSelector"))
        as_table = _wants_table(request)
        include = request.query.get("includeObject", "Metadata")
        timeout = _int(request, "timeoutSeconds") or WATCH_DEFAULT_TIMEOUT
        send_initial = _bool(request, "sendInitialEvents")
        rv_param = request.query.get("resourceVersion", "")
        namespace = target.namespace

        def visible(obj: Obj) -> bool:
            return (not rt.namespaced or not namespace
                    or obj["metadata"].get("namespace") == namespace) and matches(obj)

        def render(event_type: str, obj: Obj) -> bytes:
            obj = dict(obj, apiVersion=rt.api_version, kind=rt.kind)
            payload = (tables.table(rt, [obj], obj["metadata"].get("resourceVersion", ""),
                                    include) if as_table else obj)
            return json.dumps({"type": event_type, "object": payload},
                              separators=(",", ":")).encode() + b"\n"

        with self.api.store.subscribe(rt.key) as sub:
            initial: list[bytes] = []
            if send_initial or rv_param in ("", "0"):
                items, rv = self.api.list(rt, namespace or None,
                                          request.query.get("labelSelector"),
                                          request.query.get("fieldSelector"))
                initial = [render("ADDED", item) for item in items]
                start_rv = int(rv)
            else:
                try:
                    start_rv = int(rv_param)
                except ValueError:
                    raise bad_request(f"resourceVersion {rv_param!r} is not valid") from None
                history = self.api.store.history_since(rt.key, start_rv)
                if history is None:
                    raise ApiError(410, "Expired", f"too old resource version: {start_rv} "
                                   f"({self.api.store.rv})")
                initial = [render(e.type, e.object) for e in history if visible(e.object)]
            response = web.StreamResponse(headers={"Content-Type": "application/json",
                                                   "Transfer-Encoding": "chunked"})
            await response.prepare(request)
            for line in initial:
                await response.write(line)
            if send_initial:
                await response.write(_bookmark(rt, start_rv, initial_events_end=True))
            bookmarks = _bool(request, "allowWatchBookmarks")
            await self._stream_events(response, sub.queue, start_rv, visible, render, timeout,
                                      (lambda rv: _bookmark(rt, rv)) if bookmarks else None)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    async def _stream_events(self, response: web.StreamResponse, queue: asyncio.Queue[Event],
                             start_rv: int, visible: Any, render: Any, timeout: int,
                             bookmark: Callable[[int], bytes] | None) -> None:
        """Send matching events until the timeout; with bookmarks allowed, a BOOKMARK after
        each `bookmark_interval` without events, so clients can resume from a recent rv."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_sent = loop.time()
        while not self.stopping.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                event = await asyncio.wait_for(queue.get(), min(remaining, 1.0))
            except TimeoutError:
                if bookmark and queue.empty() and (
                        loop.time() - last_sent >= self.bookmark_interval):
                    if not await _write(response, bookmark(self.api.store.rv)):
                        return
                    last_sent = loop.time()
                continue
            if event.rv <= start_rv or not visible(event.object):
                continue
            if not await _write(response, render(event.type, event.object)):
                return
            last_sent = loop.time()
