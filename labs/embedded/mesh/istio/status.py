"""Tells learners, on the object itself, what the embedded mesh does not emulate.

A real Istio applies every field of a VirtualService; the embedded mesh programs Envoy for most
of them. Whatever it cannot honour (a field, or a whole kind) is reported twice, so it is never
silently ignored: a `Reconciled` status condition on the object (`kubectl get vs X -o yaml`,
`kubectl wait --for=condition=Reconciled`) and a Warning event (`kubectl describe`, `kubectl get
events`), the event once per object generation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...apiserver.api import ObjectApi
from ...apiserver.errors import ApiError
from ...apiserver.objects import now
from .xds.authorization import authz_unsupported_fields
from .xds.gateway import gateway_unsupported_fields
from .xds.jwt import ra_unsupported_fields
from .xds.peer_authentication import pa_unsupported_fields
from .xds.telemetry_api import telemetry_unsupported_fields
from .xds.unsupported import unsupported_fields

log = logging.getLogger(__name__)
Obj = dict[str, Any]
CONDITION = "Reconciled"
COMPONENT = "meshlab-mesh"


@dataclass(frozen=True)
class ReportedKind:
    """An Istio kind whose objects get a `Reconciled` condition."""

    group: str
    version: str
    plural: str
    kind: str
    # The fields of one object the mesh does not emulate; None: the whole kind is not emulated.
    check: Callable[[Obj], list[str]] | None
    why: str = ""  # for kinds not emulated: what to do instead

    @property
    def key(self) -> str:
        return f"{self.group}/{self.plural}"


NETWORKING, SECURITY = "networking.istio.io", "security.istio.io"


def vs_unsupported_fields(vs: Obj) -> list[str]:
    """A VirtualService's fields not emulated; binding it to Gateways is (the ingress gateway)."""
    return [f for f in unsupported_fields(vs) if ".gateways=" not in f
            and not f.startswith("spec.gateways=")]


REPORTED_KINDS: tuple[ReportedKind, ...] = (
    ReportedKind(NETWORKING, "v1", "virtualservices", "VirtualService", vs_unsupported_fields),
    ReportedKind(NETWORKING, "v1", "destinationrules", "DestinationRule", unsupported_fields),
    ReportedKind(NETWORKING, "v1", "serviceentries", "ServiceEntry", unsupported_fields),
    ReportedKind(SECURITY, "v1", "peerauthentications", "PeerAuthentication",
                 pa_unsupported_fields),
    ReportedKind(NETWORKING, "v1", "gateways", "Gateway", gateway_unsupported_fields),
    ReportedKind(NETWORKING, "v1", "sidecars", "Sidecar", None,
                 "every sidecar sees every service of the mesh"),
    ReportedKind(NETWORKING, "v1", "workloadentries", "WorkloadEntry", None,
                 "only pods are workloads in the embedded cluster"),
    ReportedKind(SECURITY, "v1", "authorizationpolicies", "AuthorizationPolicy",
                 authz_unsupported_fields),
    ReportedKind(SECURITY, "v1", "requestauthentications", "RequestAuthentication",
                 ra_unsupported_fields),
    ReportedKind("telemetry.istio.io", "v1", "telemetries", "Telemetry",
                 telemetry_unsupported_fields),
)
REPORTED_KEYS = frozenset(k.key for k in REPORTED_KINDS)


def not_emulated(kind: ReportedKind, obj: Obj) -> list[str]:
    """What of `obj` the mesh does not emulate: field paths, or the kind itself."""
    if kind.check is None:
        return [f"{kind.kind} resources ({kind.why})"]
    return list(kind.check(obj))


