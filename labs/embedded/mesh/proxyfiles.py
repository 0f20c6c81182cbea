"""Where one Envoy reads its file-based xDS, and what a control plane writes there: shared by
every mesh's control plane, the CA (its SDS files) and the xDS writer."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True)
class ProxyFiles:
    """Where one Envoy reads its dynamic configuration (file-based xDS, watched directory).
    The paths are made once per object: every outbound cluster's TLS context names the SDS
    files, so a pass asks for them services x proxies times."""

    xds_dir: Path

    @cached_property
    def lds(self) -> Path:
        return self.xds_dir / "lds.yaml"

    @cached_property
    def cds(self) -> Path:
        return self.xds_dir / "cds.yaml"

    @cached_property
    def rds(self) -> Path:
        return self.xds_dir / "rds.yaml"

    @cached_property
    def cert_sds(self) -> Path:
        """The workload certificate and key (secret name `default`), written by the mesh CA."""
        return self.xds_dir / "sds" / "default.yaml"

    @cached_property
    def root_sds(self) -> Path:
        """The trusted mesh root (secret name `ROOTCA`), written by the mesh CA."""
        return self.xds_dir / "sds" / "rootca.yaml"


@dataclass
class EnvoyResources:
    """What the builders produce for one proxy; the writer turns each list into a file."""

    listeners: list[Obj] = field(default_factory=list)
    clusters: list[Obj] = field(default_factory=list)
    route_configs: list[Obj] = field(default_factory=list)
    # (object, problem) for the object's status: what the builder could not program, and why.
    warnings: list[tuple[Obj, str]] = field(default_factory=list)
