"""The package layout's import rules (DESIGN.md §2): the data flow one way, read off the code."""

from __future__ import annotations

import ast
import itertools
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "softlabel_ood"
SUBPACKAGES = ("configs", "data", "training", "workdir", "experiment", "scoring", "analysis")
# The command modules: thin mains on top of the library, which never imports them.
COMMANDS = ("train", "predict", "score", "reproduce", "import_outputs")
# package -> what no module of it may import, directly or through the modules it imports.
FORBIDDEN = {
    "scoring": ("training", "data", "flax", "commands"),
    "analysis": ("training", "data", "flax", "commands"),
    "data": ("training", "commands"),
    "workdir": ("training", "data", "commands"),
    "configs": ("training", "flax", "commands"),
    "training": ("commands",),
    "experiment": ("commands",),
    "top": ("commands",),
}


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path) -> set[str]:
    """Every module `path` imports at any depth of its code (local imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _loads_lazily(path: pathlib.Path) -> bool:
    """A package `__init__` with a module-level `__getattr__` (PEP 562) may load any of its
    modules when a name is first read, so it counts as importing them all."""
    return path.name == "__init__.py" and any(
        isinstance(node, ast.FunctionDef) and node.name == "__getattr__"
        for node in ast.parse(path.read_text()).body)


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = ({m for m in modules if m.rpartition(".")[0] == name}
                   if _loads_lazily(path) else set())
        for imported in _imports(path):
            if imported.startswith("softlabel_ood"):
                # `from softlabel_ood.data import datasets` names a module; keep what exists.
                targets.update(m for m in (imported, imported.rpartition(".")[0]) if m in modules)
            else:
                targets.add(imported.split(".")[0])
        graph[name] = targets
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> dict[str, str]:
    """Every module or top-level library reachable from `start`, with the module importing it."""
    seen, todo = {}, [start]
    while todo:
        current = todo.pop()
        for target in graph.get(current, ()):
            if target not in seen:
                seen[target] = current
                todo.append(target)
    return seen


def _group(name: str) -> str:
    """softlabel_ood.training.train_step -> training; softlabel_ood.train -> commands;
    softlabel_ood.methods -> top; flax -> flax."""
    parts = name.split(".")
    if parts[0] != "softlabel_ood":
        return parts[0]
    if len(parts) == 2 and parts[1] in COMMANDS:
        return "commands"
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in SUBPACKAGES) else "top"


def _package(name: str) -> str | None:
    """The node of the package graph: a subpackage, or a top-level module by its own name."""
    parts = name.split(".")
    if parts[0] != "softlabel_ood" or len(parts) == 1:
        return None
    return parts[1]


def _package_cycle(graph: dict[str, set[str]]) -> list[str]:
    """A cycle of the package graph (each package, then an import that leads to the next), or
    [] when the packages import one another in one direction only."""
    edges: dict[str, dict[str, str]] = {}
    for module, targets in sorted(graph.items()):
        for target in sorted(targets, key=lambda t: (-len(t), t)):  # a module before its package
            a, b = _package(module), _package(target)
            if a and b and a != b:
                edges.setdefault(a, {}).setdefault(b, f"{module} imports {target}")
    done, path = set(), []

    def visit(node):
        if node in path:
            cycle = [*path[path.index(node):], node]
            return [f"{a} -> {b} ({edges[a][b]})" for a, b in itertools.pairwise(cycle)]
        if node in done:
            return []
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if found := visit(nxt):
                return found
        path.pop()
        done.add(node)
        return []

    for start in sorted(edges):
        if found := visit(start):
            return found
    return []


def test_a_lazily_loading_package_counts_as_importing_its_modules():
    graph = _graph()
    assert "softlabel_ood.scoring.pipeline" in graph["softlabel_ood.scoring"]
    assert "softlabel_ood.scoring.pipeline" in _reachable(graph, "softlabel_ood.analysis.report")


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_never_reaches_what_it_may_not_import(package):
    graph = _graph()
    broken = []
    for module in sorted(m for m in graph if _group(m) == package):
        for target, importer in _reachable(graph, module).items():
            if _group(target) in FORBIDDEN[package]:
                broken.append(f"{module} reaches {target} (imported by {importer})")
    assert not broken, "\n".join(broken)


def test_no_two_packages_import_each_other_directly_or_through_others():
    cycle = _package_cycle(_graph())
    assert not cycle, "\n".join(cycle)


def test_the_cycle_checker_sees_a_cycle_through_a_third_package():
    graph = {"softlabel_ood.configs.a": {"softlabel_ood.experiment.b"},
             "softlabel_ood.experiment.b": {"softlabel_ood.training.c"},
             "softlabel_ood.training.c": {"softlabel_ood.configs.d", "flax"}}
    assert [line.split(" (")[0] for line in _package_cycle(graph)] == [
        "configs -> experiment", "experiment -> training", "training -> configs"]
    del graph["softlabel_ood.training.c"]
    assert _package_cycle(graph) == []


def test_the_rule_checker_sees_a_forbidden_import(tmp_path):
    # The checker itself: a scoring module importing training is found, directly or not.
    graph = {"softlabel_ood.scoring.x": {"softlabel_ood.workdir.y"},
             "softlabel_ood.workdir.y": {"softlabel_ood.training.z"},
             "softlabel_ood.training.z": {"flax"}}
    reached = _reachable(graph, "softlabel_ood.scoring.x")
    assert {_group(t) for t in reached} == {"workdir", "training", "flax"}
    assert _group("softlabel_ood.train") == "commands"
    assert _group("softlabel_ood.models") == "top"


def test_scoring_and_analysis_load_without_training_data_or_flax():
    # What the import graph says, checked once more by Python itself: everything the core install
    # reads (scoring, the score and import_outputs commands, analysis) loads none of the
    # forbidden modules.
    modules = ["softlabel_ood.score", "softlabel_ood.import_outputs", "softlabel_ood.scoring"] + [
        _module_name(p) for p in sorted((PACKAGE / "analysis").glob("*.py"))]
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'flax' or "
            "m.startswith(('softlabel_ood.training', 'softlabel_ood.data'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_module_lives_in_a_package_or_is_one_of_the_top_level_modules():
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top == ["__init__", "cli_errors", "command_line", "import_outputs", "methods",
                   "model_names", "models", "predict", "progress", "reproduce", "score", "train"]
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__") \
        == sorted(SUBPACKAGES)
