"""Who is in a class and where each student's cluster is: one roster for the instructor board
(`meshlab board --roster`) and live grading (`meshlab grade --roster`).

A roster is YAML:

    state_dir: /srv/meshlab          # optional: default state root for embedded clusters
    students:
      - name: alice
        cluster: alice               # an embedded cluster (`meshlab up --name alice`)
      - name: bob
        cluster: bob
        state_dir: /srv/other        # optional, per student
      - name: carol
        context: kind-carol          # a kube context (kind, vcluster, any cluster)
        kubeconfig: ~/.kube/config   # optional: default $KUBECONFIG or ~/.kube/config

or CSV with a header row, `student,cluster[,state_dir]` or `student,context[,kubeconfig]`.
Relative paths are relative to the roster file. A mistake is reported with the line and field.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from labs.cluster import ClusterAddress, ClusterError, EmbeddedCluster

STUDENT_FIELDS = {"name", "cluster", "state_dir", "context", "kubeconfig"}
CSV_HEADERS = ({"student", "cluster"}, {"student", "cluster", "state_dir"},
               {"student", "context"}, {"student", "context", "kubeconfig"})


class RosterError(ValueError):
    """The roster cannot be used; the message names the file, line and field."""


@dataclass(frozen=True)
class Student:
    """One row of the board: a name, and the address of the student's cluster."""

    name: str
    address: ClusterAddress

    @property
    def target(self) -> str:
        """How the board says where this student's checks run."""
        if self.address.context:
            return f"context {self.address.context}"
        return f"embedded {self.address.cluster}"

    def not_running(self) -> str | None:
        """Why this student's embedded cluster cannot be checked, or None (context clusters are
        probed by the check worker instead)."""
        embedded = self.address.embedded()
        if embedded is None or embedded.status().running:
            return None
        return (f"embedded cluster {embedded.name!r} is not running (start it with `meshlab up "
                f"--name {embedded.name} --state-dir {embedded.paths.root}`)")


def current_student(name: str | None = None, state_dir: str | None = None) -> Student:
    """The one row shown without a roster: the named embedded cluster, or else the cluster the
    environment selects (labs.cluster.current_cluster), named after itself."""
    if name or state_dir:
        embedded = EmbeddedCluster(name or os.environ.get("MESHLAB_CLUSTER"), state_dir)
        return Student(embedded.name, ClusterAddress(embedded.name, str(embedded.paths.root)))
    address = ClusterAddress.from_env(os.environ)
    embedded = address.embedded()
    if embedded is not None:
        return Student(embedded.name, ClusterAddress(embedded.name, str(embedded.paths.root)))
    assert address.context is not None
    return Student(address.context, address)


def load_roster(path: Path | str) -> list[Student]:
    """The students of a YAML or CSV roster (CSV when the file name ends in `.csv`)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise RosterError(f"cannot read the roster {path}: {exc.strerror or exc}") from None
    if path.suffix.lower() == ".csv":
        return parse_csv(text, path)
    return parse_yaml(text, path)


def parse_yaml(text: str, path: Path) -> list[Student]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise RosterError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(root, yaml.MappingNode):
        raise RosterError(f"{path}: expected a mapping with a `students:` list "
                          "(see the README, section 'Instructor board')")
    top = _mapping(root)
    unknown = set(top) - {"students", "state_dir"}
    if unknown:
        field = sorted(unknown)[0]
        raise RosterError(f"{path}, line {_line(top[field][0])}: unknown field {field!r} "
                          "(allowed: students, state_dir)")
    default_state = _scalar(top, "state_dir", path)
    students_node = top.get("students", (root, None))[1]
    if not isinstance(students_node, yaml.SequenceNode) or not students_node.value:
        raise RosterError(f"{path}, line {_line(root)}: `students` must be a non-empty list")
    students = []
    for item in students_node.value:
        if not isinstance(item, yaml.MappingNode):
            raise RosterError(f"{path}, line {_line(item)}: each student is a mapping with "
                              "`name` and `cluster` or `context`")
        fields = _mapping(item)
        for field, (key, _) in fields.items():
            if field not in STUDENT_FIELDS:
                raise RosterError(f"{path}, line {_line(key)}: unknown field {field!r} "
                                  f"(allowed: {', '.join(sorted(STUDENT_FIELDS))})")
        values = {field: _scalar(fields, field, path) for field in fields}
        if "state_dir" not in values and default_state and "cluster" in values:
            values["state_dir"] = default_state
        students.append(_student(values, path, f"{path}, line {_line(item)}"))
    return _unique(students, path)


def parse_csv(text: str, path: Path) -> list[Student]:
    reader = csv.DictReader(io.StringIO(text))
    header = {(name or "").strip() for name in reader.fieldnames or []}
    if header not in CSV_HEADERS:
        raise RosterError(
            f"{path}, line 1: the header must be `student,cluster[,state_dir]` or "
            f"`student,context[,kubeconfig]`, not {','.join(reader.fieldnames or []) or '(empty)'}")
    students = []
    for row in reader:
        where = f"{path}, line {reader.line_num}"
        if None in row:
            raise RosterError(f"{where}: more columns than the header has")
        values = {key.strip(): (value or "").strip() for key, value in row.items()}
        if not any(values.values()):
            continue
        values["name"] = values.pop("student")
        students.append(_student({k: v for k, v in values.items() if v}, path, where))
    if not students:
        raise RosterError(f"{path}: the roster lists no students")
    return _unique(students, path)


def _student(values: dict[str, str], path: Path, where: str) -> Student:
    name = values.get("name")
    if not name:
        raise RosterError(f"{where}: field 'name' (the student) is required")
    has_cluster, has_context = "cluster" in values, "context" in values
    if has_cluster == has_context:
        raise RosterError(f"{where}: student {name!r} needs exactly one of 'cluster' (an "
                          "embedded cluster name) or 'context' (a kube context)")
    if has_cluster and "kubeconfig" in values:
        raise RosterError(f"{where}: field 'kubeconfig' goes with 'context', not 'cluster'")
    if has_context and "state_dir" in values:
        raise RosterError(f"{where}: field 'state_dir' goes with 'cluster', not 'context'")
    student = Student(name, ClusterAddress(
        values.get("cluster"), _path(values.get("state_dir"), path), values.get("context"),
        _path(values.get("kubeconfig"), path)))
    try:
        student.address.embedded()  # validates the cluster name
    except ClusterError as exc:
        raise RosterError(f"{where}: field 'cluster': {exc}") from None
    return student


def _unique(students: list[Student], path: Path) -> list[Student]:
    seen: set[str] = set()
    for student in students:
        if student.name in seen:
            raise RosterError(f"{path}: student {student.name!r} is listed twice")
        seen.add(student.name)
    return students


def _path(value: str | None, roster: Path) -> str | None:
    if not value:
        return None
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (roster.parent / path).resolve())


def _mapping(node: yaml.MappingNode) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    return {str(key.value): (key, value) for key, value in node.value}


def _scalar(fields: dict[str, tuple[yaml.Node, yaml.Node]], field: str, path: Path) -> str:
    if field not in fields:
        return ""
    node = fields[field][1]
    if not isinstance(node, yaml.ScalarNode) or not str(node.value).strip():
        raise RosterError(f"{path}, line {_line(node)}: field {field!r} must be a non-empty "
                          "string")
    return str(node.value).strip()


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1
