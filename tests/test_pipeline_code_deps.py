"""A training stage depends on every stilts module its cell imports that can change what it writes: the step,
the resume state, the MLM loss, the predictions, the task definitions (a module left out made `dvc repro`
report stale results as current after a change of it)."""

from pathlib import Path

from stilts import pipeline
from tests.test_structure import SRC as PACKAGE
from tests.test_structure import _imports, _modules

SRC = PACKAGE.parent

# modules a cell imports that never change its outputs' values: the package's version, errors, file writing,
# logging to MLflow, signals, the remote's state; config and its checks reach the cells through the settings
# stage, the readers and the generated suite through the prepared data
OUTPUT_NEUTRAL = {"__init__.py", "errors.py", "io.py", "stop.py", "remote_state.py", "config.py", "config_checks.py",
                  "generate", "readers.py", "tracking"}


def closure(module: str) -> set[Path]:
    """The files of `module` and of every stilts module it imports, directly or not (test_structure's walk)."""
    modules, seen, todo = _modules(), set(), [module]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += sorted(_imports(name, modules[name], modules))
    return {modules[name] for name in seen}


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
