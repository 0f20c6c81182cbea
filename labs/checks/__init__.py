"""Checks: one source of truth for the notebook's "check my work", `meshlab check`, the
instructor board and nbgrader's hidden tests."""

from labs.checks.context import CheckContext, ClusterReadError
from labs.checks.model import Check, Outcome, Retry, Status, failed, passed, skipped, warned
from labs.checks.registry import UnknownCheck, check, find, lab_ids
from labs.checks.runner import Report, Result, run_checks, run_one

__all__ = ["Check", "CheckContext", "ClusterReadError", "Outcome", "Report", "Result", "Retry",
           "Status", "UnknownCheck", "check", "failed", "find", "lab_ids", "passed", "run_checks",
           "run_one", "skipped", "warned"]
