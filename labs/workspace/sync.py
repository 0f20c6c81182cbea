"""The learner's workspace: student notebooks for every lab of the catalog, created on first use
and brought up to date when the course changes — never over a learner's edits.

Per notebook, the workspace remembers a digest of the cell sources it last wrote
(`.meshlab/workspace.json`). Outputs, execution counts and metadata do not count as edits (running
a lab is not editing it). On each sync, for each lab:
- missing → written;
- the course's student version changed and the learner's sources are still what was written →
  replaced;
- changed, and the learner edited it → kept; the new version goes beside it as
  `NAME.new.ipynb`, once, with a message.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from labs.catalog import Catalog
from labs.workspace.home import HOME_NOTEBOOK, home_notebook
from labs.workspace.student import student_version

WORKSPACE_ENV = "MESHLAB_WORKSPACE"
STATE_DIR = ".meshlab"
MANIFEST = "workspace.json"
NEW_SUFFIX = ".new.ipynb"


def workspace_root(explicit: str | Path | None = None) -> Path:
    """`--workspace`, else `$MESHLAB_WORKSPACE`, else ~/meshlab/course."""
    chosen = explicit or os.environ.get(WORKSPACE_ENV) or Path.home() / "meshlab" / "course"
    return Path(chosen).expanduser().resolve()


def sources_digest(notebook: nbformat.NotebookNode) -> str:
    """What the learner can edit: each cell's type and source, in order."""
    cells = [(cell.cell_type, cell.source) for cell in notebook.cells]
    return hashlib.sha256(json.dumps(cells).encode()).hexdigest()


@dataclass
class SyncReport:
    """What a sync did, for the messages `meshlab lab` prints."""

    root: Path
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    offered: list[tuple[str, str]] = field(default_factory=list)  # (kept, new version beside)

    def messages(self) -> list[str]:
        lines = []
        if self.created:
            lines.append(f"workspace {self.root}: added {', '.join(self.created)}")
        if self.updated:
            lines.append(f"workspace {self.root}: updated to the new course version (you had "
                         f"not edited them): {', '.join(self.updated)}")
        lines += [f"the course changed {kept}, which you have edited: yours is kept as it is; the "
                  f"new version is {new} beside it" for kept, new in self.offered]
        return lines


class Workspace:
    """One learner workspace directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = root / STATE_DIR

    def _manifest(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads((self.state / MANIFEST).read_text())
        except (OSError, ValueError):
            return {}  # lost or damaged: every existing file counts as the learner's
        return data if isinstance(data, dict) else {}

    def sync(self, catalog: Catalog) -> SyncReport:
        """Create or update the workspace from the catalog's instructor notebooks."""
        self.state.mkdir(parents=True, exist_ok=True)
        manifest = self._manifest()
        report = SyncReport(self.root)
        wanted: list[tuple[str, Callable[[], nbformat.NotebookNode]]] = [
            (lab.notebook, lambda lab=lab: student_version(catalog.source / lab.notebook, lab.id))
            for lab in catalog.labs]
        wanted.append((HOME_NOTEBOOK, lambda: home_notebook(catalog)))
        for relative, make in wanted:
            self._sync_one(relative, make(), manifest.setdefault(relative, {}), report)
        write_atomically(self.state / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
        return report

    def _sync_one(self, relative: str, new: nbformat.NotebookNode, record: dict[str, str],
                  report: SyncReport) -> None:
        target = self.root / relative
        new_digest = sources_digest(new)
        if not target.exists():
            self._write_notebook(target, new)
            record.update(written=new_digest)
            report.created.append(relative)
            return
        if new_digest == record.get("written"):
            return
        current = self._digest_of(target)
        if current is not None and current in (record.get("written"), new_digest):
            self._write_notebook(target, new)
            record.update(written=new_digest)
            record.pop("offered", None)
            report.updated.append(relative)
            return
        beside = target.with_name(target.name.removesuffix(".ipynb") + NEW_SUFFIX)
        if record.get("offered") != new_digest or not beside.exists():
            self._write_notebook(beside, new)
            record["offered"] = new_digest
            report.offered.append((relative, str(beside.relative_to(self.root))))

    @staticmethod
    def _digest_of(path: Path) -> str | None:
        try:
            return sources_digest(nbformat.read(path, as_version=4))
        except (OSError, ValueError):
            return None  # unreadable: treated as the learner's, never overwritten

    @staticmethod
    def _write_notebook(path: Path, notebook: nbformat.NotebookNode) -> None:
        write_atomically(path, nbformat.writes(notebook) + "\n")


def write_atomically(path: Path, text: str) -> None:
    """Write through a temporary file and a rename: a crash leaves the old file whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.replace(path)
