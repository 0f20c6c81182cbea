"""CustomResourceDefinition objects -> served resource types, and the CRD's own status."""

from __future__ import annotations

import re
from typing import Any

from .errors import FieldCause, invalid
from .objects import now
from .resources import PrinterColumn, ResourceType

Obj = dict[str, Any]


def check_crd(crd: Obj) -> None:
    """The checks kube-apiserver makes that a learner writing a CRD is likely to trip over."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    name = crd.get("metadata", {}).get("name", "")
    causes: list[FieldCause] = []
    plural, group = names.get("plural", ""), spec.get("group", "")
    if name != f"{plural}.{group}":
        causes.append(FieldCause("metadata.name", "FieldValueInvalid",
                                 f'Invalid value: "{name}": must be spec.names.plural+"."+'
                                 f'spec.group ("{plural}.{group}")'))
    versions = spec.get("versions") or []
    if not versions:
        causes.append(FieldCause("spec.versions", "FieldValueRequired",
                                 "Required value: must have at least one version"))
    storage = [v for v in versions if v.get("storage")]
    if versions and len(storage) != 1:
        causes.append(FieldCause("spec.versions", "FieldValueInvalid",
                                 "Invalid value: must have exactly one version marked as storage "
                                 "version"))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append(FieldCause("spec.scope", "FieldValueNotSupported",
                                 f'Unsupported value: "{spec.get("scope")}": supported values: '
                                 '"Cluster", "Namespaced"'))
    if causes:
        raise invalid("CustomResourceDefinition", name, causes, "apiextensions.k8s.io")


def _columns(version: Obj) -> tuple[PrinterColumn, ...]:
    return tuple(
        PrinterColumn(
            name=col.get("name", ""),
            type=col.get("type", "string"),
            json_path=col.get("jsonPath", ""),
            priority=int(col.get("priority", 0)),
            description=col.get("description", ""),
            format=col.get("format", ""),
        )
        for col in version.get("additionalPrinterColumns") or []
    )


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Kubernetes' version order (v1 > v1beta2 > v1beta1 > v1alpha1 > other), as a sort key."""
    m = re.match(r"^v(\d+)(?:(alpha|beta)(\d+))?$", version)
    if not m:
        return (3, 0, 0, version)
    major, stage, minor = int(m.group(1)), m.group(2), int(m.group(3) or 0)
    return ({None: 0, "beta": 1, "alpha": 2}[stage], -major, -minor, "")


def resource_types(crd: Obj) -> list[ResourceType]:
    """One served type per served version, highest priority first (the preferred version)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    versions = sorted(spec.get("versions") or [],
                      key=lambda v: version_priority(str(v.get("name", ""))))
    types = []
    for version in versions:
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        types.append(ResourceType(
            group=spec.get("group", ""),
            version=version.get("name", ""),
            kind=names.get("kind", ""),
            plural=names.get("plural", ""),
            singular=names.get("singular") or names.get("kind", "").lower(),
            namespaced=spec.get("scope") == "Namespaced",
            short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()),
            subresources=frozenset(k for k in ("status", "scale") if k in subresources),
            printer_columns=_columns(version),
            custom=True,
        ))
    return types


def established_status(crd: Obj) -> Obj:
    """The status kube-apiserver's CRD controllers write once the names are accepted."""
    spec = crd.get("spec") or {}
    previous = {c.get("type"): c for c in (crd.get("status") or {}).get("conditions") or []}

    def condition(ctype: str, reason: str, message: str) -> Obj:
        stamp = previous.get(ctype, {}).get("lastTransitionTime") or now()
        return {"type": ctype, "status": "True", "reason": reason, "message": message,
                "lastTransitionTime": stamp}

    return {
        "acceptedNames": spec.get("names") or {},
        "storedVersions": [v.get("name") for v in spec.get("versions") or [] if v.get("storage")],
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted",
                      "the initial names have been accepted"),
        ],
    }
