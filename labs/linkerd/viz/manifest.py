"""`linkerd viz install` and `linkerd viz uninstall`: the manifests the docs pipe into kubectl
(`linkerd viz install | kubectl apply -f -`, `linkerd viz uninstall | kubectl delete -f -`).

install prints labs/manifests/linkerd-viz.yaml with the pinned versions filled in (its header
says how it differs from upstream's `viz/cmd/testdata/install_default.golden`). uninstall, as
linkerd/linkerd2 `viz/cmd/uninstall.go`, lists what the cluster holds with the label
`linkerd.io/extension=viz` and prints each as `apiVersion`, `kind` and `metadata.name`
(`metadata.namespace` too for namespaced objects: `resource.Kubernetes` in pkg/k8s/resource):
the objects outside the extension's namespace, then the namespace, whose deletion takes every
object in it along (so they are not listed: kubectl would find them gone).
"""

from __future__ import annotations

from string import Template

import yaml

from labs.embedded.mesh.install import manifest_objects
from labs.embedded.mesh.linkerd.install import VIZ
from labs.linkerd.kube import Kube
from labs.versions import versions

SELECTOR = "linkerd.io/extension=viz"


def install_text() -> str:
    """The manifest, versions filled in (comments kept: kubectl ignores them)."""
    return Template(VIZ.read_text()).safe_substitute(versions())


def uninstall_text(kube: Kube) -> str:
    """What `kubectl delete -f -` needs to remove viz: every labelled object the cluster has
    of the kinds the manifest creates. Error (upstream's) when there is none."""
    kinds: dict[str, str] = {}  # kind -> kubectl's `kind.group` (Istio has an
    for obj in manifest_objects(VIZ):  # AuthorizationPolicy too)
        group = obj["apiVersion"].rpartition("/")[0]
        kinds.setdefault(obj["kind"], f"{obj['kind'].lower()}.{group}".rstrip("."))
    found = [(kind, obj) for kind, resource in kinds.items()
             for obj in kube.items(resource, None, SELECTOR)]
    namespaces = {obj["metadata"]["name"] for kind, obj in found if kind == "Namespace"}
    documents = []
    for kind, obj in sorted(found, key=lambda item: item[0] == "Namespace"):
        meta = {"name": obj["metadata"]["name"]}
        if obj["metadata"].get("namespace"):
            if obj["metadata"]["namespace"] in namespaces:
                continue
            meta["namespace"] = obj["metadata"]["namespace"]
        documents.append({"apiVersion": obj.get("apiVersion", ""), "kind": kind,
                          "metadata": meta})
    if not documents:
        raise ValueError("could not find the linkerd-viz extension")
    return "".join("---\n" + yaml.safe_dump(d, sort_keys=False) for d in documents)
