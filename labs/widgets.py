"""ipywidgets for the notebooks: the "Check my work" button."""

from __future__ import annotations

import ipywidgets as widgets

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
