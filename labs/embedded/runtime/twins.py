"""Which built-in twin runs a container image.

Images are simulated: nothing is pulled, and a container's `command`/`args` are not run. A known
image maps to a twin written for it; any other image runs the generic HTTP echo server, listening on
the host ports of the container's ports. New twins register here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Twin:
    description: str  # said in the `Simulated` event, e.g. "generic HTTP echo server"
    known: bool  # written for this image (Normal event) or the fallback (Warning event)
    argv: Callable[[list[int]], list[str]]  # host ports to listen on -> command line


def _echo_argv(ports: list[int]) -> list[str]:
    argv = [sys.executable, "-I", "-m", "labs.embedded.apps.echo"]
    for port in ports:
        argv += ["--port", str(port)]
    return argv


GENERIC_ECHO = Twin("generic HTTP echo server", False, _echo_argv)


def twin_for(image: str) -> Twin:
    """The twin for `image`; only the generic echo server exists so far."""
    return GENERIC_ECHO
