"""Look tasks up by name, with "did you mean" for typos: the built-in tasks, then the project's task files
(both read by stilts.tasks.files)."""

from __future__ import annotations

from pathlib import Path

from stilts.errors import unknown
from stilts.tasks.base import Task

_TASKS: dict[str, Task] = {}  # the built-in tasks: the package's task files (stilts/tasks/builtin/)
_PROJECT: dict[str, Task] = {}  # from the task files of the project whose params were read last


def _load() -> None:
    if not _TASKS:
        from stilts.tasks.files import load_builtin

        _TASKS.update(load_builtin())


def use_project(folder: Path) -> None:
    """Read the project's task files (`data.tasks_dir`): every process that reads params sees the same tasks."""
    from stilts.tasks.files import load_dir

    _load()
    found = load_dir(Path(folder), _TASKS)
    _PROJECT.clear()
    _PROJECT.update(found)


def _all() -> dict[str, Task]:
    _load()
    return _TASKS | _PROJECT


def get(name: str) -> Task:
    tasks = _all()
    if name not in tasks:
        raise unknown("task", name, tasks)
    return tasks[name]


def names() -> list[str]:
    return list(_all())


def all_tasks() -> list[Task]:
    return list(_all().values())


def builtin(name: str) -> bool:
    _load()
    return name in _TASKS
