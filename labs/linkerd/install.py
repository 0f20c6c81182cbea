"""`linkerd install --crds` and `linkerd install`: the manifests Linkerd's getting-started pipes
into kubectl (`linkerd install --crds | kubectl apply -f -`, then `linkerd install | kubectl
apply -f -`; linkerd/linkerd2 `cli/cmd/install.go`).

The embedded cluster installs both when it starts (labs/embedded/mesh/linkerd/install.py), so
applying them again changes nothing that runs and the docs' steps work as written. `--crds`
prints the Linkerd CRDs the embedded API server serves (labs/embedded/apiserver/crds/
linkerd.yaml); without it, the control plane as the cluster installed it
(labs/manifests/linkerd-control-plane.yaml, whose header says how it differs from upstream's
`install_default.golden`) with the pinned versions and this cluster's trust anchor in
linkerd-config, as `linkerd install` renders `identityTrustAnchorsPEM`. As upstream, the
control plane is refused while the CRDs are missing.
"""

from __future__ import annotations

from importlib import resources

import yaml

from labs.embedded.mesh.install import manifest_objects
from labs.embedded.mesh.linkerd.identity import NAMESPACE, TRUST_ROOTS_CONFIGMAP, TRUST_ROOTS_KEY
from labs.embedded.mesh.linkerd.injection import CONFIG_MAP
from labs.embedded.mesh.linkerd.install import CONTROL_PLANE, values_with_trust_anchors
from labs.linkerd.kube import Kube

CRDS = resources.files("labs.embedded.apiserver").joinpath("crds", "linkerd.yaml")
# linkerd/linkerd2 cli/cmd/install.go, when CheckCustomResourceDefinitions fails
CRDS_FIRST = "Linkerd CRDs must be installed first. Run linkerd install with the --crds flag."


class InstallError(Exception):
    """What `linkerd install` prints on stderr before exiting 1."""


def crds_text() -> str:
    return CRDS.read_text()


def control_plane_text(kube: Kube) -> str:
    """The control-plane manifest, with the cluster's trust anchor in linkerd-config."""
    wanted = {crd["metadata"]["name"] for crd in yaml.safe_load_all(CRDS.read_text()) if crd}
    served = {crd["metadata"]["name"]
              for crd in kube.cluster_items("customresourcedefinitions")}
    if wanted - served:
        raise InstallError(CRDS_FIRST)
    roots = kube.get("configmaps", TRUST_ROOTS_CONFIGMAP, NAMESPACE) or {}
    pem = (roots.get("data") or {}).get(TRUST_ROOTS_KEY, "")
    documents = manifest_objects(CONTROL_PLANE)
    for doc in documents:
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == CONFIG_MAP and pem:
            filled = values_with_trust_anchors(doc["data"].get("values") or "", pem)
            if filled is not None:
                doc["data"]["values"] = filled
    return "".join("---\n" + yaml.safe_dump(doc, sort_keys=False, width=100)
                   for doc in documents)
