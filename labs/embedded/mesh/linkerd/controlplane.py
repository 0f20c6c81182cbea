"""Linkerd's control plane on the embedded cluster: linkerd-destination and linkerd-identity.

It watches pods, services, endpoints and Linkerd's identity objects; every change (after a
short debounce folding a burst into one pass) takes a `LinkerdState` snapshot, gives each
`linkerd-proxy` the runtime has started a certificate signed by the issuer in
`linkerd/linkerd-identity-issuer` (SDS files, before anything refers to them; the proxy
verifies peers with the trust anchors injection fixed in its LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS,
and one whose anchors did not sign the issuer stays unconfigured and unready, as linkerd2-proxy
does) and then its clusters, routes and listeners (xds.py; file-based xDS, only files whose
content changed). A
periodic check renews certificates at half their life, and a changed issuer or trust-roots
object reissues every certificate. The real control plane streams this over gRPC (the proxy
sends a CSR with its ServiceAccount token to linkerd-identity, asks linkerd-destination per
authority); here it is written to files, which Envoy reads.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...apiserver.api import ObjectApi
from ...apiserver.store import Event
from ...paths import pods_dir
from ...workload import LINKERD_PROXY_CONTAINER, pod_dir_name, proxy_started
from ..ca import WorkloadCert, default_ttl, needs_rotation
from ..kube_state import fingerprint, service_account
from ..proxyfiles import ProxyFiles
from ..writer import XdsWriter
from .identity import (
    ISSUER_SECRET,
    NAMESPACE,
    TRUST_ROOTS_CONFIGMAP,
    IdentityError,
    LinkerdIssuer,
)
from .routing_status import RoutingWriter
from .state import TRUST_ANCHORS_ENV, LinkerdState, proxy_env
from .xds import build_proxy

log = logging.getLogger(__name__)
Obj = dict[str, Any]
DEBOUNCE = 0.015  # seconds, as Istio's control plane: folds a burst of changes into one pass
KINDS = {"namespaces": ("", "v1", "namespaces"), "services": ("", "v1", "services"),
         "endpoints": ("", "v1", "endpoints"), "pods": ("", "v1", "pods"),
         # inbound policy (policy.py), each kind at its CRD's storage version
         "servers": ("policy.linkerd.io", "v1beta3", "servers"),
         "server_authorizations": ("policy.linkerd.io", "v1beta1", "serverauthorizations"),
         "authorization_policies": ("policy.linkerd.io", "v1alpha1", "authorizationpolicies"),
         "meshtls_authentications": ("policy.linkerd.io", "v1alpha1",
                                     "meshtlsauthentications"),
         "network_authentications": ("policy.linkerd.io", "v1alpha1",
                                     "networkauthentications"),
         "linkerd_http_routes": ("policy.linkerd.io", "v1beta3", "httproutes"),
         "gateway_http_routes": ("gateway.networking.k8s.io", "v1", "httproutes"),
         # outbound routing (routing.py)
         "service_profiles": ("linkerd.io", "v1alpha2", "serviceprofiles"),
         "traffic_splits": ("split.smi-spec.io", "v1alpha1", "trafficsplits")}
KEYS = frozenset(f"{group}/{plural}" for group, _, plural in KINDS.values())
IDENTITY_OBJECTS = {("/configmaps", NAMESPACE, TRUST_ROOTS_CONFIGMAP),
                    ("/secrets", NAMESPACE, ISSUER_SECRET)}


def proxy_xds_dir(pods: Path, pod: Obj) -> Path:
    """Where a pod's `linkerd-proxy` reads its configuration: its container directory's `xds`."""
    return pods / pod_dir_name(pod) / LINKERD_PROXY_CONTAINER / "xds"


def snapshot(api: ObjectApi) -> LinkerdState:
    lists: dict[str, list[Obj]] = {}
    for attribute, (group, version, plural) in KINDS.items():
        rt = api.registry.lookup(group, version, plural)
        # a kind whose CRD is not registered (an API without the course CRDs) has no objects
        lists[attribute] = api.list(rt, None)[0] if rt is not None else []
    configmaps = api.registry.lookup("", "v1", "configmaps")
    secrets = api.registry.lookup("", "v1", "secrets")
    assert configmaps is not None and secrets is not None
    return LinkerdState(**lists,
                        trust_roots=api.find(configmaps, NAMESPACE, TRUST_ROOTS_CONFIGMAP),
                        issuer=api.find(secrets, NAMESPACE, ISSUER_SECRET))


class LinkerdControlPlane:
    """Programs every `linkerd-proxy` from the cluster's objects."""

    def __init__(self, api: ObjectApi, state_dir: Path, telemetry_port: int = 0, *,
                 debounce: float = DEBOUNCE) -> None:
        self.api = api
        self.pods_dir = pods_dir(state_dir)
        self.telemetry_port = telemetry_port  # 0: no telemetry server, no proxy `/metrics`
        self.debounce = debounce
        # Called with each pass's snapshot (the proxies' metrics name destinations from it).
        self.observers: list[Callable[[LinkerdState], None]] = []
        self.cert_ttl = default_ttl()
        self.writer = XdsWriter()
        self.routing = RoutingWriter(api)  # HTTPRoute status, linkerd-smi's ServiceProfiles
        self.passes = 0
        self.last_pass_ms = 0.0
        self._issuer: LinkerdIssuer | None = None
        self._issuer_source: tuple[str, str] | None = None  # the objects it was read from
        self._certs: dict[str, WorkloadCert] = {}  # pod uid -> the certificate its SDS holds
        self._proxies: dict[str, ProxyFiles] = {}  # pod uid -> files, for proxies configured
        self._fingerprints: dict[tuple[str, str, str], str] = {}
        self._logged: set[str] = set()
        self._trusted: dict[str, bool] = {}  # trust anchors PEM -> it signed the issuer

    async def run(self) -> None:
        """Until cancelled: a full pass, then one pass per debounced burst of changes, and
        certificate renewal at half life."""
        interval = min(60.0, max(0.5, self.cert_ttl.total_seconds() / 20))
        with self.api.store.subscribe(None) as sub:
            self.sync()
            next_check = time.monotonic() + interval
            while True:
                changed = False
                try:
                    async with asyncio.timeout(max(0.0, next_check - time.monotonic())):
                        changed = self._note(await sub.queue.get())
                except TimeoutError:
                    pass
                if changed:
                    await asyncio.sleep(self.debounce)
                    while not sub.queue.empty():
                        self._note(sub.queue.get_nowait())
                    self.sync()
                if time.monotonic() >= next_check:
                    self.sync(renew=True)
                    next_check = time.monotonic() + interval

    def _note(self, event: Event) -> bool:
        """Whether the event can change a proxy's configuration or certificate."""
        meta = event.object["metadata"]
        ident = (event.key, meta.get("namespace", ""), meta["name"])
        if event.key not in KEYS and ident not in IDENTITY_OBJECTS:
            return False
        if event.type == "DELETED":
            self._fingerprints.pop(ident, None)
            return True
        current = fingerprint(event.object)
        if self._fingerprints.get(ident) == current:
            return False
        self._fingerprints[ident] = current
        return True

    def sync(self, renew: bool = False) -> LinkerdState:
        """One pass over every Linkerd proxy; `renew` also reissues certificates past half
        their life (a pass after a change issues only missing ones)."""
        started = time.perf_counter()
        state = snapshot(self.api)
        issuer = self._load_issuer(state)
        live: dict[str, ProxyFiles] = {}
        written = 0
        for pod in state.proxy_pods():
            if not proxy_started(pod):
                continue
            meta = pod["metadata"]
            files = ProxyFiles(proxy_xds_dir(self.pods_dir, pod))
            live[meta["uid"]] = files
            name = f"linkerd-proxy {meta.get('namespace')}/{meta['name']}"
            try:
                if issuer is None:
                    continue  # no certificate, so no configuration: the proxy stays unready
                anchors = proxy_env(pod, TRUST_ANCHORS_ENV) or issuer.root_pem
                if not self._trusts(issuer, anchors):
                    self._log_once(
                        f"{name}: its trust anchors ({TRUST_ANCHORS_ENV}, fixed at injection) "
                        f"did not sign the issuer in {NAMESPACE}/{ISSUER_SECRET}, so it cannot "
                        "verify its own certificate and stays unready, as linkerd2-proxy "
                        "would: inject it again (`kubectl rollout restart`)", logging.ERROR)
                    continue
                self._ensure_cert(issuer, pod, files, renew, anchors)
                resources = build_proxy(state, pod, files, self.telemetry_port)
                for _, problem in resources.warnings:
                    self._log_once(f"{name}: {problem}", logging.WARNING)
                written += len(self.writer.write(files, resources))
            except Exception as exc:
                self._log_once(f"could not configure {name}: {exc!r}", logging.ERROR)
        for uid in self._proxies.keys() - live.keys():
            self.writer.forget(self._proxies[uid])
            self._certs.pop(uid, None)
        self._proxies = live
        try:
            if state.trust_roots is not None:  # Linkerd is installed: its controllers run
                self.routing.write(state)
        except Exception:
            log.exception("writing Linkerd's HTTPRoute status and SMI ServiceProfiles failed")
        for observe in self.observers:
            try:
                observe(state)
            except Exception:
                log.exception("a Linkerd control-plane observer failed")
        self.passes += 1
        self.last_pass_ms = (time.perf_counter() - started) * 1000
        log.log(logging.INFO if written else logging.DEBUG,
                "linkerd pass: %d proxies, %d files written in %.1f ms",
                len(live), written, self.last_pass_ms)
        return state

    def _log_once(self, message: str, level: int) -> None:
        if message not in self._logged:
            self._logged.add(message)
            log.log(level, "%s", message)

    def _load_issuer(self, state: LinkerdState) -> LinkerdIssuer | None:
        """The issuer from the Secret and ConfigMap, read again when either changes; a new
        issuer reissues every proxy's certificate."""
        source = (fingerprint(state.trust_roots or {}), fingerprint(state.issuer or {}))
        if source == self._issuer_source:
            return self._issuer
        self._issuer_source = source
        try:
            self._issuer = LinkerdIssuer.from_objects(state.trust_roots, state.issuer)
        except IdentityError as err:
            self._issuer = None
            if state.proxy_pods():
                log.error("Linkerd identity: %s", err)
        self._certs.clear()
        self._trusted.clear()
        return self._issuer

    def _trusts(self, issuer: LinkerdIssuer, anchors: str) -> bool:
        if anchors not in self._trusted:
            self._trusted[anchors] = issuer.trusted_by(anchors)
        return self._trusted[anchors]

    def _ensure_cert(self, issuer: LinkerdIssuer, pod: Obj, files: ProxyFiles,
                     renew: bool, anchors: str) -> None:
        """Issue the pod's certificate at first sight (or when due), before any xDS file
        refers to it."""
        uid = pod["metadata"]["uid"]
        cert = self._certs.get(uid)
        if cert is not None and not (renew and needs_rotation(cert, dt.datetime.now(dt.UTC))):
            return
        cert = issuer.issue(pod["metadata"].get("namespace", ""), service_account(pod),
                            self.cert_ttl)
        issuer.write_sds(files, cert, anchors)
        self._certs[uid] = cert
