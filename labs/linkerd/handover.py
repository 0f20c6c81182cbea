"""Handing `linkerd` over to the real binary on a cluster that is not an embedded one.

The cluster is chosen as for `istioctl` (`labs.istioctl.handover.select`: `--kubeconfig`,
`KUBECONFIG`, `--context`, `MESHLAB_CONTEXT`); the real binary is the pinned one that
`meshlab tools install linkerd` puts in .tools/bin (labs/setup/tools.py).
"""

from __future__ import annotations

import os
import sys

from labs.setup.tools import ToolsError, tool_path


def hand_over(argv: list[str]) -> int:
    """exec the pinned linkerd with `argv`; without one, say how to install it (exit 1)."""
    try:
        binary = str(tool_path("linkerd"))
    except ToolsError as exc:
        print(f"Error: this cluster is not a meshlab embedded cluster, so the real linkerd is "
              f"needed: {exc}", file=sys.stderr)
        return 1
    sys.stdout.flush()
    os.execv(binary, [binary, *argv])
    return 0  # not reached: execv replaces the process
