"""The mesh control plane: watches the API and writes every proxy's configuration to files.

It plays istiod's part. Every change to a pod, service, endpoint, namespace, Istio, Ingress or
Gateway API object triggers a pass (after a short debounce that folds a burst — one `kubectl
apply -f` of many objects — into one): take a `MeshState` snapshot (Ingresses and Gateway API
objects translated into Istio Gateways and VirtualServices, as istiod does), give each sidecar
and gateway proxy that the runtime has started a certificate (SDS files, before anything refers
to them) and its clusters, routes and listeners (file-based xDS, only files whose content
changed), program the node forwarder the same way, publish the mesh root in every namespace,
and report what is not emulated on the objects themselves. A periodic check rotates
certificates at half their lifetime.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from labs.istio_names import SIDECAR_CONTAINER

from ...apiserver.api import ObjectApi
from ...apiserver.errors import ApiError
from ...apiserver.store import Event
from ...paths import pods_dir, write_private
from ...workload import pod_dir_name, proxy_started
from ..ca import MeshCA, WorkloadCert, default_ttl, needs_rotation
from ..kube_state import fingerprint, service_account
from ..proxyfiles import EnvoyResources, ProxyFiles
from ..writer import XdsWriter
from .derived import Derived, translate
from .gateway_deploy import ensure_deployments
from .kube_status import KubeStatusWriter
from .meshconfig import (
    MESH_CONFIGMAP,
    ensure_mesh_configmap,
    parse_mesh_config,
    upgrade_earlier_default,
)
from .state import MeshState
from .status import REPORTED_KEYS, StatusReporter
from .xds.authorization import build_rbac_filters
from .xds.clusters import build_outbound
from .xds.diagnostics import ObjectWarning, outbound_warnings
from .xds.ext_authz import build_ext_authz, custom_warnings
from .xds.forwarder_config import build_forwarder, build_forwarder_routes
from .xds.gateway import build_gateway, credential_sds, credential_sds_text, gateway_credentials
from .xds.jwt import build_jwt_filter, jwks_clusters, jwks_warnings
from .xds.listeners import build_inbound_clusters, build_sidecar_listeners
from .xds.observability import telemetry_clusters

log = logging.getLogger(__name__)
Obj = dict[str, Any]
DEBOUNCE = 0.015  # seconds: folds a burst of changes into one pass
ROOT_CERT_CONFIGMAP = "istio-ca-root-cert"

# MeshState attribute -> (group, version, plural) of the objects it holds.
STATE_KINDS: dict[str, tuple[str, str, str]] = {
    "namespaces": ("", "v1", "namespaces"),
    "services": ("", "v1", "services"),
    "endpoints": ("", "v1", "endpoints"),
    "pods": ("", "v1", "pods"),
    "virtual_services": ("networking.istio.io", "v1", "virtualservices"),
    "destination_rules": ("networking.istio.io", "v1", "destinationrules"),
    "service_entries": ("networking.istio.io", "v1", "serviceentries"),
    "gateways": ("networking.istio.io", "v1", "gateways"),
    "peer_authentications": ("security.istio.io", "v1", "peerauthentications"),
    "authorization_policies": ("security.istio.io", "v1", "authorizationpolicies"),
    "request_authentications": ("security.istio.io", "v1", "requestauthentications"),
    "telemetries": ("telemetry.istio.io", "v1", "telemetries"),
    "ingresses": ("networking.k8s.io", "v1", "ingresses"),
    "ingress_classes": ("networking.k8s.io", "v1", "ingressclasses"),
    "gateway_classes": ("gateway.networking.k8s.io", "v1", "gatewayclasses"),
    "kube_gateways": ("gateway.networking.k8s.io", "v1", "gateways"),
    "http_routes": ("gateway.networking.k8s.io", "v1", "httproutes"),
    "reference_grants": ("gateway.networking.k8s.io", "v1beta1", "referencegrants"),
}
STATE_KEYS = frozenset(f"{group}/{plural}" for group, _, plural in STATE_KINDS.values())
CONFIGMAPS = "/configmaps"
SECRETS = "/secrets"  # the ingress gateway's TLS certificates (credentialName)
# What the Istio objects' status depends on: themselves, and the hosts they can refer to.
STATUS_INPUTS = REPORTED_KEYS | {"/services", "/namespaces", CONFIGMAPS}
# What Ingress and Gateway API status (and the Gateways' deployments) depend on.
KUBE_STATUS_INPUTS = frozenset(f"{STATE_KINDS[k][0]}/{STATE_KINDS[k][2]}" for k in (
    "ingresses", "ingress_classes", "gateway_classes", "kube_gateways", "http_routes",
    "reference_grants")) | {"/services", "/namespaces", SECRETS}


class Forwarder(Protocol):
    """What the control plane needs of the node forwarder (labs.embedded.mesh.forwarder)."""

    port: int

    @property
    def files(self) -> ProxyFiles: ...


def snapshot(api: ObjectApi) -> MeshState:
    """Every object a pass reads, listed once (kinds whose CRD is gone read as empty)."""
    lists: dict[str, list[Obj]] = {}
    for attribute, (group, version, plural) in STATE_KINDS.items():
        rt = api.registry.lookup(group, version, plural)
        lists[attribute] = api.list(rt, None)[0] if rt is not None else []
    configmaps = api.registry.lookup("", "v1", "configmaps")
    assert configmaps is not None
    mesh_config, error = parse_mesh_config(api.find(configmaps, *MESH_CONFIGMAP))
    return MeshState(**lists, mesh_config=mesh_config, mesh_config_error=error)


def sidecar_xds_dir(pods_dir: Path, pod: Obj) -> Path:
    """The xDS directory of a pod's sidecar: in the pod's folder (labs.embedded.workload
    .pod_dir_name), its container `istio-proxy`'s directory, `xds`."""
    return pods_dir / pod_dir_name(pod) / SIDECAR_CONTAINER / "xds"


