"""The mTLS mode a sidecar's inbound port enforces, resolved from PeerAuthentications like Istio.

Istio picks at most one policy per scope — workload (a selector matching the pod, in the pod's
namespace), namespace (no selector) and mesh (no selector, in the root namespace) — the oldest
one when several compete. The narrowest scope with a mode other than UNSET wins; a workload
policy's `portLevelMtls` (keyed by the container port) overrides its mode for that port, UNSET
there meaning "the workload's mode". With nothing set the mode is PERMISSIVE.
"""

from __future__ import annotations

from ...kube_state import Obj
from ..state import MeshState

STRICT = "STRICT"
PERMISSIVE = "PERMISSIVE"
DISABLE = "DISABLE"
UNSET = "UNSET"
MODES = (STRICT, PERMISSIVE, DISABLE)
KNOWN_SPEC_FIELDS = {"selector", "mtls", "portLevelMtls"}


def _match_labels(policy: Obj) -> dict[str, str]:
    return ((policy.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}


def _age_key(policy: Obj) -> tuple[str, str, str]:
    """Oldest first; RFC 3339 timestamps in UTC sort as strings. Name breaks ties so the choice
    does not depend on list order."""
    meta = policy["metadata"]
    return (meta.get("creationTimestamp") or "", meta.get("namespace") or "", meta["name"])


def _oldest(policies: list[Obj]) -> Obj | None:
    return min(policies, key=_age_key, default=None)


def _mode_of(mtls: Obj | None) -> str:
    """The mode a `mtls` block sets, UNSET when absent or not one of Istio's modes."""
    mode = (mtls or {}).get("mode") or UNSET
    return mode if mode in MODES else UNSET


def _applicable(state: MeshState, pod: Obj) -> tuple[Obj | None, Obj | None, Obj | None]:
    """The (mesh, namespace, workload) policies that apply to `pod`, each possibly None."""
    namespace = pod["metadata"].get("namespace", "")
    labels = pod["metadata"].get("labels") or {}
    mesh, spaced, workload = [], [], []
    for policy in state.peer_authentications:
        policy_ns = policy["metadata"].get("namespace", "")
        selector = _match_labels(policy)
        if not selector:
            if policy_ns == state.root_namespace:
                mesh.append(policy)
            elif policy_ns == namespace:
                spaced.append(policy)
        elif (policy_ns == namespace != state.root_namespace
              and all(labels.get(k) == v for k, v in selector.items())):
            workload.append(policy)
    return _oldest(mesh), _oldest(spaced), _oldest(workload)


def mtls_mode(state: MeshState, pod: Obj, container_port: int) -> str:
    """The mode (STRICT, PERMISSIVE or DISABLE) `pod`'s sidecar enforces on `container_port`."""
    mesh, namespace, workload = _applicable(state, pod)
    mode = PERMISSIVE
    for policy in (mesh, namespace, workload):
        level = _mode_of((policy or {}).get("spec", {}).get("mtls"))
        if level != UNSET:
            mode = level
    if workload is not None:
        per_port = workload.get("spec", {}).get("portLevelMtls") or {}
        port_mode = _mode_of(per_port.get(str(container_port), per_port.get(container_port)))
        if port_mode != UNSET:
            mode = port_mode
    return mode


def pa_unsupported_fields(obj: Obj) -> list[str]:
    """Field paths of a PeerAuthentication that have no effect here (as in Istio, which rejects
    them or ignores them): unknown spec fields, and `portLevelMtls` without a workload selector."""
    spec = obj.get("spec") or {}
    ignored = [f"spec.{key}" for key in sorted(spec) if key not in KNOWN_SPEC_FIELDS]
    if spec.get("portLevelMtls") and not _match_labels(obj):
        ignored.append("spec.portLevelMtls")
    return ignored
