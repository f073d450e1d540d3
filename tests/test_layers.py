"""The package layers hold: every import (top level or inside a function) runs downwards.

    apps                      (demo, demo_real, synth world, localize)
    pipeline | train | eval   (side by side: none imports another)
    htf                       (the core: imports none of the above)

and no two project files import each other, directly or around a loop.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAYER = {"htf": 0, "pipeline": 1, "train": 1, "eval": 1, "apps": 2}


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules(root: Path) -> dict[str, Path]:
    """Dotted name -> file, for every .py file of the layered packages under ``root``."""
    return {module_name(root, path): path for package in LAYER
            for path in sorted((root / package).rglob("*.py"))}


def imported_names(path: Path, module: str) -> set[str]:
    """Every dotted name ``path`` imports, anywhere in the file; ``from a import b`` gives
    ``a.b`` as well as ``a`` so that importing a submodule counts as importing it."""
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:   # relative: resolve against the importing package
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the project modules it imports (names resolved to existing files)."""
    modules = project_modules(root)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = {name for name in imported_names(path, module) if name in modules}
        graph[module] = targets - {module}
    return graph


def top(module: str) -> str:
    return module.split(".")[0]


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports from a lower layer to a higher one, or across the three middle packages."""
    found = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            src, dst = top(module), top(target)
            if src == dst:
                continue
            if LAYER[dst] > LAYER[src]:
                found.append(f"{module} (layer {src}) imports higher layer {target}")
            elif LAYER[dst] == LAYER[src]:
                found.append(f"{module} imports its sibling package {target}")
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in LAYER:
        (root / package).mkdir(exist_ok=True)
    return root


# ------------------------------------------------------------------ the repository itself

def test_the_scan_sees_every_layer_of_the_repository():
    modules = project_modules(REPO)
    assert {top(m) for m in modules} == set(LAYER)
    assert import_graph(REPO)["apps.demo"], "apps.demo imports project modules; the scan must see them"


def test_no_module_imports_a_higher_layer_or_a_sibling_package():
    assert layer_violations(import_graph(REPO)) == []


def test_no_project_files_import_each_other_in_a_loop():
    assert import_cycles(import_graph(REPO)) == []


# ------------------------------------------------------------------ the checker catches breaks

def test_an_import_inside_a_function_from_core_to_train_is_reported(tmp_path):
    root = write_tree(tmp_path, {"htf/__init__.py": "", "train/__init__.py": "", "train/model.py": "",
                                 "htf/inputs.py": "def f():\n    from train.model import X\n"})
    assert layer_violations(import_graph(root)) == ["htf.inputs (layer htf) imports higher layer train.model"]


def test_train_importing_eval_is_reported_as_sibling_import(tmp_path):
    root = write_tree(tmp_path, {"train/__init__.py": "", "eval/__init__.py": "", "eval/metrics.py": "",
                                 "train/engine.py": "from eval import metrics\n"})
    assert layer_violations(import_graph(root)) == ["train.engine imports its sibling package eval",
                                                    "train.engine imports its sibling package eval.metrics"]


def test_apps_importing_every_lower_package_is_allowed(tmp_path):
    root = write_tree(tmp_path, {f"{p}/__init__.py": "" for p in LAYER} | {
        "apps/demo.py": "import htf, pipeline, train, eval\nfrom apps import synth\n", "apps/synth.py": ""})
    assert layer_violations(import_graph(root)) == []


def test_two_files_importing_each_other_through_a_relative_import_form_a_cycle(tmp_path):
    root = write_tree(tmp_path, {"pipeline/__init__.py": "", "pipeline/a.py": "from . import b\n",
                                 "pipeline/b.py": "from pipeline.c import x\n",
                                 "pipeline/c.py": "def g():\n    import pipeline.a\n"})
    assert import_cycles(import_graph(root)) == [["pipeline.a", "pipeline.b", "pipeline.c"]]
