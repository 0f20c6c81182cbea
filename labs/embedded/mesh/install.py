"""Create a course manifest's objects at cluster start, as `istioctl install` or
`kubectl apply -f samples/addons/...` would have on a real cluster.

Each object is created only when absent, so a learner's edits survive a daemon restart, and
the pinned versions (`${ISTIO_VERSION}`, `${LINKERD_VERSION}`…) are filled in from
cluster-setup/versions.env.
"""

from __future__ import annotations

import logging
from pathlib import Path
from string import Template
from typing import Any

import yaml

from labs.versions import versions

from ..apiserver.api import ObjectApi
from ..apiserver.errors import ApiError
from ..apiserver.objects import with_last_applied

log = logging.getLogger(__name__)
Obj = dict[str, Any]
MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
# Istio's addons (samples/addons) the embedded cluster installs, as a course's setup would
ADDONS = (MANIFESTS / "prometheus.yaml",)


def manifest_objects(path: Path) -> list[Obj]:
    """The manifest's objects with the pinned versions filled in."""
    text = Template(path.read_text()).safe_substitute(versions())
    return [doc for doc in yaml.safe_load_all(text) if doc]


def install_manifest(api: ObjectApi, path: Path) -> int:
    """Create what is missing of the manifest's objects; returns how many were created."""
    return create_missing(api, manifest_objects(path), path.name)


def create_missing(api: ObjectApi, objects: list[Obj], source: str) -> int:
    """Create those of `objects` that do not exist yet, annotated as `kubectl apply` leaves
    them; returns how many were created. `source` names them in errors."""
    created = 0
    for obj in map(with_last_applied, objects):
        rt = api.registry.by_kind(obj["apiVersion"], obj["kind"])
        if rt is None:
            raise RuntimeError(f"{source}: the embedded API server does not serve "
                               f"{obj['apiVersion']} {obj['kind']}")
        meta = obj["metadata"]
        namespace = meta.get("namespace", "") if rt.namespaced else ""
        if api.find(rt, namespace, meta["name"]) is not None:
            continue
        try:
            api.create(rt, namespace, obj, validate=False, packaged=True)  # no schema to build
        except ApiError as err:  # e.g. istio-system is being deleted: the cluster still runs
            log.error("%s: %s %s was not created: %s", source, obj["kind"], meta["name"],
                      err.message)
            continue
        created += 1
    return created


def install_addons(api: ObjectApi) -> int:
    """Create what is missing of the addons (after the ingress gateway: it makes istio-system)."""
    return sum(install_manifest(api, path) for path in ADDONS)
