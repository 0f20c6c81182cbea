"""The recorded command doubles of tests/doubles/ (docker, kind, helm, istioctl, linkerd,
kubectl) on PATH for `meshlab cluster ...` and `meshlab workshop ...` runs: each call is logged,
and a test configures the doubles' behaviour through DOUBLE_* variables."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

DOUBLES = Path(__file__).parent / "doubles"
REPO = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 120


@dataclass
class Doubles:
    root: Path

    @property
    def log(self) -> Path:
        return self.root / "calls.log"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def env(self, **settings: str) -> dict[str, str]:
        """This process's environment with the doubles first on PATH and an empty meshlab tools
        directory (so the doubles are what `tool_path() else PATH` finds)."""
        self.state.mkdir(parents=True, exist_ok=True)
        (self.root / "tools").mkdir(exist_ok=True)
        return {**os.environ, "PATH": f"{DOUBLES}{os.pathsep}{os.environ.get('PATH', '')}",
                "MESHLAB_DOUBLES_LOG": str(self.log),
                "MESHLAB_DOUBLES_STATE": str(self.state),
                "MESHLAB_TOOLS_DIR": str(self.root / "tools"), **settings}

    def calls(self) -> list[str]:
        """The commands the doubles received, in order ("tool arg arg ...")."""
        return self.log.read_text().splitlines() if self.log.exists() else []

    def meshlab(self, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "labs.cli", *args], capture_output=True,
                              text=True, timeout=RUN_TIMEOUT_S, env=self.env(**settings),
                              cwd=REPO)
