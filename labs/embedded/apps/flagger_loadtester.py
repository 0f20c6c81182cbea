"""Flagger load tester twin (`ghcr.io/fluxcd/flagger-loadtester`): the webhook receiver of
Flagger's canary analyses, which runs the load a canary needs while it is analysed.

Follows fluxcd/flagger `pkg/loadtester/server.go` (routes, status codes, bodies), `runner.go`
(the task runner: a command posted while the same canary's same command still runs is skipped,
checked every 100 ms), `task_shell.go` (`type: cmd`, the default: `sh -c`, in the background,
202) and `bash.go` (`type: bash`: `bash -c`, blocking; 200, or 500 with the command's output).
The payload is Flagger's `CanaryWebhookPayload` `{"name", "namespace", "phase", "metadata"}`;
`metadata.cmd` is typically `hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/`, and `hey`
is the twin's (labs/embedded/apps/hey.py, on the container's PATH), sending its requests through
the pod's network path. Gates: `/gate/approve` (200), `/gate/halt` (403), `/gate/check|open|close`
and `/rollback/check|open|close` keyed by `<name>.<namespace>`, in memory, as upstream.
Logs are zap-style JSON lines on stdout.

Not emulated, with a clear answer: task types `kubectl`, `helm`, `helmv3`, `concord`, `ngrinder`
(400), `/metrics` (upstream's Go runtime metrics; 404), and the container's command flags — the
embedded runtime does not run the image's command line, so `-timeout` is upstream's default
(1h) and `-namespace-regexp` is off.

    python -m labs.embedded.apps.flagger_loadtester --port 8080
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from .http import TwinHandler, add_port_option, serve

VERSION = "0.38.0"  # cmd/loadtester/main.go of the image in Flagger's kustomize/tester
TASK_TIMEOUT = 3600.0  # -timeout default (1h)
TICK = 0.1  # the task runner's interval
UNSUPPORTED_TYPES = ("kubectl", "helm", "helmv3", "concord", "ngrinder")


def log(level: str, msg: str, **fields: str) -> None:
    """One zap JSON line (Flagger's logger: ISO8601 time)."""
    ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    sys.stdout.write(json.dumps({"level": level, "ts": ts, "msg": msg, **fields}) + "\n")
    sys.stdout.flush()


@dataclass(frozen=True)
class CmdTask:
    canary: str  # <name>.<namespace>
    command: str
    log_output: bool

    @property
    def key(self) -> str:
        return self.canary + self.command  # upstream hashes this (fnv32) as the task's id

    def run(self) -> None:
        ok, out = run_shell("sh", self.command, TASK_TIMEOUT)
        if not ok:
            log("error", f"command failed {self.command} {out}", canary=self.canary)
            return
        if self.log_output:
            log("info", out, canary=self.canary)
        log("info", f"command finished {self.command}", canary=self.canary)


def run_shell(shell: str, command: str, timeout: float) -> tuple[bool, str]:
    """`shell -c command`, output and error combined (exec.CommandContext + CombinedOutput):
    (succeeded, output, with the exit status appended on failure as Go's error prints it)."""
    try:
        proc = subprocess.run([shell, "-c", command], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        output = expired.stdout or b""
        return False, f"{output.decode('utf-8', 'replace')}: signal: killed"
    except OSError as error:
        return False, f"exec: {shell!r}: {error.strerror}"
    text = proc.stdout.decode("utf-8", "replace")
    if proc.returncode != 0:
        status = (f"signal: {-proc.returncode}" if proc.returncode < 0
                  else f"exit status {proc.returncode}")
        return False, f"{text}: {status}"
    return True, text


class TaskRunner:
    """runner.go: tasks wait in a to-do map; every tick each starts in its own thread unless
    the same task (same canary, same command) is still running."""

    def __init__(self) -> None:
        self.todo: dict[str, CmdTask] = {}
        self.running: set[str] = set()
        self.lock = threading.Lock()
        self.total_execs = 0
        threading.Thread(target=self._loop, daemon=True).start()

    def add(self, task: CmdTask) -> None:
        with self.lock:
            self.todo[task.key] = task

    def _loop(self) -> None:
        while True:
            time.sleep(TICK)
            with self.lock:
                tasks, self.todo = list(self.todo.values()), {}
            for task in tasks:
                threading.Thread(target=self._run, args=(task,), daemon=True).start()

    def _run(self, task: CmdTask) -> None:
        with self.lock:
            if task.key in self.running:
                log("info", f"command skipped {task.command} is already running",
                    canary=task.canary)
                return
            self.running.add(task.key)
            self.total_execs += 1
        log("info", f"task starting {task.command}", canary=task.canary)
        try:
            task.run()
        finally:
            with self.lock:
                self.running.discard(task.key)


RUNNER: TaskRunner | None = None
GATES: dict[str, bool] = {}
GATES_LOCK = threading.Lock()


class PayloadError(ValueError):
    """The body is not a CanaryWebhookPayload."""


def payload_of(body: bytes) -> dict[str, object]:
    """Decode Flagger's webhook payload as Go's json.Unmarshal into CanaryWebhookPayload would:
    an object, string name/namespace/phase/checksum, `metadata` a map of strings."""
    try:
        payload = json.loads(body or b"null")
    except ValueError as error:
        raise PayloadError(f"decoding the request body failed: {error}") from None
    if not isinstance(payload, dict):
        raise PayloadError("decoding the request body failed: expected a JSON object")
    for key in ("name", "namespace", "phase", "checksum"):
        if not isinstance(payload.get(key, ""), str):
            raise PayloadError(f"decoding the request body failed: {key} must be a string")
    metadata = payload.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise PayloadError("decoding the request body failed: metadata must map strings to "
                           'strings, e.g. {"cmd": "hey -z 1m -q 10 -c 2 http://podinfo-canary'
                           '.test:9898/"}')
    return payload


class LoadTesterHandler(TwinHandler):
    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        path = self.url_path
        body = self.read_body()
        if path == "/healthz" or path == "/gate/approve":
            self.reply(200, "OK")
        elif path == "/gate/halt":
            self.reply(403, "Forbidden")
        elif path == "/metrics":
            self.reply(404, "the load tester twin exports no metrics (upstream serves Go "
                            "runtime metrics here)\n")
        elif path in GATE_ROUTES:
            self._gate(path, body)
        else:
            self._new_task(body)

    def _gate(self, path: str, body: bytes) -> None:
        try:
            payload = payload_of(body)
        except PayloadError as error:
            log("error", str(error))
            self.reply(400, b"")
            return
        prefix, action = GATE_ROUTES[path]
        key = f"{prefix}{payload.get('name', '')}.{payload.get('namespace', '')}"
        with GATES_LOCK:
            if action == "check":
                approved = GATES.setdefault(key, False)
            else:
                GATES[key] = action == "open"
        if action != "check":
            self.reply(202, b"")
            past = "opened" if action == "open" else "closed"
            log("info", f"{key} {'rollback' if prefix else 'gate'} {past}")
            return
        if approved:
            self.reply(200, "Approved")
        else:
            self.reply(403, "Forbidden")
        kind = "rollback check" if prefix else "gate check"
        log("info", f"{key} {kind}: approved {str(approved).lower()}")

    def _new_task(self, body: bytes) -> None:
        try:
            payload = payload_of(body)
        except PayloadError as error:
            log("error", str(error))
            self.reply(400, b"")
            return
        metadata = payload.get("metadata") or {}
        assert isinstance(metadata, dict)
        if not metadata:
            self.reply(400, "metadata not found in payload")
            return
        canary = f"{payload.get('name', '')}.{payload.get('namespace', '')}"
        kind = metadata.get("type", "cmd")
        command = metadata.get("cmd", "")
        if kind == "bash":
            log("info", f"bash command {command}", canary=str(payload.get("name", "")))
            ok, out = run_shell("bash", command, TASK_TIMEOUT)
            if not ok:
                log("error", f"command failed {command} {out}", canary=canary)
                self.reply(500, f"command {command} failed: {out}")
                return
            log("info", out, canary=canary)
            log("info", f"command finished {command}", canary=canary)
            wanted = metadata.get("returnCmdOutput", "false").lower() in ("1", "t", "true")
            self.reply(200, out if wanted else b"")
        elif kind in UNSUPPORTED_TYPES:
            self.reply(400, f"task type {kind} is not supported by the embedded cluster's load "
                            "tester twin: use type cmd or bash")
        elif kind != "cmd":
            self.reply(400, f"unknown task type {kind}")
        elif "cmd" not in metadata:
            self.reply(400, "cmd not found in metadata")
        else:
            assert RUNNER is not None
            log_output = metadata.get("logCmdOutput", "false").lower() in ("1", "t", "true")
            RUNNER.add(CmdTask(canary, command, log_output))
            self.reply(202, b"")


GATE_ROUTES = {
    "/gate/check": ("", "check"), "/gate/open": ("", "open"), "/gate/close": ("", "close"),
    "/rollback/check": ("rollback.", "check"), "/rollback/open": ("rollback.", "open"),
    "/rollback/close": ("rollback.", "close"),
}


def main(argv: list[str] | None = None) -> None:
    global RUNNER
    parser = argparse.ArgumentParser(prog="python -m labs.embedded.apps.flagger_loadtester")
    add_port_option(parser)
    ports = parser.parse_args(argv).port
    RUNNER = TaskRunner()
    log("info", f"Starting load tester v{VERSION} API on port "
                f"{', '.join(str(p) for p in ports)}")
    serve(LoadTesterHandler, ports, "flagger-loadtester")


if __name__ == "__main__":
    main()
