"""Smoke test of the JupyterLab browser driver: can a scripted learner open a notebook, run it,
press an ipywidgets button and see what it printed, in plain JupyterLab 4 and Chromium?"""

from __future__ import annotations

from pathlib import Path

import nbformat
from jupyterlab_browser import chromium_path, open_lab, start_jupyterlab

BUTTON = """\
import ipywidgets as widgets

out = widgets.Output()
button = widgets.Button(description="Press me")

def on_click(_):
    with out:
        print("pressed")

button.on_click(on_click)
display(button, out)"""


def _notebook(path: Path) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "language": "python",
                                       "display_name": "Python 3 (ipykernel)"}
    notebook.cells = [nbformat.v4.new_markdown_cell("# Smoke"),
                      nbformat.v4.new_code_cell("print(6*7)"),
                      nbformat.v4.new_code_cell(BUTTON)]
    nbformat.write(notebook, path)


def test_learner_runs_a_notebook_and_presses_a_widget_button(tmp_path: Path) -> None:
    """Run one cell, then all; does the output show 42, and does pressing the widget's button
    print "pressed" only after the click? Are the nbgrader menu and sidebar there?"""
    chromium_path()  # skip (or fail, as root) before starting a server
    _notebook(tmp_path / "smoke.ipynb")
    (tmp_path / "data").mkdir()
    with start_jupyterlab(tmp_path) as server, \
            open_lab(server.url, server.token, name="jupyterlab-smoke") as learner:
        assert set(learner.file_browser_entries()) == {"data", "smoke.ipynb"}
        assert "Nbgrader" in learner.menu_bar_items()
        assert "Nbgrader Create Assignment" in learner.sidebar_tabs("right")

        learner.open_from_file_browser("smoke.ipynb")
        assert learner.kernel_status() == "idle"
        assert "Run All Cells" in learner.menu_items("Run")  # labels follow the open document
        assert learner.run_cell("print(6*7)").strip() == "42"

        learner.run_all()
        assert learner.output(1).strip() == "42"
        assert learner.output(2).strip() == "Press me"  # nothing printed before the click
        shown = learner.click_button("Press me", expect="pressed")
        assert shown.split() == ["Press", "me", "pressed"]
        assert learner.has_text("Press me") and not learner.has_text("BEGIN SOLUTION")
        assert learner.cells().count() == 3  # running did not append cells
        shot = learner.screenshot("jupyterlab-smoke")
    assert shot.stat().st_size > 10_000
    assert server.process.poll() is not None, "JupyterLab still running after the block"
