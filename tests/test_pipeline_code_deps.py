"""A training stage depends on every stilts module its cell imports that can change what it writes: the step,
the resume state, the MLM loss, the predictions, the task definitions (a module left out made `dvc repro`
report stale results as current after a change of it)."""

import ast
from pathlib import Path

from stilts import pipeline

SRC = Path(pipeline.__file__).resolve().parents[1]
# modules a cell imports that never change its outputs' values: the package's version, errors, file writing,
# logging to MLflow, signals, the remote's state; config and its checks reach the cells through the settings
# stage, the readers and the generated suite through the prepared data
OUTPUT_NEUTRAL = {"__init__.py", "errors.py", "io.py", "stop.py", "remote_state.py", "config.py", "config_checks.py",
                  "generate", "readers.py", "tracking"}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "stilts":
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "stilts"}
    return found


def _file(module: str) -> Path | None:
    base = SRC.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def closure(module: str) -> set[Path]:
    seen, todo = set(), [module]
    while todo:
        f = _file(todo.pop())
        if f is not None and f not in seen:
            seen.add(f)
            todo += sorted(_imports(f))
    return seen


def test_every_module_a_cell_imports_is_a_dependency_of_its_stage_or_output_neutral():
    covered = [SRC.parent / p for p in pipeline.TRAIN_CODE]
    missing = []
    for f in closure("stilts.cells"):
        rel = f.relative_to(SRC / "stilts")
        if rel.parts[0] in OUTPUT_NEUTRAL:
            continue
        if not any(f == c or c in f.parents for c in covered):
            missing.append(str(rel))
    assert missing == []


def test_the_closure_sees_the_training_step():  # the test above would pass on an empty closure
    names = {f.name for f in closure("stilts.cells")}
    assert {"train.py", "step.py", "resume.py", "mlm.py"} <= names
