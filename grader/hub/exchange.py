"""nbgrader's file-system exchange for a hub on one host: one directory every user can write
(nbgrader's docs: `chmod ugo+rw` on the exchange root, jupyter/nbgrader,
nbgrader/docs/source/user_guide/advanced.rst; nbgrader itself then makes the course's
`outbound` instructor-only writable and `inbound` write-only with the sticky bit), and a
global `nbgrader_config.py` naming it and the course (nbgrader/docs/source/configuration/
nbgrader_config.rst: "a global nbgrader_config.py ... such as the location of the exchange
directory"), in a Jupyter config directory every single-user server and the instructor's
`nbgrader` read through JUPYTER_CONFIG_PATH."""

from __future__ import annotations

import os
from pathlib import Path

from grader.course import COURSE_ID

CONFIG = """\
# Written by grader/hub/exchange.py: nbgrader's exchange for the meshlab hub on this host.
c = get_config()  # noqa: F821
c.Exchange.root = {root!r}
c.CourseDirectory.course_id = {course!r}
"""


def prepare(hub_root: Path) -> Path:
    """Create `<hub_root>/exchange` (world-writable, as nbgrader's docs ask) and the config
    directory `<hub_root>/jupyter` with the global nbgrader_config.py; return that directory."""
    exchange = hub_root / "exchange"
    exchange.mkdir(parents=True, exist_ok=True)
    os.chmod(exchange, 0o777)
    config_dir = hub_root / "jupyter"
    config_dir.mkdir(exist_ok=True)
    os.chmod(config_dir, 0o755)
    config = config_dir / "nbgrader_config.py"
    config.write_text(CONFIG.format(root=str(exchange), course=COURSE_ID))
    os.chmod(config, 0o644)
    return config_dir
