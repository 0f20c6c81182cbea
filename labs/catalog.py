"""The course in teaching order, read from `course.yaml` beside the lab notebooks: each lab's id,
notebook, learning goal, time estimate and what it owns. The workspace, the course home,
`meshlab progress`, `meshlab solve` and `meshlab reset` all read this one list.

The course source (the instructor notebooks and `course.yaml`) is the repository root unless
`$MESHLAB_COURSE_SOURCE` names another directory (tests and instructors with their own copy).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from labs.course import LabError

SOURCE_ENV = "MESHLAB_COURSE_SOURCE"
CATALOG_FILE = "course.yaml"
REPO_ROOT = Path(__file__).resolve().parents[1]


class CatalogError(LabError, ValueError):
    """course.yaml cannot be used, or a lab id is not in it; the message says what to fix."""


@dataclass(frozen=True)
class OwnedObject:
    """One object a lab creates in a namespace it shares with other labs."""

    namespace: str
    resource: str
    name: str

    @classmethod
    def parse(cls, text: str) -> OwnedObject:
        parts = text.split("/")
        if len(parts) != 3 or not all(parts):
            raise CatalogError(f"owned object {text!r} must be NAMESPACE/RESOURCE/NAME, e.g. "
                               f"bookinfo/virtualservices.networking.istio.io/reviews")
        return cls(*parts)


@dataclass(frozen=True)
class Lab:
    id: str
    day: str
    title: str
    notebook: str  # relative to the course source
    goal: str
    minutes: int
    namespaces: tuple[str, ...] = ()
    objects: tuple[OwnedObject, ...] = ()

    @property
    def number(self) -> str:
        """"1.2" for the second lab of day 1 (from the notebook's file name)."""
        return f"{self.day.removeprefix('day')}.{int(Path(self.notebook).name[:2])}"


@dataclass(frozen=True)
class Day:
    id: str
    title: str
    labs: tuple[Lab, ...]


@dataclass(frozen=True)
class Catalog:
    source: Path
    days: tuple[Day, ...]
    solutions: bool

    @property
    def labs(self) -> list[Lab]:
        return [lab for day in self.days for lab in day.labs]

    def lab(self, lab_id: str) -> Lab:
        for lab in self.labs:
            if lab.id == lab_id:
                return lab
        raise CatalogError(f"there is no lab {lab_id!r}; the labs are: "
                           f"{', '.join(lab.id for lab in self.labs)}")

    def through(self, first: str, last: str | None = None) -> list[Lab]:
        """The labs from `first` to `last` (inclusive) in course order."""
        ids = [lab.id for lab in self.labs]
        start = ids.index(self.lab(first).id)
        end = ids.index(self.lab(last).id) if last else start
        if end < start:
            raise CatalogError(f"{last} comes before {first} in the course; "
                               f"--through names a later lab")
        return self.labs[start:end + 1]


def source_root() -> Path:
    """The directory holding course.yaml and one folder per day (default: the repository)."""
    return Path(os.environ.get(SOURCE_ENV) or REPO_ROOT).expanduser().resolve()


def _title(notebook: Path) -> str:
    """The notebook's first heading without its "Day 1 · Lab 2 — " prefix."""
    import nbformat

    for cell in nbformat.read(notebook, as_version=4).cells:
        if cell.cell_type == "markdown" and cell.source.startswith("# "):
            return cell.source.splitlines()[0][2:].split(" — ", 1)[-1].strip()
    return notebook.stem


def _lab(day: str, entry: dict, source: Path) -> Lab:
    try:
        notebook = source / entry["notebook"]
        if not notebook.is_file():
            raise CatalogError(f"lab {entry['id']}: no notebook {notebook}")
        owns = entry.get("owns") or {}
        return Lab(id=str(entry["id"]), day=day, title=_title(notebook),
                   notebook=str(entry["notebook"]), goal=str(entry["goal"]),
                   minutes=int(entry["minutes"]),
                   namespaces=tuple(owns.get("namespaces") or ()),
                   objects=tuple(OwnedObject.parse(o) for o in owns.get("objects") or ()))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CatalogError):
            raise
        raise CatalogError(f"{source / CATALOG_FILE}: a lab entry needs id, notebook, goal and "
                           f"minutes ({type(exc).__name__}: {exc} in {entry!r})") from None


def load_catalog(source: Path | None = None) -> Catalog:
    """Read course.yaml (and each notebook's title) from the course source."""
    source = source or source_root()
    path = source / CATALOG_FILE
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise CatalogError(f"cannot read the course catalog {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("days"), list):
        raise CatalogError(f"{path} must have a list `days:`")
    days = tuple(Day(str(day["id"]), str(day.get("title", day["id"])),
                     tuple(_lab(str(day["id"]), entry, source) for entry in day["labs"]))
                 for day in data["days"])
    return Catalog(source, days, bool(data.get("solutions", True)))
