"""What a check function gets: the cluster under check, with the reads checks need most."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from labs.cluster import ClusterRef
from labs.traffic import ProbeResult, probe


class ClusterReadError(RuntimeError):
    """kubectl could not read what a check asked for (the message is kubectl's)."""


@dataclass(frozen=True)
class CheckContext:
    cluster: ClusterRef

    def get(self, kind: str, name: str | None = None, namespace: str | None = None
            ) -> dict[str, Any] | None:
        """One object (or a List when `name` is None) as JSON; None when it does not exist."""
        args = ["get", kind, *([name] if name else []), "-o", "json"]
        if namespace:
            args.append(f"--namespace={namespace}")
        result = self.cluster.kubectl(*args, timeout=30)
        if result.returncode != 0:
            if "NotFound" in result.stderr or "not found" in result.stderr:
                return None
            raise ClusterReadError(result.stderr.strip() or f"kubectl {' '.join(args)} failed")
        return json.loads(result.stdout)

    def items(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every object of `kind` (in `namespace`, or all namespaces when None)."""
        args = ["get", kind, "-o", "json",
                f"--namespace={namespace}" if namespace else "--all-namespaces"]
        result = self.cluster.kubectl(*args, timeout=30)
        if result.returncode != 0:
            raise ClusterReadError(result.stderr.strip() or f"kubectl {' '.join(args)} failed")
        return list(json.loads(result.stdout).get("items", []))

    def probe(self, url: str, **options: Any) -> ProbeResult:
        """`labs.traffic.probe` against the cluster under check (same options)."""
        return probe(url, cluster=self.cluster, **options)
