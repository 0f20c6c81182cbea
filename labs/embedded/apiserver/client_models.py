"""The official client's generated model classes, the source of the built-in kinds' field types.

Imported on first use: `kubernetes` costs about 0.4 s to import, which a cluster start should not
pay before it serves its first request.
"""

from __future__ import annotations

from functools import cache
from types import ModuleType


@cache
def kubernetes_models() -> ModuleType:
    from kubernetes.client import models

    return models
