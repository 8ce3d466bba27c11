"""The house rules, read from the package's own imports (every `import`, at the top or inside a function).

Floors, bottom to top; a module may import from its own part, from lower floors, and never from a higher floor
or from another part of its own floor. So engine, data, models and config never import evaluation, deploy,
experiments, workflows or the CLI, and no two parts import each other.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cnnmode"
FLOORS = [
    {"errors"},                        # one-line errors with their exit codes
    {"files", "registry", "pretrained", "machine"},  # atomic writes and safe loads; the Registry; the shipped
                                       # models; the cores this process may use
    {"models", "figures"},             # the model registry and the built-in models; matplotlib for files
    {"config", "rundir"},              # the config object and recipes; a run folder's file names
    {"data", "artifact", "unknowns"},  # sources → loaders; the artifact file; the unknown-image score
    {"engine"},                        # model setup, the step and epoch loops, checkpoints
    {"evaluation", "deploy"},          # metrics, figures, report; runtimes, predict, export, bench
    {"workflows", "serve"},            # whole jobs: a training run from config to finished folder; the server
    {"experiments"},                   # many runs: ablations, search, cross-validation
    {"cli"},                           # verbs: parse, call the API, print
]
FLOOR = {part: i for i, parts in enumerate(FLOORS) for part in parts}
ENTRY = {"__init__", "__main__"}  # the package's face and `python -m cnnmode`


def part_of(module: str) -> str:
    """`cnnmode.engine.fit` → `engine`; `cnnmode.rundir` → `rundir`."""
    return module.split(".")[1]


def imports() -> dict[str, set[str]]:
    """Each module of the package (dotted) → the cnnmode modules it imports."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(("cnnmode",) + path.relative_to(PACKAGE).with_suffix("").parts)
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names if a.name.startswith("cnnmode.")}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cnnmode"):
                names |= ({node.module} if node.module != "cnnmode" else {_from_package(a.name) for a in node.names})
        found[module] = names
    return found


def _from_package(name: str) -> str:
    """`from cnnmode import X`: the submodule X, or the package's face (e.g. `__version__`)."""
    is_module = (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file()
    return f"cnnmode.{name}" if is_module else "cnnmode.__init__"


def test_every_part_has_a_floor():
    parts = {part_of(m) for m in imports() if m.count(".") >= 1} - ENTRY
    assert parts == set(FLOOR), f"parts without a floor: {parts - set(FLOOR)}; floors naming nothing: {set(FLOOR) - parts}"


def test_imports_only_go_down_or_stay_within_a_part():
    wrong = []
    for module, names in imports().items():
        here = part_of(module)
        if here in ENTRY:
            continue
        for name in names:
            there = part_of(name)
            if there in ENTRY:  # the face's constants (__version__) import nothing
                continue
            if there != here and (FLOOR[there] > FLOOR[here] or FLOOR[there] == FLOOR[here]):
                wrong.append(f"{module} imports {name} ({there} is on floor {FLOOR[there]}, {here} on {FLOOR[here]})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_between_parts():
    graph: dict[str, set[str]] = {}
    for module, names in imports().items():
        graph.setdefault(part_of(module), set()).update(part_of(n) for n in names if part_of(n) != part_of(module))

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph.get(start, ()))

    cycles = sorted(p for p in graph if p not in ENTRY and reaches(p, p, {p}))
    assert not cycles, f"parts on an import cycle: {cycles}"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_small_and_package_inits_are_faces(path):
    lines = path.read_text().splitlines()
    assert len(lines) <= 400, f"{path.name} has {len(lines)} lines; split it by concern"
    if path.name == "__init__.py" and path.parent != PACKAGE:
        tree = ast.parse(path.read_text())
        logic = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.For, ast.If, ast.While))]
        assert len(lines) <= 40 and not logic, f"{path} should only hand names on"


def test_the_architecture_page_names_every_package_and_module():
    """The docs' Architecture page names every package folder and every module of the package."""
    table = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    folders = sorted(str(p.parent.relative_to(PACKAGE)) + "/" for p in PACKAGE.rglob("__init__.py")
                     if p.parent != PACKAGE)
    missing = [f for f in folders if f not in table]
    modules = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" and p.parent != PACKAGE / "cli"
                     and not (p.parent == PACKAGE and p.stem in ENTRY))
    unnamed = [str(p.relative_to(PACKAGE)) for p in modules
               if not re.search(rf"\b{re.escape(p.stem if p.parent != PACKAGE else p.name)}\b", table)]
    assert not missing and not unnamed, f"not on docs/architecture.md: {missing + unnamed}"
