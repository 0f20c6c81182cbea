"""Discovery documents (`/api`, `/apis`, group versions) and the `/openapi/v3` index.

kubectl reads discovery to map kinds and short names to URLs, and reads `/openapi/v3` to learn that
the server validates fields itself (a PATCH operation per kind with a `fieldValidation` parameter),
after which it leaves validation to the server.
"""

from __future__ import annotations

import hashlib
import json
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
