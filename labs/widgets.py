"""ipywidgets for the notebooks: the "Check my work" button, and the course home's progress
table with its Refresh button."""

from __future__ import annotations

import ipywidgets as widgets
from IPython.display import HTML

from labs.checks.notebook import check
from labs.checks.registry import find
from labs.cluster import ClusterError, ClusterRef

CHECK_LABEL = "Check my work"


def check_button(selector: str, cluster: ClusterRef | None = None) -> widgets.VBox:
    """A button that runs the checks of `selector` (e.g. "day1.mtls") and replaces the output
    below it with the latest result; the button is disabled while the checks run."""
    find(selector)  # an unknown lab id fails here, when the cell runs, not at the first click
    button = widgets.Button(description=CHECK_LABEL, icon="check", button_style="primary",
                            layout=widgets.Layout(width="auto"))
    output = widgets.Output()

    def run(_: widgets.Button) -> None:
        button.disabled, button.description = True, "Checking…"
        output.outputs = ()
        try:
            output.append_display_data(check(selector, cluster))
        except ClusterError as exc:
            output.append_stdout(f"cannot reach your cluster: {exc}\n")
        finally:
            button.disabled, button.description = False, CHECK_LABEL

    button.on_click(run)
    return widgets.VBox([button, output])


PROGRESS_LABEL = "Refresh"


def progress_board(cluster: ClusterRef | None = None) -> widgets.VBox:
    """The course home's progress table (checks passed and points per lab, solutions shown),
    filled when the cell runs and again at each click on Refresh."""
    from labs.catalog import load_catalog
    from labs.cluster import current_cluster
    from labs.workspace.progress import progress, render_html
    from labs.workspace.sync import workspace_root

    catalog = load_catalog()
    button = widgets.Button(description=PROGRESS_LABEL, icon="refresh",
                            layout=widgets.Layout(width="auto"))
    table = widgets.Output()  # rendered by JupyterLab: the lab links open in a new tab

    def refresh(_: widgets.Button | None = None) -> None:
        button.disabled, button.description = True, "Checking…"
        try:
            rows = progress(catalog, cluster or current_cluster(), workspace_root())
            table.outputs = ()
            table.append_display_data(HTML(render_html(rows)))
        except ClusterError as exc:
            table.outputs = ()
            table.append_stdout(f"cannot reach your cluster: {exc}\n")
        finally:
            button.disabled, button.description = False, PROGRESS_LABEL

    button.on_click(refresh)
    refresh()
    return widgets.VBox([button, table])
