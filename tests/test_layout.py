"""The package layout's import rules (DESIGN.md §2): the data flow one way, read off the code."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "softlabel_ood"
SUBPACKAGES = ("configs", "data", "training", "workdir", "experiment", "scoring", "analysis")
# package -> what no module of it may import, directly or through the modules it imports.
FORBIDDEN = {
    "scoring": ("training", "data", "flax"),
    "analysis": ("training", "data", "flax"),
    "data": ("training",),
    "workdir": ("training",),
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


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
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
    """softlabel_ood.training.train_step -> training; flax -> flax."""
    parts = name.split(".")
    if parts[0] != "softlabel_ood":
        return parts[0]
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in SUBPACKAGES) else "top"


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_never_reaches_what_it_may_not_import(package):
    graph = _graph()
    broken = []
    for module in sorted(m for m in graph if _group(m) == package):
        for target, importer in _reachable(graph, module).items():
            if _group(target) in FORBIDDEN[package]:
                broken.append(f"{module} reaches {target} (imported by {importer})")
    assert not broken, "\n".join(broken)


def test_the_rule_checker_sees_a_forbidden_import(tmp_path):
    # The checker itself: a scoring module importing training is found, directly or not.
    graph = {"softlabel_ood.scoring.x": {"softlabel_ood.workdir.y"},
             "softlabel_ood.workdir.y": {"softlabel_ood.training.z"},
             "softlabel_ood.training.z": {"flax"}}
    reached = _reachable(graph, "softlabel_ood.scoring.x")
    assert {_group(t) for t in reached} == {"workdir", "training", "flax"}


def test_scoring_and_analysis_load_without_training_data_or_flax():
    # What the import graph says, checked once more by Python itself: everything the core install
    # reads (scoring, the score command, analysis) loads none of the forbidden modules.
    modules = ["softlabel_ood.score", "softlabel_ood.scoring"] + [
        _module_name(p) for p in sorted((PACKAGE / "analysis").glob("*.py"))]
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'flax' or "
            "m.startswith(('softlabel_ood.training', 'softlabel_ood.data'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_module_lives_in_a_package_or_is_one_of_the_top_level_modules():
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top == ["__init__", "cli_errors", "command_line", "methods", "models", "predict",
                   "progress", "reproduce", "score", "train"]
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__") \
        == sorted(SUBPACKAGES)
