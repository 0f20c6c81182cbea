"""Reading the cluster for `linkerd` through kubectl (as labs/istioctl does): JSON lists and
objects, each fetched once per command."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from labs.cluster import ClusterRef

Obj = dict[str, Any]
TIMEOUT_S = 30.0


class KubeError(Exception):
    """kubectl failed; the message is kubectl's own error line."""


@dataclass
class Kube:
    """One command's view of the cluster: `items(...)` and `get(...)` cache their answers."""

    ref: ClusterRef
    _cache: dict[tuple[str, ...], Any] = field(default_factory=dict)

    def _json(self, *args: str) -> Any:
        if args not in self._cache:
            done = self.ref.kubectl(*args, "-o", "json", timeout=TIMEOUT_S)
            if done.returncode != 0:
                raise KubeError(done.stderr.strip().removeprefix("error: ")
                                or f"kubectl {' '.join(args)} failed")
            self._cache[args] = json.loads(done.stdout)
        return self._cache[args]

    def items(self, resource: str, namespace: str | None = None, selector: str = "") -> list[Obj]:
        """`kubectl get <resource>` in `namespace` (None: all namespaces)."""
        scope = (f"--namespace={namespace}",) if namespace else ("--all-namespaces",)
        labels = (f"--selector={selector}",) if selector else ()
        return list(self._json("get", resource, *scope, *labels).get("items") or [])

    def cluster_items(self, resource: str, selector: str = "") -> list[Obj]:
        """A cluster-scoped list (namespaces, nodes, CRDs, cluster roles)."""
        labels = (f"--selector={selector}",) if selector else ()
        return list(self._json("get", resource, *labels).get("items") or [])

    def get(self, resource: str, name: str, namespace: str = "") -> Obj | None:
        """One object, None when it does not exist."""
        scope = (f"--namespace={namespace}",) if namespace else ()
        try:
            return dict(self._json("get", resource, name, *scope))
        except KubeError as err:
            if "NotFound" in str(err) or "not found" in str(err):
                return None
            raise

    def forget(self, resource: str) -> None:
        """Drop the cached answers about `resource` (a retried check reads it afresh)."""
        for key in [k for k in self._cache if len(k) > 1 and k[1] == resource]:
            del self._cache[key]

    def server_version(self) -> Obj:
        return dict(self._json("version").get("serverVersion") or {})
