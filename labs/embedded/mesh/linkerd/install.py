"""Install Linkerd at cluster start, as `linkerd install | kubectl apply -f -` would: the
objects of labs/manifests/linkerd-control-plane.yaml (rendered from upstream's install golden;
its header says what differs), each created only when absent so a learner's edits survive a
restart. linkerd-viz (`VIZ`, labs/manifests/linkerd-viz.yaml) is not: as in the docs, a learner
installs it on demand with `linkerd viz install | kubectl apply -f -` (labs/linkerd/viz), which
spares every cluster that does not use it a Prometheus and four twins.

The trust anchor and issuer come first (identity.py `ensure_identity_objects`, called by the
daemon before this); linkerd-config's `values.identityTrustAnchorsPEM`, which `linkerd check`
and `linkerd inject --manual` read, is then filled in from the trust-roots ConfigMap.
"""

from __future__ import annotations

import logging

import yaml

from ...apiserver.api import ObjectApi
from ...apiserver.errors import ApiError
from ..install import MANIFESTS, install_manifest
from .identity import NAMESPACE, TRUST_ROOTS_CONFIGMAP, TRUST_ROOTS_KEY
from .injection import CONFIG_MAP

log = logging.getLogger(__name__)
CONTROL_PLANE = MANIFESTS / "linkerd-control-plane.yaml"
VIZ = MANIFESTS / "linkerd-viz.yaml"


def install_linkerd(api: ObjectApi) -> int:
    """Create what is missing of Linkerd's control plane; returns how many objects."""
    created = install_manifest(api, CONTROL_PLANE)
    fill_trust_anchors(api)
    return created


def fill_trust_anchors(api: ObjectApi) -> bool:
    """Put the trust-roots bundle into linkerd-config's values where it is still empty, as
    `linkerd install` renders `identityTrustAnchorsPEM`; True when linkerd-config changed."""
    configmaps = api.registry.lookup("", "v1", "configmaps")
    assert configmaps is not None
    config = api.find(configmaps, NAMESPACE, CONFIG_MAP)
    roots = api.find(configmaps, NAMESPACE, TRUST_ROOTS_CONFIGMAP)
    pem = ((roots or {}).get("data") or {}).get(TRUST_ROOTS_KEY, "")
    if config is None or not pem:
        return False
    try:
        filled = values_with_trust_anchors((config.get("data") or {}).get("values") or "", pem)
    except yaml.YAMLError:
        log.error("%s/%s: `values` is not YAML; left as it is", NAMESPACE, CONFIG_MAP)
        return False
    if filled is None:
        return False
    data = {**config["data"], "values": filled}
    try:
        api.update(configmaps, NAMESPACE, CONFIG_MAP, {**config, "data": data},
                   validate=False, packaged=True)
    except ApiError as err:
        log.error("could not fill in %s/%s: %s", NAMESPACE, CONFIG_MAP, err.message)
        return False
    return True


def values_with_trust_anchors(values_text: str, pem: str) -> str | None:
    """linkerd-config's `values` with `identityTrustAnchorsPEM` set to `pem`; None when it
    already has one (or is not a mapping). Raises yaml.YAMLError when it is not YAML."""
    values = yaml.safe_load(values_text) or {}
    if not isinstance(values, dict) or values.get("identityTrustAnchorsPEM"):
        return None
    values["identityTrustAnchorsPEM"] = pem
    return yaml.safe_dump(values, sort_keys=True, width=100)
