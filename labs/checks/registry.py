"""Where checks are found: by exact id or by dotted prefix (`day1`, `day1.mtls`).

Registration happens at import, through the `check` decorator, so a lab module is the single
place its checks are written, and `load_checks` is the one way every reader (notebook,
`meshlab check`, board, its workers, the grader's verifier) imports them: the public checks in
`labs.checks.public.*` (shipped to learners), then on request the hidden ones — packages that
an installed distribution declares under the entry point group `meshlab.hidden_checks` (the
course's `grader.hidden`, named in pyproject.toml, so `labs` never imports `grader`) — then a
reader's own extra modules.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

from labs.checks.model import Check, CheckFunction, Retry

HIDDEN_CHECKS_GROUP = "meshlab.hidden_checks"
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


def load_checks(hidden: bool = False, extra: Iterable[str] = ()) -> None:
    """Register checks by importing their modules, public ones first so each lab's public
    checks keep their place (a fatal one leads): every module of `labs.checks.public`; with
    `hidden`, every module of the packages installed under HIDDEN_CHECKS_GROUP (ImportError
    when there are none); then `extra`, module names or `.py` files."""
    import labs.checks.public as public

    _import_package(public)
    if hidden:
        packages = entry_points(group=HIDDEN_CHECKS_GROUP)
        if not packages:
            raise ImportError(f"no package of hidden checks is installed (entry point group "
                              f"{HIDDEN_CHECKS_GROUP}); install the course checkout with "
                              "`pip install -e .`")
        for package in packages:
            _import_package(package.load())
    for item in extra:
        _import_extra(item)


def _import_package(package: ModuleType) -> None:
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)


def _import_extra(item: str) -> None:
    """A module by name, or a `.py` file by path (a course's own labs kept elsewhere)."""
    if not item.endswith(".py"):
        importlib.import_module(item)
        return
    path = Path(item)
    spec = importlib.util.spec_from_file_location(f"_checks_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load checks from {path}")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


def find(selector: str, *, include_hidden: bool = False) -> list[Check]:
    """The checks whose id is `selector` or starts with `selector.`, in registration order."""
    load_checks()
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
    load_checks()
    return list(dict.fromkeys(c.lab for c in _REGISTRY.values()
                              if include_hidden or not c.hidden))
