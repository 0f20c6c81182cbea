"""The grader's hidden checks, one module per lab; importing this package registers them all
(with the same `@check` decorator as the public ones, `hidden=True`), after the public checks,
so a lab's public checks — and its fatal one — run first."""

import importlib
import pkgutil

from labs.checks.registry import load_public_checks


def _load() -> None:
    load_public_checks()
    for module in pkgutil.walk_packages(__path__, __name__ + "."):
        importlib.import_module(module.name)


_load()
