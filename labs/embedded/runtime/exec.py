"""`kubectl exec` over the Kubernetes WebSocket streaming protocol (channel.k8s.io, v1-v5).

Each binary frame starts with a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 error/status,
4 terminal resize; v5 adds 255 "close" (the client has no more stdin). From v4 on, channel 3
carries a `Status`: Success, or Failure with reason NonZeroExitCode and an ExitCode cause; a
command that cannot start is an InternalError worded as containerd words it. The command runs
on the host, in the container's working directory and environment (plus the pod-loopback shim,
pod_loopback.py, so that its `localhost` is the pod's), in its own session so that everything it
starts is killed when the client disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import signal
import struct
import termios
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from ..apiserver.errors import ApiError
from ..subprocesses import child_setup, kill_group
from . import pod_loopback
from .exec_user import exec_uid, open_workdir
from .process import exit_code

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io",
             "v2.channel.k8s.io", "channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


def _version(protocol: str) -> int:
    return int(protocol[1]) if protocol.startswith("v") else 1


def _failure(command: list[str], code: int) -> dict[str, Any]:
    return {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
            "message": f"command terminated with non-zero exit code: error executing command "
                       f"[{' '.join(command)}], exit code {code}",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


def _start_error(command: list[str], exc: OSError) -> dict[str, Any]:
    if isinstance(exc, FileNotFoundError) and exc.filename in (command[0], None):
        why = f'exec: "{command[0]}": executable file not found in $PATH'
    elif isinstance(exc, PermissionError):
        why = f'exec: "{command[0]}": permission denied'
    else:
        why = str(exc)
    message = ("Internal error occurred: error executing command in container: failed to exec "
               "in container: OCI runtime exec failed: exec failed: unable to start container "
               f"process: {why}: unknown")
    return {"metadata": {}, "status": "Failure", "reason": "InternalError", "code": 500,
            "message": message, "details": {"causes": [{"message": message}]}}


class ExecSession:
    """One exec: a process and a WebSocket, pumped both ways until the process ends."""

    def __init__(self, ws: web.WebSocketResponse, version: int, command: list[str],
                 env: dict[str, str], cwd: Path, stdin: bool, tty: bool, pids: set[int]) -> None:
        self.ws = ws
        self.pids = pids
        self.version = version
        self.command = command
        self.env = env
        self.cwd = cwd
        self.stdin = stdin
        self.tty = tty
        self._send_lock = asyncio.Lock()
        self._master: int | None = None  # pty master, when tty
        self._proc: asyncio.subprocess.Process | None = None

    async def send(self, channel: int, data: bytes) -> None:
        async with self._send_lock:
            with contextlib.suppress(ConnectionResetError):
                await self.ws.send_bytes(bytes([channel]) + data)

    async def _send_status(self, status: dict[str, Any]) -> None:
        if self.version >= 4:
            await self.send(ERROR, json.dumps(status).encode())
        elif status["status"] != "Success":
            await self.send(ERROR, status["message"].encode())

    async def run(self) -> None:
        try:
            await self._spawn()
        except OSError as exc:
            await self._send_status(_start_error(self.command, exc))
            return
        proc = self._proc
        assert proc is not None
        self.pids.add(proc.pid)
        finished = asyncio.create_task(self._pump_output_and_wait())
        client = asyncio.create_task(self._read_client())
        try:
            await asyncio.wait({finished, client}, return_when=asyncio.FIRST_COMPLETED)
            if not finished.done():  # the client went away: stop what it started
                kill_group(proc.pid, signal.SIGKILL)
                await proc.wait()
                return
            code = finished.result()
            await self._send_status({"metadata": {}, "status": "Success"} if code == 0
                                    else _failure(self.command, code))
        finally:
            for task in (finished, client):
                task.cancel()
            await asyncio.gather(finished, client, return_exceptions=True)
            if proc.returncode is None:
                kill_group(proc.pid, signal.SIGKILL)
                await proc.wait()
            self.pids.discard(proc.pid)
            if self._master is not None:
                os.close(self._master)

    async def _spawn(self) -> None:
        shim = await asyncio.to_thread(pod_loopback.shim)  # compiled on the first exec only
        common: dict[str, Any] = {"env": shim.exec_env(self.env), "cwd": self.cwd,
                                  "start_new_session": True}
        open_workdir(self.cwd)
        if self.tty:
            master, slave = os.openpty()
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    *self.command, stdin=slave, stdout=slave, stderr=slave,
                    preexec_fn=child_setup(controlling_tty=True, run_as=exec_uid()), **common)
            except OSError:
                os.close(master)
                raise
            finally:
                os.close(slave)
            os.set_blocking(master, False)
            self._master = master
            return
        self._proc = await asyncio.create_subprocess_exec(
            *self.command, stdin=asyncio.subprocess.PIPE if self.stdin else
            asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, preexec_fn=child_setup(run_as=exec_uid()), **common)

    async def _pump_output_and_wait(self) -> int:
        proc = self._proc
        assert proc is not None
        if self._master is not None:
            await self._pump_pty(self._master)
        else:
            await asyncio.gather(self._pump(proc.stdout, STDOUT), self._pump(proc.stderr, STDERR))
        return exit_code(await proc.wait())

    async def _pump(self, stream: asyncio.StreamReader | None, channel: int) -> None:
        assert stream is not None
        while data := await stream.read(32768):
            await self.send(channel, data)

    async def _pump_pty(self, master: int) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue()

        def readable() -> None:
            try:
                data = os.read(master, 32768)
            except BlockingIOError:
                return
            except OSError:  # EIO: every process holding the terminal has gone
                data = b""
            if not data:
                loop.remove_reader(master)
            queue.put_nowait(data)

        loop.add_reader(master, readable)
        try:
            while data := await queue.get():
                await self.send(STDOUT, data)
        finally:
            loop.remove_reader(master)

    async def _read_client(self) -> None:
        async for msg in self.ws:
            if msg.type == WSMsgType.TEXT:  # the Python client sends str input as text frames
                data = msg.data.encode()
            elif msg.type == WSMsgType.BINARY:
                data = msg.data
            else:
                continue
            if not data:
                continue
            channel, payload = data[0], data[1:]
            if channel == STDIN and payload:
                await self._write_stdin(payload)
            elif channel == RESIZE and self._master is not None:
                self._resize(payload)
            elif channel == CLOSE and payload[:1] == bytes([STDIN]):
                self._close_stdin()

    async def _write_stdin(self, data: bytes) -> None:
        if self._master is not None:
            while data:
                try:
                    written = os.write(self._master, data)
                except BlockingIOError:
                    await asyncio.sleep(0.01)
                    continue
                except OSError as exc:
                    if exc.errno == errno.EIO:
                        return
                    raise
                data = data[written:]
            return
        stdin = self._proc.stdin if self._proc else None
        if stdin is not None and not stdin.is_closing():
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                stdin.write(data)
                await stdin.drain()

    def _close_stdin(self) -> None:
        if self._master is not None:
            with contextlib.suppress(OSError):
                os.write(self._master, b"\x04")  # end of input on a terminal: ^D
            return
        stdin = self._proc.stdin if self._proc else None
        if stdin is not None:
            stdin.close()

    def _resize(self, payload: bytes) -> None:
        try:
            size = json.loads(payload)
            rows, cols = int(size.get("Height", 0)), int(size.get("Width", 0))
        except (ValueError, AttributeError, TypeError):
            return
        if self._master is not None and rows > 0 and cols > 0:
            with contextlib.suppress(OSError):
                fcntl.ioctl(self._master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


async def exec_websocket(request: web.Request, command: list[str], env: dict[str, str],
                         cwd: Path, stdin: bool, tty: bool, pids: set[int]
                         ) -> web.WebSocketResponse:
    """Upgrade `request` to a channel.k8s.io WebSocket and run `command` over it; the pid is in
    `pids` while it runs, so that stopping the container can stop it too."""
    ws = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=0)
    ready = ws.can_prepare(request)
    if not ready.ok:
        raise ApiError(400, "BadRequest", "exec needs a WebSocket upgrade with subprotocol "
                       "v5.channel.k8s.io or v4.channel.k8s.io (SPDY is not served by the "
                       "embedded cluster; use kubectl 1.31 or newer)")
    if ready.protocol is None:
        raise ApiError(400, "BadRequest", f"none of the offered WebSocket subprotocols is "
                       f"supported; use one of {', '.join(PROTOCOLS)}")
    await ws.prepare(request)
    try:
        await ExecSession(ws, _version(ready.protocol), command, env, cwd, stdin, tty,
                          pids).run()
    finally:
        await ws.close()
    return ws
