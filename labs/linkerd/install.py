"""`linkerd install --crds` and `linkerd install`: the manifests Linkerd's getting-started pipes
into kubectl (`linkerd install --crds | kubectl apply -f -`, then `linkerd install | kubectl
apply -f -`; linkerd/linkerd2 `cli/cmd/install.go`).

The embedded cluster starts without Linkerd, as a fresh cluster does: these two commands install
it. `--crds` prints the Linkerd CRDs the embedded API server serves (labs/embedded/apiserver/crds/
linkerd.yaml); without it, the control plane (labs/manifests/linkerd-control-plane.yaml, whose
header says how it differs from upstream's `install_default.golden`) with the pinned versions
and the identity objects: the trust-roots ConfigMap and issuer Secret, generated as `linkerd
install` does when it is given no certificates, and the trust anchor in linkerd-config's
`identityTrustAnchorsPEM`. Unlike upstream, a cluster that already has both identity objects
gets them back unchanged (as `linkerd upgrade` reads them back), so running the install again
does not replace the issuer under running proxies. As upstream, the control plane is refused
while the CRDs are missing.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from labs.embedded.apiserver.objects import LAST_APPLIED
from labs.embedded.mesh.linkerd.identity import (
    ISSUER_SECRET,
    NAMESPACE,
    TRUST_ROOTS_CONFIGMAP,
    generate_credentials,
    identity_objects,
)
from labs.embedded.mesh.linkerd.install import control_plane_objects
from labs.linkerd.kube import Kube

Obj = dict[str, Any]
CRDS = resources.files("labs.embedded.apiserver").joinpath("crds", "linkerd.yaml")
# linkerd/linkerd2 cli/cmd/install.go, when CheckCustomResourceDefinitions fails
CRDS_FIRST = "Linkerd CRDs must be installed first. Run linkerd install with the --crds flag."
# what the API server fills in and `kubectl apply` must not be handed back
SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields")


class InstallError(Exception):
    """What `linkerd install` prints on stderr before exiting 1."""


def crds_text() -> str:
    return CRDS.read_text()


def control_plane_text(kube: Kube) -> str:
    """The control-plane manifest with the cluster's identity objects, or a fresh pair."""
    wanted = {crd["metadata"]["name"] for crd in yaml.safe_load_all(CRDS.read_text()) if crd}
    served = {crd["metadata"]["name"]
              for crd in kube.cluster_items("customresourcedefinitions")}
    if wanted - served:
        raise InstallError(CRDS_FIRST)
    identity = cluster_identity(kube) or identity_objects(*generate_credentials())
    return "".join("---\n" + yaml.safe_dump(doc, sort_keys=False, width=100)
                   for doc in control_plane_objects(identity))


def cluster_identity(kube: Kube) -> list[Obj] | None:
    """The cluster's trust-roots ConfigMap and issuer Secret as they are (without the fields
    the API server owns), None unless both exist."""
    roots = kube.get("configmaps", TRUST_ROOTS_CONFIGMAP, NAMESPACE)
    issuer = kube.get("secrets", ISSUER_SECRET, NAMESPACE)
    if roots is None or issuer is None:
        return None
    for obj in (roots, issuer):
        for key in SERVER_FIELDS:
            obj["metadata"].pop(key, None)
        (obj["metadata"].get("annotations") or {}).pop(LAST_APPLIED, None)
    return [roots, issuer]
