"""Discovery documents (`/api`, `/apis`, group versions) and the `/openapi/v3` index.

kubectl reads discovery to map kinds and short names to URLs, and reads `/openapi/v3` to learn that
the server validates fields itself (a PATCH operation per kind with a `fieldValidation` parameter),
after which it leaves validation to the server.

`/api` and `/apis` also answer with aggregated discovery (apidiscovery.k8s.io/v2, GA in Kubernetes
1.30; types from kubernetes/api apidiscovery/v2/types.go, built from the group-version lists as
kube-apiserver's endpoints/installer.go ConvertGroupVersionIntoToDiscovery does) when the client
asks for it, as kubectl does: it then learns every resource in two requests instead of one per
group version (~30 here, each on its own TLS connection when a cluster is new).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from .resources import ResourceRegistry, ResourceType

Obj = dict[str, Any]

SUBRESOURCE_KINDS = {
    "status": (None, ["get", "patch", "update"]),
    "scale": ("Scale", ["get", "patch", "update"]),
    "log": ("Pod", ["get"]),
    "exec": ("PodExecOptions", ["create", "get"]),
    "portforward": ("PodPortForwardOptions", ["create", "get"]),
    "finalize": (None, ["update"]),
}


def api_versions(address: str) -> Obj:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
    }


def api_group(group: str, versions: list[str]) -> Obj:
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": entries,
            "preferredVersion": entries[0]}


def api_group_list(registry: ResourceRegistry) -> Obj:
    groups = [api_group(g, vs) for g, vs in registry.group_versions().items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def _resource_entries(rt: ResourceType) -> list[Obj]:
    entries: list[Obj] = [{
        "name": rt.plural,
        "singularName": rt.singular,
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": list(rt.verbs),
        **({"shortNames": list(rt.short_names)} if rt.short_names else {}),
        **({"categories": list(rt.categories)} if rt.categories else {}),
        "storageVersionHash": hashlib.sha256(rt.key.encode()).hexdigest()[:12],
    }]
    for sub in sorted(rt.subresources):
        kind, verbs = SUBRESOURCE_KINDS[sub]
        entry: Obj = {"name": f"{rt.plural}/{sub}", "singularName": "",
                      "namespaced": rt.namespaced, "kind": kind or rt.kind, "verbs": verbs}
        if sub == "scale":
            entry.update(group="autoscaling", version="v1")
        entries.append(entry)
    return entries


# -- aggregated discovery (apidiscovery.k8s.io/v2) --------------------------------------------
AGGREGATED = {"g": "apidiscovery.k8s.io", "v": "v2", "as": "APIGroupDiscoveryList"}
AGGREGATED_CONTENT_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


def wants_aggregated(accept: str) -> bool:
    """Whether an Accept header lists the v2 APIGroupDiscoveryList (client-go lists it first,
    then v2beta1, then plain JSON for servers without it)."""
    for media_range in accept.split(","):
        kind, *params = (part.strip() for part in media_range.split(";"))
        fields = dict(p.split("=", 1) for p in params if "=" in p)
        if kind == "application/json" and all(fields.get(k) == v for k, v in AGGREGATED.items()):
            return True
    return False


def _discovered_resources(resource_list: Obj, group: str, version: str) -> list[Obj]:
    """An APIResourceList's entries as APIResourceDiscovery items, subresources (`pods/log`)
    under their resource."""
    found: dict[str, Obj] = {}
    for entry in resource_list["resources"]:
        kind = {"group": entry.get("group", group), "version": entry.get("version", version),
                "kind": entry["kind"]}
        name, _, sub = entry["name"].partition("/")
        if sub:
            found[name].setdefault("subresources", []).append(
                {"subresource": sub, "responseKind": kind, "verbs": entry["verbs"]})
            continue
        found[name] = {"resource": name, "responseKind": kind,
                       "scope": "Namespaced" if entry["namespaced"] else "Cluster",
                       "singularResource": entry["singularName"], "verbs": entry["verbs"],
                       **{k: entry[k] for k in ("shortNames", "categories") if k in entry}}
    return list(found.values())


def group_discovery(group: str, versions: dict[str, Obj]) -> Obj:
    """One APIGroupDiscovery: `versions` maps each served version (preferred first) to its
    APIResourceList."""
    return {"metadata": {"name": group, "creationTimestamp": None},
            "versions": [{"version": version,
                          "resources": _discovered_resources(listed, group, version),
                          "freshness": "Current"} for version, listed in versions.items()]}


def aggregated_discovery(registry: ResourceRegistry, legacy: bool,
                         extra: Sequence[Obj] = ()) -> Obj:
    """The APIGroupDiscoveryList of `/api` (`legacy`: the core group) or of `/apis` (every named
    group, then `extra` groups served outside the registry)."""
    items = []
    for group, versions in registry.group_versions().items():
        if (group == "") == legacy:
            lists = {v: api_resource_list(registry, group, v) for v in versions}
            items.append(group_discovery(group, {v: r for v, r in lists.items() if r}))
    return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {}, "items": items + ([] if legacy else list(extra))}


def api_resource_list(registry: ResourceRegistry, group: str, version: str) -> Obj | None:
    types = registry.in_group_version(group, version)
    if not types:
        return None
    resources = [entry for rt in types for entry in _resource_entries(rt)]
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version, "resources": resources}


# -- OpenAPI v3 --------------------------------------------------------------------------------

def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _gv_document(registry: ResourceRegistry, group: str, version: str) -> Obj:
    """Per group-version document: one path per resource with its PATCH operation."""
    query_params = [
        {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
        for name in ("dryRun", "fieldManager", "fieldValidation", "force")
    ]
    paths: Obj = {}
    schemas: Obj = {}
    for rt in registry.in_group_version(group, version):
        prefix = f"/{_gv_path(group, version)}"
        url = (f"{prefix}/namespaces/{{namespace}}/{rt.plural}/{{name}}" if rt.namespaced
               else f"{prefix}/{rt.plural}/{{name}}")
        gvk = {"group": group, "version": version, "kind": rt.kind}
        paths[url] = {"patch": {
            "operationId": f"patch{rt.kind}",
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": gvk,
            "parameters": query_params,
            "responses": {"200": {"description": "OK"}},
        }}
        schema_name = f"{group or 'core'}.{version}.{rt.kind}"
        schemas[schema_name] = {"type": "object", "x-kubernetes-group-version-kind": [gvk]}
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "meshlab"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def openapi_index(registry: ResourceRegistry) -> Obj:
    index: Obj = {}
    for group, versions in registry.group_versions().items():
        for version in versions:
            doc = _gv_document(registry, group, version)
            digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]
            path = _gv_path(group, version)
            index[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest.upper()}"}
    return {"paths": index}


def openapi_document(registry: ResourceRegistry, path: str) -> Obj | None:
    parts = path.strip("/").split("/")
    if parts[0] == "api" and len(parts) == 2:
        group, version = "", parts[1]
    elif parts[0] == "apis" and len(parts) == 3:
        group, version = parts[1], parts[2]
    else:
        return None
    if not registry.in_group_version(group, version):
        return None
    return _gv_document(registry, group, version)
