"""Istio's mesh config: ConfigMap `istio` in `istio-system`, key `mesh` (YAML), where istiod reads
it and where Istio's tasks edit it (`kubectl edit configmap istio -n istio-system`).

The embedded mesh reads `extensionProviders` from it (the ext-authz providers that CUSTOM
AuthorizationPolicies name). The ConfigMap is created with Istio's default content when it is
missing, so the tasks' `kubectl edit` works as on a real installation.
"""

from __future__ import annotations

import logging
from typing import Any

import yaml

from ..apiserver.api import ObjectApi
from ..apiserver.errors import ApiError

log = logging.getLogger(__name__)
Obj = dict[str, Any]
MESH_CONFIGMAP = ("istio-system", "istio")
MESH_KEY = "mesh"
# What `istioctl install` (default profile) writes into the `mesh` key.
DEFAULT_MESH = """\
defaultConfig:
  discoveryAddress: istiod.istio-system.svc:15012
defaultProviders:
  metrics:
  - prometheus
enablePrometheusMerge: true
rootNamespace: istio-system
trustDomain: cluster.local
"""


def parse_mesh_config(configmap: Obj | None) -> tuple[Obj, str | None]:
    """(mesh config, error): the parsed `mesh` key; an empty config and a message saying what
    to fix when it is not a YAML mapping."""
    if configmap is None:
        return {}, None
    text = (configmap.get("data") or {}).get(MESH_KEY) or ""
    try:
        mesh = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        return {}, (f"ConfigMap istio-system/istio key `mesh` is not valid YAML ({err}); fix it "
                    "with `kubectl edit configmap istio -n istio-system`")
    if not isinstance(mesh, dict):
        return {}, ("ConfigMap istio-system/istio key `mesh` must be a YAML mapping (e.g. "
                    "`extensionProviders: [...]`); fix it with `kubectl edit configmap istio "
                    "-n istio-system`")
    return mesh, None


def extension_providers(mesh: Obj) -> dict[str, Obj]:
    """`extensionProviders` by name (the first of a duplicated name wins, as istiod keeps one)."""
    providers: dict[str, Obj] = {}
    for item in mesh.get("extensionProviders") or []:
        if isinstance(item, dict) and item.get("name") and item["name"] not in providers:
            providers[str(item["name"])] = item
    return providers


def ensure_mesh_configmap(api: ObjectApi) -> bool:
    """Create ConfigMap istio-system/istio with Istio's default mesh config when it is missing
    (and istio-system exists); True when it was created."""
    rt = api.registry.lookup("", "v1", "configmaps")
    ns_rt = api.registry.lookup("", "v1", "namespaces")
    assert rt is not None and ns_rt is not None
    namespace, name = MESH_CONFIGMAP
    if api.find(ns_rt, "", namespace) is None or api.find(rt, namespace, name) is not None:
        return False
    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app": "istiod", "release": "istio"}},
            "data": {MESH_KEY: DEFAULT_MESH}}
    try:
        api.create(rt, namespace, body, validate=False)
    except ApiError as err:  # created meanwhile, or istio-system is terminating
        log.debug("mesh config not created: %s", err.message)
        return False
    return True
