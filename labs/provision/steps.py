"""A provisioning step: the commands it runs (a pipeline of argv lists, as a shell would pipe
them), how long each attempt may take and how often it is retried. One description serves
both running a step (labs/provision/run.py) and printing it for `--dry-run`."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

RETRY_DELAY_S = 10.0  # between attempts of a readiness check (`--retry-delay`)


@dataclass(frozen=True)
class Step:
    title: str  # what the step does, as progress and failure messages name it
    pipeline: tuple[tuple[str, ...], ...]  # argv lists; each one's stdout feeds the next
    timeout_s: float = 120.0  # per attempt, for the whole pipeline
    retries: int = 0  # further attempts after a failure (readiness checks)
    stdin: str | None = None  # fed to the first command (kind's config)
    hint: str = ""  # what to do when the step fails for good
    refuse_if_listed: str | None = None  # fail when this line is in the output (a name taken)
    tools: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.stdin is not None and len(self.pipeline) != 1:
            raise ValueError(f"step {self.title!r}: stdin goes to a single command")
        object.__setattr__(self, "tools", tuple(argv[0] for argv in self.pipeline))

    def shell(self) -> str:
        """The step as one shell command line (a heredoc for its stdin), for `--dry-run`."""
        line = " | ".join(shlex.join(argv) for argv in self.pipeline)
        if self.stdin is None:
            return line
        return f"{line} <<'EOF'\n{self.stdin.rstrip()}\nEOF"
