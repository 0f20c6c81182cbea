"""The runtime's side of the app twins' fork server (labs/embedded/apps/forkserver.py: what
it is, and how a forked twin matches `python -I -m`): started on the first twin, asked for one
twin at a time, told when each ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

from ..apps import forkserver as server
from ..subprocesses import child_setup


@dataclass
class ForkedTwin:
    """A forked twin as the runtime sees it (the parts of asyncio.subprocess.Process it uses)."""

    pid: int
    stdout: asyncio.StreamReader
    stderr: asyncio.StreamReader
    _exit: asyncio.Future[int]

    async def wait(self) -> int:
        """The return code, as asyncio reports a child's: -N when killed by signal N."""
        return await asyncio.shield(self._exit)


class ForkServer:
    """The daemon's handle on its fork server: started on first use (and again if it died),
    one request at a time."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._requests: socket.socket | None = None
        self._reader: asyncio.Task[None] | None = None
        # per request: (pid, its exit to come), or why it failed; one queue per server
        self._replies: asyncio.Queue[tuple[int, asyncio.Future[int]] | str] = asyncio.Queue()
        self._exits: dict[int, asyncio.Future[int]] = {}  # by pid, until the twin ends
        self._lock = asyncio.Lock()

    async def spawn(self, command: list[str], env: dict[str, str], cwd: Path) -> ForkedTwin:
        """Fork the twin `command` ([module, *args], see `server.twin_command`)."""
        loop = asyncio.get_running_loop()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            async with self._lock:
                requests = await self._running()
                body = json.dumps({"command": command, "env": env, "cwd": str(cwd)}).encode()
                socket.send_fds(requests, [server.HEADER.pack(len(body)) + body], [out_w, err_w])
                reply = await self._replies.get()
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        if isinstance(reply, str):
            os.close(out_r)
            os.close(err_r)
            raise OSError(f"the fork server could not start {command[0]}: {reply}")
        pid, exit_ = reply
        return ForkedTwin(pid, await _stream(loop, out_r), await _stream(loop, err_r), exit_)

    async def _running(self) -> socket.socket:
        if self._requests is not None and self._reader is not None and not self._reader.done():
            return self._requests
        if self._requests is not None:  # to a fork server that died
            self._requests.close()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._replies = asyncio.Queue()  # not the error a previous one left on its way out
        with theirs:
            self._proc = await asyncio.create_subprocess_exec(
                *server.command(theirs.fileno()), pass_fds=[theirs.fileno()],
                env=server.ENV, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, start_new_session=True,
                preexec_fn=child_setup())
        self._requests = ours
        self._reader = asyncio.create_task(self._read(self._proc))
        return ours

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        """Replies and exits until the fork server ends; then every twin it forked has died
        with it (PR_SET_PDEATHSIG), and so do pending requests. A twin's exit future exists
        from its pid's reply on, so an exit read before `spawn` resumes is not lost."""
        loop = asyncio.get_running_loop()
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            message = json.loads(line)
            if "exited" in message:
                exit_ = self._exits.pop(message["exited"], None)
                if exit_ is not None:
                    exit_.set_result(message["code"])
            elif "pid" in message:
                exit_ = self._exits[message["pid"]] = loop.create_future()
                self._replies.put_nowait((message["pid"], exit_))
            else:
                self._replies.put_nowait(str(message.get("error")))
        await proc.wait()
        for exit_ in self._exits.values():
            exit_.set_result(-signal.SIGKILL)
        self._exits.clear()
        self._replies.put_nowait(f"the fork server exited ({proc.returncode})")

    async def stop(self) -> None:
        """End the fork server (any twin still running dies with it)."""
        if self._requests is not None:
            self._requests.close()  # EOF: it exits
            self._requests = None
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


async def _stream(loop: asyncio.AbstractEventLoop, fd: int) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=2**20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                 os.fdopen(fd, "rb", buffering=0))
    return reader
