"""Running `linkerd check`'s categories and printing the results as upstream does
(linkerd/linkerd2 `pkg/healthcheck/healthcheck.go` `runCheck`, `healthcheck_output.go`
`runChecksTable`/`runChecksJSON`, `cli/cmd/check.go` for which categories each mode runs).

A fatal check that fails ends the run; a retryable one is tried again each second until `--wait`
runs out (upstream prints its retries only on a terminal, as a spinner: not here)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TextIO

from labs.linkerd.checks import (
    FAIL,
    HINT_BASE,
    OK,
    WARN,
    Checker,
    CheckFailed,
    Context,
    Result,
    Skip,
    Unsupported,
)
from labs.linkerd.core_checks import categories
from labs.linkerd.kube import KubeError

RETRY_S = 1.0  # retryWindow
BASE = ["kubernetes-api", "kubernetes-version", "gateway-api-crd", "linkerd-version"]
CONTROL_PLANE = ["linkerd-config", "linkerd-existence", "linkerd-identity",
                 "linkerd-webhooks-and-apisvc-tls", "linkerd-control-plane-proxy"]


def core_categories(pre: bool, proxy: bool) -> list[tuple[str, list[Checker]]]:
    """configureAndRunChecks: the categories the mode runs, in allCategories' order."""
    if pre:
        enabled = {*BASE, "pre-kubernetes-setup"}
    else:
        extra = (["linkerd-data-plane", "linkerd-identity-data-plane"] if proxy
                 else ["control-plane-version", "linkerd-extension-checks"])
        enabled = {*BASE, *CONTROL_PLANE, *extra}
    return [(name, checkers) for name, checkers in categories() if name in enabled]


def _attempt(checker: Checker, ctx: Context) -> tuple[str | None, bool]:
    """(error, forced warning) of one try; Skip propagates."""
    try:
        checker.run(ctx)
    except CheckFailed as exc:
        return str(exc), False
    except Unsupported as exc:
        return str(exc), True
    except KubeError as exc:
        return str(exc), False
    return None, False


def _settled(checker: Checker, ctx: Context, deadline: float) -> tuple[str | None, bool]:
    """The check's final (error, forced warning): retried while it fails and may retry."""
    while True:
        error, forced = _attempt(checker, ctx)
        if error is None or forced or not checker.retry or time.monotonic() >= deadline:
            return error, forced
        time.sleep(RETRY_S)


def run(ctx: Context, catalog: list[tuple[str, list[Checker]]], wait_s: float,
        observe: Callable[[Result], None]) -> tuple[bool, bool]:
    """(success, warning) over the categories, each result passed to `observe`."""
    deadline = time.monotonic() + wait_s
    success, warning = True, False
    for category, checkers in catalog:
        for checker in checkers:
            try:
                error, forced = _settled(checker, ctx, deadline)
            except Skip:
                continue
            result = Result(category, checker.description, error,
                            warning=checker.warning or forced,
                            hint=f"{HINT_BASE}{checker.hint_anchor}")
            observe(result)
            if result.error is None:
                continue
            if result.warning:
                warning = True
                continue
            success = False
            if checker.fatal:
                return success, warning
    return success, warning


class TablePrinter:
    """runChecksTable: category headers underlined with dashes, `√ description`, errors and
    hints indented by four spaces; `short` prints only the checks that did not pass."""

    def __init__(self, out: TextIO, short: bool = False) -> None:
        self.out = out
        self.short = short
        self.category = ""

    def __call__(self, result: Result) -> None:
        if self.short and result.error is None:
            return
        if result.category != self.category:
            if self.category:
                self.out.write("\n")
            self.out.write(f"{result.category}\n{'-' * len(result.category)}\n")
            self.category = result.category
        status = OK if result.error is None else WARN if result.warning else FAIL
        self.out.write(f"{status} {result.description}\n")
        if result.error is not None:
            self.out.write(f"    {result.error}\n    see {result.hint} for hints\n")
        self.out.flush()

    def finish(self, success: bool, warning: bool) -> None:
        """The blank line (not in short output without problems) and PrintChecksResult."""
        if not self.short or not success or warning:
            self.out.write("\n")
        self.out.write(f"Status check results are {OK if success else FAIL}\n")


class JsonCollector:
    """runChecksJSON: {"success", "categories": [{"categoryName", "checks": [...]}]}."""

    def __init__(self) -> None:
        self.categories: list[dict[str, object]] = []

    def __call__(self, result: Result) -> None:
        if not self.categories or self.categories[-1]["categoryName"] != result.category:
            self.categories.append({"categoryName": result.category, "checks": []})
        check: dict[str, str] = {"description": result.description}
        if result.error is not None:
            check["hint"] = result.hint
            check["error"] = result.error
        check["result"] = ("success" if result.error is None
                           else "warning" if result.warning else "error")
        checks = self.categories[-1]["checks"]
        assert isinstance(checks, list)
        checks.append(check)

    def dumps(self, success: bool) -> str:
        return json.dumps({"success": success, "categories": self.categories}, indent=2,
                          ensure_ascii=False) + "\n"
