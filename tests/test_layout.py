"""The package's shape, read from its imports (ast): lower layers never import higher ones, no
module imports itself back through others, and no module grows past what one job needs."""

import ast
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
APPS = {"cli", "predict_cli", "dataset_cli", "demo", "doctor", "__init__"}
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(("instseg", *parts))
        modules[name.removesuffix(".__init__")] = path
    return modules


def _imports(path: Path) -> set[str]:
    """Every instseg module ``path`` imports at run time, at top level or inside functions."""
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            node.body = []  # annotations only: not imported at run time
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("instseg")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("instseg"):
            found.add(node.module)
    return found


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


def test_no_module_over_the_line_limit():
    long = {
        path.relative_to(PACKAGE).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    over = {name: lines for name, lines in long.items() if lines > MAX_LINES}
    assert not over, f"split these by job: {over}"


def test_every_package_init_only_reexports():
    for path in PACKAGE.rglob("__init__.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            ok = isinstance(
                node, ast.ImportFrom | ast.Import | ast.Assign | ast.Expr | ast.FunctionDef
            )
            assert ok, f"{path}: {ast.dump(node)[:80]}"
