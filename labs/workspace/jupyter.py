"""JupyterLab settings for learner mode: nbgrader's instructor tools off for that server only.

The settings live in the workspace (`.meshlab/jupyter/`) and reach JupyterLab through
`JUPYTER_CONFIG_PATH`, so the learner's own Jupyter configuration is neither read nor changed
beyond them. The learner side of nbgrader (Assignment List, to fetch and submit in a workshop
with an exchange) stays; the formgrader, Create Assignment, Course List, the Nbgrader menu and
Validate (Check my work is the learner's validation) are disabled in the page and, where they
have server handlers, on the server.
"""

from __future__ import annotations

import json
from pathlib import Path

from labs.workspace.sync import STATE_DIR, write_atomically

INSTRUCTOR_PLUGINS = ("formgrader", "create-assignment", "course-list", "menu",
                      "validate-assignment")
INSTRUCTOR_SERVER_EXTENSIONS = ("formgrader", "course_list", "validate_assignment")


def learner_config_dir(workspace: Path) -> Path:
    """Write the learner-mode settings into the workspace and return the directory to put
    first in `JUPYTER_CONFIG_PATH`."""
    root = workspace / STATE_DIR / "jupyter"
    page = {"disabledExtensions": {f"@jupyter/nbgrader:{p}": True for p in INSTRUCTOR_PLUGINS}}
    server = {"ServerApp": {"jpserver_extensions": {
        f"nbgrader.server_extensions.{e}": False for e in INSTRUCTOR_SERVER_EXTENSIONS}}}
    write_atomically(root / "labconfig" / "page_config.json", json.dumps(page, indent=1))
    write_atomically(root / "jupyter_server_config.d" / "meshlab-learner.json",
                     json.dumps(server, indent=1))
    return root
