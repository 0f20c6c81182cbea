"""Linkerd's control plane as `linkerd install` renders it, and its in-process install.

The cluster starts without Linkerd: a learner installs it with the docs' commands, whose
`linkerd install` (labs/linkerd/install.py) prints `control_plane_objects`. Tests and benches
that need a control plane without the CLI call `install_linkerd`, which creates the same
objects as `linkerd install | kubectl apply -f -` would. linkerd-viz (`VIZ`,
labs/manifests/linkerd-viz.yaml) is installed with `linkerd viz install | kubectl apply -f -`
(labs/linkerd/viz).
"""

from __future__ import annotations

from typing import Any

import yaml

from ...apiserver.api import ObjectApi
from ..install import MANIFESTS, create_missing, manifest_objects
from .identity import (
    ISSUER_SECRET,
    NAMESPACE,
    TRUST_ROOTS_CONFIGMAP,
    TRUST_ROOTS_KEY,
    generate_credentials,
    identity_objects,
)
from .injection import CONFIG_MAP

Obj = dict[str, Any]
CONTROL_PLANE = MANIFESTS / "linkerd-control-plane.yaml"
VIZ = MANIFESTS / "linkerd-viz.yaml"


def control_plane_objects(identity: list[Obj]) -> list[Obj]:
    """labs/manifests/linkerd-control-plane.yaml with the identity objects (trust-roots
    ConfigMap, issuer Secret) after the Namespace and their trust anchor in linkerd-config's
    `values.identityTrustAnchorsPEM`, which `linkerd check` and `linkerd inject --manual` read."""
    pem = (identity[0].get("data") or {}).get(TRUST_ROOTS_KEY, "")
    documents = manifest_objects(CONTROL_PLANE)
    for doc in documents:
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == CONFIG_MAP and pem:
            filled = values_with_trust_anchors(doc["data"].get("values") or "", pem)
            if filled is not None:
                doc["data"]["values"] = filled
    return documents[:1] + identity + documents[1:]


def install_linkerd(api: ObjectApi) -> int:
    """Create what is missing of the control plane, keeping the cluster's identity objects
    when both exist (else a fresh pair); returns how many objects were created."""
    configmaps = api.registry.lookup("", "v1", "configmaps")
    secrets = api.registry.lookup("", "v1", "secrets")
    assert configmaps is not None and secrets is not None
    roots = api.find(configmaps, NAMESPACE, TRUST_ROOTS_CONFIGMAP)
    issuer = api.find(secrets, NAMESPACE, ISSUER_SECRET)
    identity = ([roots, issuer] if roots is not None and issuer is not None
                else identity_objects(*generate_credentials()))
    return create_missing(api, control_plane_objects(identity), "linkerd install")


def values_with_trust_anchors(values_text: str, pem: str) -> str | None:
    """linkerd-config's `values` with `identityTrustAnchorsPEM` set to `pem`; None when it
    already has one (or is not a mapping). Raises yaml.YAMLError when it is not YAML."""
    values = yaml.safe_load(values_text) or {}
    if not isinstance(values, dict) or values.get("identityTrustAnchorsPEM"):
        return None
    values["identityTrustAnchorsPEM"] = pem
    return yaml.safe_dump(values, sort_keys=True, width=100)
