"""`default:` values of a CRD's structural schema, filled in like kube-apiserver does.

The real server defaults custom resources before validating them, so CEL rules and learners'
`kubectl get -o yaml` see e.g. Linkerd's `accessPolicy: deny` or Gateway API's
`path.type: PathPrefix` without having written them.
"""

from __future__ import annotations

import copy
from typing import Any


def apply_schema_defaults(schema: dict[str, Any], value: Any) -> None:
    """Fill absent fields that have a `default` in `schema`, in place, at every depth."""
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for key, sub in properties.items():
            if not isinstance(sub, dict):
                continue
            if (key not in value or (value[key] is None and not sub.get("nullable"))) and (
                    "default" in sub):
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                apply_schema_defaults(sub, value[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, item in value.items():
                if key not in properties:
                    apply_schema_defaults(extra, item)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for item in value:
                apply_schema_defaults(items, item)
