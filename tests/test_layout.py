"""The package's shape, read from its imports and definitions (ast): lower layers never import
higher ones, no module imports itself back through others (``TYPE_CHECKING`` imports included),
what one module uses from another is public, names do not mislead, and functions stay short."""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "instseg"

# What each layer may import from instseg, besides itself. Top-level apps import anything.
ALLOWED = {
    "errors": set(),
    "io": {"errors"},
    "structures": set(),
    "config": {"errors", "io"},
    "modeling": {"errors", "config"},
    "data": {"errors", "io", "config", "structures"},
    "viz": {"errors", "io", "config", "structures"},
    "engine": {"errors", "io", "config", "data", "viz", "structures", "modeling"},
    "inference": {"errors", "io", "config", "data", "viz", "engine", "structures", "modeling"},
}
APPS = {"cli", "api", "demo", "doctor", "__init__"}
# A function longer than this is split, unless it only declares (a config schema, argparse
# options): those are listed here.
MAX_FUNCTION_LINES = 60
DECLARATIVE = {"instseg.config.add_instseg_config", "instseg.cli.predict.add_predict_options"}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(("instseg", *parts))
        modules[name.removesuffix(".__init__")] = path
    return modules


def _import_nodes(path: Path) -> list[tuple[str, str | None, int]]:
    """(instseg module, name taken from it or None, line) of every import of ``path``: at top
    level, inside functions and under ``TYPE_CHECKING``."""
    modules = _modules()
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [
                (a.name, None, node.lineno) for a in node.names if a.name.startswith("instseg")
            ]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("instseg"):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if submodule in modules:
                    found.append((submodule, None, node.lineno))
                else:
                    found.append((node.module, alias.name, node.lineno))
    return found


def _imports(path: Path) -> set[str]:
    """Every instseg module ``path`` imports."""
    return {module for module, _, _ in _import_nodes(path)}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_lower_layers_never_import_higher_ones():
    wrong = []
    for module, path in _modules().items():
        layer = _layer(module)
        if layer in APPS:
            continue
        for imported in _imports(path):
            target = _layer(imported)
            if target != layer and target not in ALLOWED[layer]:
                wrong.append(f"{module} imports {imported}")
    assert not wrong, "\n".join(wrong)


def test_every_layer_is_declared():
    layers = {_layer(m) for m in _modules()}
    assert layers <= set(ALLOWED) | APPS, layers - set(ALLOWED) - APPS


def test_no_import_cycles():
    modules = _modules()
    graph = {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}
    # A package's __init__ re-exports its modules; importing the package is not a cycle of theirs.
    packages = {m for m, p in modules.items() if p.name == "__init__.py"}
    graph = {m: {i for i in deps if i not in packages} for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep) :] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_no_private_name_is_imported_from_another_module():
    private = [
        f"{module}:{line} imports {name} from {source}"
        for module, path in _modules().items()
        for source, name, line in _import_nodes(path)
        if name and re.fullmatch(r"_[^_].*", name) and source != module
    ]
    assert not private, "make these public, or move the code where it is used:\n" + "\n".join(
        private
    )


def test_no_function_needs_scrolling():
    long = []
    for module, path in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES and f"{module}.{node.name}" not in DECLARATIVE:
                long.append(f"{module}.{node.name}: {lines} lines")
    assert not long, "split these by step:\n" + "\n".join(long)


def test_names_do_not_mislead():
    """No module is named like a sub-package, and no two modules of a package differ only by
    an ending (``video.py`` beside ``videos.py``, ``predict.py`` beside ``predictor.py``)."""
    modules = _modules()
    packages = {m.rsplit(".", 1)[-1] for m, p in modules.items() if p.name == "__init__.py"}
    clashes = [m for m, p in modules.items() if p.name != "__init__.py" and p.stem in packages]
    by_package: dict[Path, list[str]] = {}
    for path in modules.values():
        by_package.setdefault(path.parent, []).append(path.stem)
    twins = [
        f"{folder.name}/{a}.py and {b}.py"
        for folder, stems in by_package.items()
        for a in stems
        for b in stems
        if a != b and b.startswith(a) and re.fullmatch(r"_?(s|r|er|or|ion|_cli)", b[len(a) :])
    ]
    assert not clashes and not twins, clashes + twins


def test_every_package_init_only_reexports():
    for path in PACKAGE.rglob("__init__.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            ok = isinstance(
                node, ast.ImportFrom | ast.Import | ast.Assign | ast.Expr | ast.FunctionDef
            )
            assert ok, f"{path}: {ast.dump(node)[:80]}"
