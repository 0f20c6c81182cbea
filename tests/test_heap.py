"""Does pinning glibc's malloc thresholds (labs/embedded/heap.py, done by the daemon) give big
freed blocks back to the kernel, where glibc's default keeps them once one such block was freed?

Each case runs in a fresh Python (malloc's state is per process): it frees one big block (which
raises glibc's dynamic threshold), allocates 30 MB of 256 KiB blocks with a small object after
them, frees the big blocks and prints how much resident anonymous memory went away.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from labs.embedded.heap import pin_malloc_thresholds

PROGRAM = """
import sys
from labs.embedded.heap import pin_malloc_thresholds

def anon_kb():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])

if sys.argv[1] == "pinned":
    assert pin_malloc_thresholds()
del bytearray(256 * 1024)[:]  # one big block freed: glibc raises its threshold
blocks = [bytearray(256 * 1024) for _ in range(120)]
for block in blocks:
    block[::4096] = b"x" * len(block[::4096])  # touch every page
keep = [bytearray(64) for _ in range(1000)]  # small blocks above the big ones
before = anon_kb()
del blocks
print(before - anon_kb())
"""


def released_kb(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True,
                            text=True, timeout=60, check=True)
    return int(result.stdout)


@pytest.mark.skipif(not pin_malloc_thresholds(), reason="needs glibc's mallopt (Linux)")
def test_pinned_thresholds_return_freed_big_blocks() -> None:
    assert released_kb("pinned") > 25_000
    assert released_kb("default") < 10_000  # what the daemon did before