def rotation_check_interval(ttl: dt.timedelta) -> float:
    """How often to look for certificates past half life: often enough for a short test TTL,
    at most once a minute for the default day."""
    return min(60.0, max(0.5, ttl.total_seconds() / 20))


class MeshControlPlane:
    """Programs every sidecar and the node forwarder from the cluster's objects."""

    def __init__(self, api: ObjectApi, state_dir: Path, telemetry_port: int,
                 forwarder: Forwarder | None = None, *, debounce: float = DEBOUNCE) -> None:
        self.api = api
        self.pods_dir = pods_dir(state_dir)
        self.telemetry_port = telemetry_port
        self.forwarder = forwarder
        self.debounce = debounce
        self.ca = MeshCA.load_or_create(Path(state_dir) / "mesh-ca")
        self.cert_ttl = default_ttl()
        self.writer = XdsWriter()
        self.status = StatusReporter(api)
        self.kube_status = KubeStatusWriter(api)
        # Called with each pass's snapshot (Prometheus targets, telemetry labels).
        self.observers: list[Callable[[MeshState], None]] = []
        self.last_pass_ms = 0.0
        self.passes = 0
        self._certs: dict[str, WorkloadCert] = {}  # pod uid -> the certificate its SDS files hold
        self._proxies: dict[str, ProxyFiles] = {}  # pod uid -> files, for proxies configured
        self._fingerprints: dict[tuple[str, str, str], str] = {}
        self._logged_failures: set[str] = set()
        # The builders' problems with objects in this pass (e.g. a Gateway's credentialName
        # without a Secret), for the objects' status; and those last reported, since they can
        # change with kinds that are no status input (a Secret created, a pod's ports).
        self._build_warnings: list[ObjectWarning] = []
        self._reported_build_warnings: frozenset[tuple[str, str]] = frozenset()

    # -- the loop -------------------------------------------------------------------------
    async def run(self) -> None:
        """Until cancelled: a full pass, then one pass per debounced burst of changes."""
        interval = rotation_check_interval(self.cert_ttl)
        with self.api.store.subscribe(None) as sub:
            upgrade_earlier_default(self.api)
            self.sync(None)
            next_check = time.monotonic() + interval
            while True:
                changed: set[str] = set()
                try:  # asyncio.timeout, unlike wait_for on 3.11, never swallows a cancel
                    async with asyncio.timeout(max(0.0, next_check - time.monotonic())):
                        self._note(await sub.queue.get(), changed)
                except TimeoutError:
                    pass
                if changed:
                    await asyncio.sleep(self.debounce)
                    while not sub.queue.empty():
                        self._note(sub.queue.get_nowait(), changed)
                    self.sync(changed)
                if time.monotonic() >= next_check:
                    self.rotate_due()
                    next_check = time.monotonic() + interval

    def _note(self, event: Event, changed: set[str]) -> None:
        """Add the event's resource to `changed` when it matters to a pass."""
        key = event.key
        meta = event.object["metadata"]
        if key not in STATE_KEYS and key not in REPORTED_KEYS and key != SECRETS and not (
                key == CONFIGMAPS and (meta["name"] == ROOT_CERT_CONFIGMAP or (
                    meta.get("namespace"), meta["name"]) == MESH_CONFIGMAP)):
            return
        ident = (key, meta.get("namespace", ""), meta["name"])
        if event.type == "DELETED":
            self._fingerprints.pop(ident, None)
            changed.add(key)
            return
        current = fingerprint(event.object)
        if self._fingerprints.get(ident) != current:
            self._fingerprints[ident] = current
            changed.add(key)

    # -- one pass -------------------------------------------------------------------------
    def sync(self, changed: set[str] | None) -> MeshState:
        """One pass over the whole mesh; `changed` (resource keys) narrows the status and
        root-certificate work, None does everything."""
        started = time.perf_counter()
        state, derived = translate(snapshot(self.api), self._secret_names())
        self._build_warnings = []
        written = self._program_sidecars(state)
        if self.forwarder is not None:
            written += self._program(
                "node forwarder", self.forwarder.files, lambda: self._forwarder_resources(state))
        # After the proxies, so that reporting never delays traffic following a change.
        build_warnings = frozenset((obj["metadata"].get("uid", ""), message)
                                   for obj, message in self._build_warnings)
        if (changed is None or changed & STATUS_INPUTS
                or build_warnings != self._reported_build_warnings):
            self._reported_build_warnings = build_warnings
            self._report_status(state)
        if changed is None or changed & KUBE_STATUS_INPUTS:
            self._report_kube_status(state, derived)
        if changed is None or changed & {"/namespaces", CONFIGMAPS}:
            self.publish_root_cert(state)
            ensure_mesh_configmap(self.api)
        for observe in self.observers:
            try:
                observe(state)
            except Exception:
                log.exception("a mesh observer failed")
        self.passes += 1
        self.last_pass_ms = (time.perf_counter() - started) * 1000
        level = logging.INFO if written else logging.DEBUG
        log.log(level, "mesh pass: %d proxies, %d files written in %.1f ms",
                len(self._proxies), written, self.last_pass_ms)
        return state

    def _report_status(self, state: MeshState) -> None:
        try:
            self.status.reconcile([*outbound_warnings(state), *custom_warnings(state),
                                   *jwks_warnings(state), *self._build_warnings])
        except Exception:
            log.exception("reporting the status of Istio objects failed")

    def _report_kube_status(self, state: MeshState, derived: Derived) -> None:
        """Deploy the Gateways' proxies, then write Ingress / Gateway API status."""
        try:
            ensure_deployments(self.api, derived.gateway_api.listeners)
            self.kube_status.reconcile(derived.gateway_api, derived.ingresses,
                                       derived.ingress_warnings)
        except Exception:
            log.exception("reporting the status of Ingress / Gateway API objects failed")

    def _secret_names(self) -> set[tuple[str, str]]:
        rt = self.api.registry.lookup("", "v1", "secrets")
        assert rt is not None
        return {(s["metadata"].get("namespace", ""), s["metadata"]["name"])
                for s in self.api.list(rt, None)[0]}

    def _program_sidecars(self, state: MeshState) -> int:
        written = 0
        live: dict[str, ProxyFiles] = {}
        gateways = state.gateway_pods()
        for pod in [*state.sidecar_pods(), *gateways]:
            if not proxy_started(pod):
                continue
            meta = pod["metadata"]
            files = ProxyFiles(sidecar_xds_dir(self.pods_dir, pod))
            live[meta["uid"]] = files
            gateway = pod in gateways
            name = f"{'gateway' if gateway else 'sidecar'} {meta.get('namespace')}/{meta['name']}"
            build = self._gateway_resources if gateway else self._sidecar_resources
            written += self._program(name, files, lambda p=pod, f=files, b=build: b(state, p, f))
        for uid in self._proxies.keys() - live.keys():
            self.writer.forget(self._proxies[uid])
            self._certs.pop(uid, None)
        self._proxies = live
        return written

    def _program(self, name: str, files: ProxyFiles,
                 build: Callable[[], EnvoyResources]) -> int:
        """Build and write one proxy's files; a failure is logged once and leaves that proxy
        on its last good configuration, while the others are still programmed."""
        try:
            resources = build()
            self._build_warnings += resources.warnings
            written = len(self.writer.write(files, resources))
        except Exception as exc:
            message = f"{name}: {exc!r}"
            if message not in self._logged_failures:
                self._logged_failures.add(message)
                log.exception("could not configure %s", name)
            return 0
        return written

    def _sidecar_resources(self, state: MeshState, pod: Obj, files: ProxyFiles) -> EnvoyResources:
        self._ensure_cert(pod, files)
        clusters, route_configs = build_outbound(state, pod, files)
        custom_filters, custom_clusters = build_ext_authz(state, pod)
        own = {c["name"]: c for c in [*custom_clusters, *jwks_clusters(state, pod)]}
        clusters = [*clusters, *build_inbound_clusters(state, pod),
                    *telemetry_clusters(self.telemetry_port), *own.values()]
        # jwt_authn first: the RBAC filters read the payload it validated. Then Istio's order:
        # CUSTOM (ext-authz), DENY, ALLOW.
        inbound_filters = [*build_jwt_filter(state, pod), *custom_filters,
                           *build_rbac_filters(state, pod)]
        listeners = build_sidecar_listeners(state, pod, files, self.telemetry_port,
                                            inbound_http_filters=inbound_filters)
        return EnvoyResources(listeners=listeners, clusters=clusters,
                              route_configs=route_configs)

    def _gateway_resources(self, state: MeshState, pod: Obj, files: ProxyFiles) -> EnvoyResources:
        self._ensure_cert(pod, files)
        credentials = self._write_credentials(state, pod, files)
        return build_gateway(state, pod, files, self.telemetry_port, credentials)

    def _write_credentials(self, state: MeshState, pod: Obj, files: ProxyFiles) -> list[str]:
        """The SDS files of the gateway's TLS certificates (Gateway `credentialName`: a
        kubernetes.io/tls Secret in the gateway's namespace), before any listener refers to
        them; returns the names written. A missing or broken Secret is logged once."""
        rt = self.api.registry.lookup("", "v1", "secrets")
        assert rt is not None
        namespace = pod["metadata"].get("namespace", "")
        written = []
        for name in gateway_credentials(state, pod):
            secret = self.api.find(rt, namespace, name)
            try:
                if secret is None:
                    raise ValueError(f"Secret {namespace}/{name} (a Gateway's credentialName) "
                                     "does not exist: create it with `kubectl create secret "
                                     f"tls {name} -n {namespace} --cert=... --key=...`")
                text = credential_sds_text(secret)
            except ValueError as err:
                if str(err) not in self._logged_failures:
                    self._logged_failures.add(str(err))
                    log.warning("%s", err)
                continue
            path = credential_sds(files, name)
            if not path.exists() or path.read_text() != text:
                write_private(path, text)
            written.append(name)
        return written

    def _forwarder_resources(self, state: MeshState) -> EnvoyResources:
        assert self.forwarder is not None
        files = self.forwarder.files
        clusters, _ = build_outbound(state, None, None)
        return EnvoyResources(listeners=build_forwarder(state, self.forwarder.port, files),
                              clusters=clusters, route_configs=build_forwarder_routes(state))

    # -- certificates -------------------------------------------------------------------------
    def _ensure_cert(self, pod: Obj, files: ProxyFiles) -> None:
        """Issue the pod's certificate at first sight, before any xDS file refers to it."""
        uid = pod["metadata"]["uid"]
        cert = self._certs.get(uid)
        if cert is None or needs_rotation(cert, dt.datetime.now(dt.UTC)):
            self._issue(pod, files)

    def _issue(self, pod: Obj, files: ProxyFiles) -> None:
        meta = pod["metadata"]
        cert = self.ca.issue(meta.get("namespace", ""), service_account(pod), self.cert_ttl)
        self.ca.write_sds(files, cert)
        self._certs[meta["uid"]] = cert

    def rotate_due(self) -> int:
        """Reissue every certificate past half its lifetime (the SDS files are rewritten
        atomically; Envoy swaps the secret without dropping connections)."""
        moment = dt.datetime.now(dt.UTC)
        state_pods = {p["metadata"]["uid"]: p for p in snapshot_pods(self.api)}
        rotated = 0
        for uid, files in list(self._proxies.items()):
            pod = state_pods.get(uid)
            cert = self._certs.get(uid)
            if pod is None or (cert is not None and not needs_rotation(cert, moment)):
                continue
            try:
                self._issue(pod, files)
            except OSError as exc:
                log.error("could not rotate the certificate of %s/%s: %s",
                          pod["metadata"].get("namespace"), pod["metadata"]["name"], exc)
                continue
            rotated += 1
        if rotated:
            log.info("rotated %d workload certificates", rotated)
        return rotated

    # -- the root certificate in every namespace ------------------------------------------
    def publish_root_cert(self, state: MeshState) -> None:
        """Keep `istio-ca-root-cert` in every namespace, as istiod does."""
        rt = self.api.registry.lookup("", "v1", "configmaps")
        assert rt is not None
        for ns in state.namespaces:
            meta = ns["metadata"]
            if meta.get("deletionTimestamp"):
                continue
            wanted = self.ca.root_configmap(meta["name"])
            existing = self.api.find(rt, meta["name"], ROOT_CERT_CONFIGMAP)
            if existing is not None and existing.get("data") == wanted.get("data"):
                continue
            try:
                if existing is None:
                    self.api.create(rt, meta["name"], wanted, validate=False)
                else:
                    self.api.update(rt, meta["name"], ROOT_CERT_CONFIGMAP,
                                    {**existing, "data": wanted["data"]}, validate=False)
            except ApiError as err:  # e.g. the namespace started terminating meanwhile
                log.debug("root certificate not published in %s: %s", meta["name"], err.message)


def snapshot_pods(api: ObjectApi) -> list[Obj]:
    rt = api.registry.lookup("", "v1", "pods")
    assert rt is not None
    return api.list(rt, None)[0]
