"""Keep the daemon's C heap from holding on to memory it has freed.

glibc's malloc serves a block of 128 KiB or more with its own mmap and unmaps it when freed, but
raises that threshold (up to 32 MiB) each time such a block is freed, after which big blocks come
from the heap, whose free space is only returned when it sits at the top. The daemon allocates
big short-lived blocks all the time (the telemetry server's /metrics text every second, JSON of
long lists, responses), so a Bookinfo cluster's daemon kept ~4 MB of freed memory resident.
Setting both thresholds pins them at their defaults (mallopt(3): setting one turns the dynamic
adjustment off), so big blocks go back to the kernel when freed.

Constants from glibc's malloc/malloc.h (`M_TRIM_THRESHOLD -1`, `M_MMAP_THRESHOLD -3`). Only on
Linux with glibc's `mallopt` (musl's returns 0 and changes nothing); elsewhere a no-op.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
THRESHOLD = 128 * 1024  # glibc's default for both


def pin_malloc_thresholds() -> bool:
    """Pin glibc's mmap and trim thresholds; True when malloc took them."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process' own libc
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, THRESHOLD))