def condition_for(missing: list[str], warnings: list[str], generation: int) -> Obj:
    """The `Reconciled` condition: False when a field is not emulated (NotEmulated) or the
    object cannot take effect as written (NotApplied, e.g. its host matches no service)."""
    parts = []
    if missing:
        parts.append("the embedded mesh does not emulate: " + ", ".join(missing)
                     + " (Istio applies these; here they have no effect)")
    parts += warnings
    if missing:
        status, reason = "False", "NotEmulated"
    elif warnings:
        status, reason = "False", "NotApplied"
    else:
        status, reason = "True", "Emulated"
    message = "; ".join(parts) or "the embedded mesh applies every field of this object"
    return {"type": CONDITION, "status": status, "reason": reason, "message": message,
            "observedGeneration": generation}


def _current_condition(obj: Obj) -> Obj | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == CONDITION:
            return cond
    return None


def _same(cond: Obj | None, wanted: Obj) -> bool:
    return cond is not None and all(cond.get(k) == v for k, v in wanted.items())


class StatusReporter:
    """Keeps each reported object's `Reconciled` condition in line with the mesh: its own
    fields, and the mesh-wide warnings about it (which change as other objects come and go)."""

    def __init__(self, api: ObjectApi, kinds: tuple[ReportedKind, ...] = REPORTED_KINDS) -> None:
        self.api = api
        self.kinds = kinds
        self._warned: set[tuple[str, int, str]] = set()  # (uid, generation, message) evented

    def reconcile(self, warnings: list[tuple[Obj, str]]) -> int:
        """Bring every reported object's condition up to date; `warnings` are (object, message)
        pairs from the builders' diagnostics. Returns how many objects were updated."""
        by_uid: dict[str, list[str]] = {}
        for obj, message in warnings:
            said = by_uid.setdefault(obj["metadata"].get("uid", ""), [])
            if message not in said:  # e.g. from each replica of a gateway
                said.append(message)
        live: set[str] = set()
        updated = 0
        for kind in self.kinds:
            rt = self.api.registry.lookup(kind.group, kind.version, kind.plural)
            if rt is None:  # its CRD was deleted
                continue
            for obj in self.api.list(rt, None)[0]:
                live.add(obj["metadata"]["uid"])
                updated += self._report(rt, kind, obj, by_uid.get(obj["metadata"]["uid"], []))
        self._warned = {entry for entry in self._warned if entry[0] in live}
        return updated

    def _report(self, rt: Any, kind: ReportedKind, obj: Obj, warnings: list[str]) -> int:
        meta = obj["metadata"]
        if meta.get("deletionTimestamp"):
            return 0
        generation = int(meta.get("generation") or 1)
        missing = not_emulated(kind, obj)
        wanted = condition_for(missing, warnings, generation)
        current = _current_condition(obj)
        noted = (meta["uid"], generation, wanted["message"])
        if wanted["status"] == "True" and (current is None or current.get("status") == "True"):
            # Nothing to report. Istio writes no status by default either, and a status write
            # would bump the resourceVersion under a learner's read-modify-write (a 409 on
            # `replace`); a False condition is still turned True once the problem is fixed.
            return 0
        if _same(current, wanted):  # up to date (perhaps written by a previous daemon run)
            self._warned.add(noted)
            return 0
        status = dict(obj.get("status") or {})
        others = [c for c in status.get("conditions") or [] if c.get("type") != CONDITION]
        flipped = current is None or current.get("status") != wanted["status"]
        wanted["lastTransitionTime"] = now() if flipped or current is None else current.get(
            "lastTransitionTime", now())
        status["conditions"] = [*others, wanted]
        status["observedGeneration"] = generation
        try:
            self.api.update(rt, meta.get("namespace", ""), meta["name"],
                            {**obj, "status": status}, subresource="status", validate=False)
        except ApiError as err:  # deleted meanwhile: the next pass sees it gone
            log.debug("status of %s %s not written: %s", kind.kind, meta["name"], err.message)
            return 0
        if wanted["status"] == "False" and noted not in self._warned:
            self._warned.add(noted)
            self.api.record_event(obj, "Warning", wanted["reason"], wanted["message"], COMPONENT)
        return 1
