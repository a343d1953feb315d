"""Look tasks up by name, with "did you mean" for typos."""

from __future__ import annotations

from stilts.errors import unknown
from stilts.tasks.base import Task

_TASKS: dict[str, Task] = {}
_LOADED = False


def register(*tasks: Task) -> None:
    for t in tasks:
        if t.name in _TASKS:
            raise ValueError(f"task '{t.name}' registered twice")
        _TASKS[t.name] = t


def _load() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        from stilts.tasks import acceptability, edge_probing, generated, glue, nli, probing, qa, spans, superglue  # noqa: F401  (each module registers its tasks)


def get(name: str) -> Task:
    _load()
    if name not in _TASKS:
        raise unknown("task", name, _TASKS)
    return _TASKS[name]


def names() -> list[str]:
    _load()
    return list(_TASKS)


def all_tasks() -> list[Task]:
    _load()
    return list(_TASKS.values())
