"""Do the packages keep to their floors? An import contract, read statically (ast) from every
module under labs/ and grader/, so nothing is imported to check it and an import inside a
function counts as much as one at the top (imports under `if TYPE_CHECKING:` never run: left out).

- The API server knows nothing of who uses it: no controllers, runtime or mesh.
- The runtime and the mesh share only what lies below both (labs/embedded/workload.py,
  subprocesses.py, loopback.py, paths.py, apps/), never each other.
- The learner helpers reach a cluster through labs.cluster only, never labs.embedded.

The first two hold for everything a module reaches, import after import; the last for a module's
own imports, since labs.cluster itself stands on labs.embedded.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("labs", "grader")


@dataclass(frozen=True)
class Import:
    """One import statement of a module, resolved to a module of the tree."""

    module: str  # the importing module
    path: Path
    line: int
    statement: str  # as written
    target: str  # the module it imports, absolute

    def __str__(self) -> str:
        return f"{self.module} (line {self.line}: `{self.statement}`)"


def _under(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in packages)


def _type_checking(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _statements(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement at any depth, except the ones only type checkers run."""
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    children = node.orelse if isinstance(node, ast.If) and _type_checking(node) else (
        ast.iter_child_nodes(node))
    for child in children:
        yield from _statements(child)


class Tree:
    """The modules of some packages under `root`, by dotted name, and what each imports."""

    def __init__(self, root: Path, packages: tuple[str, ...]) -> None:
        self.root = root
        self.packages = packages
        self._imports: dict[str, tuple[Import, ...]] = {}

    @cached_property
    def modules(self) -> dict[str, Path]:
        found = {}
        for package in self.packages:
            for path in sorted((self.root / package).rglob("*.py")):
                parts = list(path.relative_to(self.root).with_suffix("").parts)
                if parts[-1] == "__init__":
                    parts.pop()
                found[".".join(parts)] = path
        return found

    def _base(self, module: str, node: ast.ImportFrom) -> str:
        """The absolute module a `from` import names: each leading dot past the first is one
        package up from the importing module's package."""
        if not node.level:
            return node.module or ""
        package = module if self.modules[module].name == "__init__.py" else (
            module.rpartition(".")[0])
        parts = package.split(".")
        parts = parts[: len(parts) - (node.level - 1)]
        return ".".join([*parts, *([node.module] if node.module else [])])

    def imports(self, module: str) -> tuple[Import, ...]:
        """What `module` imports from the tree; `from X import y` is X and, when y is a module
        of its own, X.y."""
        if module not in self._imports:
            path = self.modules[module]
            found = []
            for node in _statements(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    targets = [alias.name for alias in node.names]
                else:
                    base = self._base(module, node)
                    targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
                found += [Import(module, path, node.lineno, ast.unparse(node), target)
                          for target in targets if target in self.modules]
            self._imports[module] = tuple(found)
        return self._imports[module]

    def chain(self, start: str, forbidden: tuple[str, ...]) -> list[Import] | None:
        """The shortest chain of imports from `start` to a module under `forbidden`."""
        via: dict[str, list[Import]] = {start: []}
        queue = deque([start])
        while queue:
            module = queue.popleft()
            for found in self.imports(module):
                if found.target in via:
                    continue
                chain = [*via[module], found]
                if _under(found.target, forbidden):
                    return chain
                via[found.target] = chain
                queue.append(found.target)
        return None


@dataclass(frozen=True)
class Floor:
    """Modules under `importers` must not import (when `transitive`: reach) `forbidden`."""

    name: str
    importers: tuple[str, ...]
    forbidden: tuple[str, ...]
    transitive: bool
    why: str

    def violations(self, tree: Tree) -> list[str]:
        """One line per offending import, naming the module, its line and the statement;
        for a transitive floor the imports that lead there follow it."""
        importers = [m for m in tree.modules if _under(m, self.importers)]
        found: dict[Import, list[Import]] = {}  # offending import -> the chain reaching it
        for module in importers:
            if self.transitive:
                chain = tree.chain(module, self.forbidden)
                if chain is not None and len(found.get(chain[-1], chain)) >= len(chain):
                    found[chain[-1]] = chain
            else:
                found.update({i: [i] for i in tree.imports(module)
                              if _under(i.target, self.forbidden)})
        lines = []
        for offending, chain in sorted(found.items(), key=lambda f: (f[0].module, f[0].line)):
            where = f"{offending.path.relative_to(tree.root)}:{offending.line}"
            line = f"{where}: {offending.module} imports {offending.target}: " \
                   f"`{offending.statement}`"
            if len(chain) > 1:
                line += "\n    reached from " + " -> ".join(str(i) for i in chain[:-1])
            lines.append(line)
        return lines


EMBEDDED = "labs.embedded"
SHARED_BELOW = ("what the runtime and the mesh share lies below both: labs/embedded/workload.py "
                "(pod annotations, the sidecar's environment, pod folders), subprocesses.py, "
                "loopback.py, paths.py, apps/")
MESH_PACKAGES = (f"{EMBEDDED}.mesh.istio", f"{EMBEDDED}.mesh.linkerd")
# The shared machinery: the modules directly in labs/embedded/mesh/ (not its subpackages).
SHARED_MESH = tuple(
    f"{EMBEDDED}.mesh.{path.stem}" for path in (REPO / "labs/embedded/mesh").glob("*.py")
    if path.stem != "__init__")
FLOORS = [
    Floor("apiserver-serves-all-alike", (f"{EMBEDDED}.apiserver",),
          (f"{EMBEDDED}.controllers", f"{EMBEDDED}.runtime", f"{EMBEDDED}.mesh"), True,
          "the API server knows nothing of its clients: the mesh registers admission hooks, "
          "the runtime serves exec and logs through the PodIO protocol"),
    Floor("mesh-not-runtime", (f"{EMBEDDED}.mesh",), (f"{EMBEDDED}.runtime",), True,
          SHARED_BELOW),
    Floor("runtime-not-mesh", (f"{EMBEDDED}.runtime",), (f"{EMBEDDED}.mesh",), True,
          SHARED_BELOW),
    Floor("shared-mesh-machinery-serves-every-mesh", SHARED_MESH, MESH_PACKAGES, True,
          "Envoy processes, xDS writing, the CA and telemetry serve every mesh; each control "
          "plane is a package over them, never the other way round"),
    Floor("istio-not-linkerd", (f"{EMBEDDED}.mesh.istio",), (f"{EMBEDDED}.mesh.linkerd",), True,
          "each mesh's control plane is its own package: what Istio does is found in mesh/istio"),
    Floor("linkerd-not-istio", (f"{EMBEDDED}.mesh.linkerd",), (f"{EMBEDDED}.mesh.istio",), True,
          "each mesh's control plane is its own package: what Linkerd does is found in "
          "mesh/linkerd, over the shared machinery in mesh/"),
    Floor("flagger-through-api-objects", (f"{EMBEDDED}.flagger",),
          (f"{EMBEDDED}.mesh", f"{EMBEDDED}.runtime"), True,
          "Flagger drives every mesh through the objects it writes (VirtualService, HTTPRoute, "
          "TrafficSplit) and reads metrics from Prometheus, as upstream's controller does"),
    Floor("learner-side-through-labs-cluster",
          ("labs.traffic", "labs.proxy", "labs.authz", "labs.checks", "labs.board",
           "labs.commands"),
          (EMBEDDED,), False,
          "the learner helpers run on every backend: they reach a cluster through labs.cluster "
          "(its capabilities), never the embedded cluster's internals"),
]


@pytest.fixture(scope="module")
def tree() -> Tree:
    return Tree(REPO, PACKAGES)


@pytest.mark.parametrize("floor", FLOORS, ids=lambda floor: floor.name)
def test_floor_holds(tree: Tree, floor: Floor) -> None:
    """Does no module under the floor's importers import what lies above it?"""
    assert any(_under(m, floor.importers) for m in tree.modules), (
        f"no module under {floor.importers}: the rule names packages that no longer exist")
    problems = floor.violations(tree)
    verb = "reach" if floor.transitive else "import"
    assert not problems, (
        f"{' / '.join(floor.importers)} must not {verb} {' / '.join(floor.forbidden)} "
        f"({floor.why}):\n" + "\n".join(problems))


def test_a_violation_names_module_line_and_import(tmp_path: Path) -> None:
    """Is a relative import resolved, and is a broken floor reported with the offending
    module, its line and the statement, plus the import that led there?"""
    files = {
        "labs/__init__.py": "",
        "labs/embedded/__init__.py": "",
        "labs/embedded/workload.py": "",
        "labs/embedded/mesh/__init__.py": "",
        "labs/embedded/mesh/plane.py": "from ..workload import X\nfrom . import helper\n",
        "labs/embedded/mesh/helper.py": "import json\n\n\ndef f():\n"
                                        "    from ..runtime.process import start\n",
        "labs/embedded/mesh/typed.py": "from typing import TYPE_CHECKING\n"
                                       "if TYPE_CHECKING:\n    from ..runtime import process\n",
        "labs/embedded/runtime/__init__.py": "",
        "labs/embedded/runtime/process.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    tree = Tree(tmp_path, ("labs",))
    assert {i.target for i in tree.imports("labs.embedded.mesh.plane")} == {
        "labs.embedded.workload", "labs.embedded.mesh", "labs.embedded.mesh.helper"}
    floor = Floor("mesh-not-runtime", ("labs.embedded.mesh",), ("labs.embedded.runtime",),
                  True, "")
    assert floor.violations(tree) == [
        "labs/embedded/mesh/helper.py:5: labs.embedded.mesh.helper imports "
        "labs.embedded.runtime.process: `from ..runtime.process import start`"]
    direct = Floor("direct", ("labs.embedded.mesh.plane",), ("labs.embedded.runtime",),
                   True, "")
    assert direct.violations(tree) == [
        "labs/embedded/mesh/helper.py:5: labs.embedded.mesh.helper imports "
        "labs.embedded.runtime.process: `from ..runtime.process import start`\n"
        "    reached from labs.embedded.mesh.plane (line 2: `from . import helper`)"]
