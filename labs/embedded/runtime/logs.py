"""`kubectl logs`: read a container's CRI log file, with tail, since, timestamps and follow.

Following reads the open file a few times a second, so it keeps reading the same run even after
a restart renames the file to `.previous.log`; it ends once that run has ended and everything it
wrote has been sent (or when the client goes away and the server stops iterating).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from itertools import chain
from pathlib import Path

from . import crilog

FOLLOW_POLL = 0.2
READ_CHUNK = 1 << 20


def _select(records: list[crilog.Record], tail_lines: int | None,
            since_seconds: int | None) -> list[crilog.Record]:
    lines = list(crilog.lines(records))
    if since_seconds is not None:
        cutoff = crilog.timestamp(time.time_ns() - since_seconds * 1_000_000_000)
        lines = [line for line in lines if line[0].stamp >= cutoff]
    if tail_lines is not None:
        lines = lines[-tail_lines:] if tail_lines > 0 else []
    return list(chain.from_iterable(lines))


async def stream(path: Path, *, follow: bool, tail_lines: int | None, since_seconds: int | None,
                 timestamps: bool, active: Callable[[], bool]) -> AsyncIterator[bytes]:
    """The log text; with `follow`, new lines while `active()` says the run still goes on."""
    renderer = crilog.Renderer(timestamps)
    with path.open("rb") as file:
        blob = await asyncio.to_thread(file.read)
        records, used = crilog.parse(blob)
        pending = blob[used:]
        text = renderer.render(_select(records, tail_lines, since_seconds))
        if text:
            yield text
        while follow:
            was_active = active()  # checked before reading: a run that ended has written all
            more = file.read(READ_CHUNK)
            if more:
                records, used = crilog.parse(pending + more)
                pending = (pending + more)[used:]
                text = renderer.render(records)
                if text:
                    yield text
                continue
            if not was_active:
                return
            await asyncio.sleep(FOLLOW_POLL)
