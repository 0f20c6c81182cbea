"""Where checks are found: by exact id or by dotted prefix (`day1`, `day1.mtls`).

Public checks live in `labs.checks.public.*` (shipped to learners); the grader's hidden checks
register themselves the same way when the grader imports them. Registration happens at import,
through the `check` decorator, so a lab module is the single place its checks are written.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

from labs.checks.model import Check, CheckFunction, Retry

_REGISTRY: dict[str, Check] = {}


class UnknownCheck(LookupError):
    """No check has this id or prefix."""

    def _render_traceback_(self) -> list[str]:
        """IPython shows this instead of a traceback: the message is all a learner needs."""
        return [f"{type(self).__name__}: {self}"]


def register(item: Check) -> Check:
    existing = _REGISTRY.get(item.id)
    if existing is not None and existing.func.__qualname__ != item.func.__qualname__:
        raise ValueError(f"check id {item.id!r} is defined twice")
    _REGISTRY[item.id] = item
    return item


def check(id: str, description: str, *, points: float = 1.0, hidden: bool = False,
          hint: str = "", anchor: str = "", fatal: bool = False, share_hint: bool = True,
          retry: Retry | None = None) -> Callable[[CheckFunction], CheckFunction]:
    """Decorator: register the decorated function as the check `id` (in file order)."""

    def decorate(func: CheckFunction) -> CheckFunction:
        register(Check(id, description, func, points=points, hidden=hidden, hint=hint,
                       anchor=anchor, fatal=fatal, share_hint=share_hint, retry=retry))
        return func

    return decorate


def load_public_checks() -> None:
    """Import every lab module under `labs.checks.public`, registering its checks."""
    import labs.checks.public as package

    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)


def find(selector: str, *, include_hidden: bool = False) -> list[Check]:
    """The checks whose id is `selector` or starts with `selector.`, in registration order."""
    load_public_checks()
    found = [c for c in _REGISTRY.values()
             if (c.id == selector or c.id.startswith(selector + "."))
             and (include_hidden or not c.hidden)]
    if not found:
        known = sorted({c.lab for c in _REGISTRY.values() if include_hidden or not c.hidden})
        raise UnknownCheck(f"no check or lab is called {selector!r}; known labs: "
                           f"{', '.join(known) or '(none)'}")
    return found


def lab_ids(*, include_hidden: bool = False) -> list[str]:
    """Every lab id that has checks, in registration order."""
    load_public_checks()
    return list(dict.fromkeys(c.lab for c in _REGISTRY.values()
                              if include_hidden or not c.hidden))
