"""Running course notebooks in tests, each in its own kernel (the `notebook_cluster` fixture in
conftest.py gives them a fresh cluster)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

COURSE = Path(__file__).resolve().parents[1]
CELL_TIMEOUT_S = 300


def run_notebook(path: Path, workdir: Path) -> nbformat.NotebookNode:
    """Execute a notebook as JupyterLab would (its own kernel, cwd = a copy's directory, so
    nothing relies on being next to the repository); a failing cell fails the test with the
    cell's error."""
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()
    return notebook


def outputs_text(notebook: nbformat.NotebookNode) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(str(output.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)
