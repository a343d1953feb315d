"""The source tree's shape: no import cycle but the task registry's, no function over 80 lines."""

import ast
import graphlib
from pathlib import Path

SRC = Path(__file__).parents[1] / "src" / "stilts"
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict) -> set[str]:
    """The stilts modules `name` imports anywhere in its body (at the top or inside a function)."""
    def known(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {known(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, `level - 1` packages up
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            found |= {known(f"{base}.{a.name}") if f"{base}.{a.name}" in modules else known(base) for a in node.names}
    return found - {None, name}


def test_no_import_cycle_but_the_task_registrys():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    # the registry imports the task families, which import its base types: that cycle is the registry's own
    outside = {name: {d for d in deps if not (name.startswith("stilts.tasks") and d.startswith("stilts.tasks"))}
               for name, deps in graph.items()}
    try:
        list(graphlib.TopologicalSorter(outside).static_order())
    except graphlib.CycleError as e:
        raise AssertionError(f"import cycle: {' → '.join(e.args[1])}") from None


def test_no_function_over_80_lines():
    long = [f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in SRC.rglob("*.py") for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, long
