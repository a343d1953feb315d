"""Per-task hyperparameter sweep, and where each training setting comes from.

Precedence for every training key of a task: an explicit `task_overrides.<task>` value, then the
sweep's winner for that task (results/sweep/<task>.json), then the global `train` value. A task
whose overrides fix every grid key is not swept. The winner is the best dev score; ties go to the
grid point that comes first (grid keys in the order written, values in the order listed).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

from stilts.errors import StiltsError
from stilts.io import read_json, sha256_text


def points(params, task: str | None = None) -> list[dict]:
    """The grid's points; a frozen-encoder probe also tries `study.frozen_probe_lr` (the paper: 1e-3)."""
    grid = dict(params.sweep.grid)
    frozen = task is not None and params.study.probe_mode == "frozen" and params.role_of(task) == "probe"
    if frozen and "lr" in grid and params.study.frozen_probe_lr not in grid["lr"]:
        grid["lr"] = [*grid["lr"], params.study.frozen_probe_lr]
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def result_path(params, task: str) -> Path:
    return params.path("results/sweep") / f"{task}.json"


def inputs_hash(params, task: str) -> str:
    """What a task's sweep result depends on, as its `dvc repro` stage sees it (less the code): the
    model, the task's settings before the sweep, the sweep and its points, and the prepared data."""
    meta = params.path(params.data.processed_dir) / task / "meta.json"
    inputs = {"model": dataclasses.asdict(params.model), "train": dataclasses.asdict(params.train_for(task)),
              "sweep": dataclasses.asdict(params.sweep), "points": points(params, task),
              "role": params.role_of(task), "probe_mode": params.study.probe_mode,
              "data": read_json(meta)["data_hash"] if meta.is_file() else None}
    return sha256_text(json.dumps(inputs, sort_keys=True, default=str))


def is_current(params, task: str) -> bool:
    """Whether results/sweep/<task>.json exists and was swept from the inputs there are now."""
    path = result_path(params, task)
    return path.is_file() and read_json(path).get("inputs") == inputs_hash(params, task)


def needs_sweep(params, task: str) -> bool:
    fixed = params.task_overrides.get(task, {})
    return params.sweep.enabled and not all(k in fixed for k in params.sweep.grid)


def settings_for(params, task: str):
    """(TrainCfg, {key: 'override' | 'sweep' | 'default'}) for one task."""
    explicit = params.task_overrides.get(task, {})
    chosen = {}
    if needs_sweep(params, task):
        path = result_path(params, task)
        if not path.is_file():
            raise StiltsError(f"{path}: no sweep result for '{task}'; run `stilts sweep --task {task}` "
                              "(or `dvc repro`), or fix its settings in task_overrides")
        chosen = read_json(path)["chosen"]
    merged = {**chosen, **explicit}
    source = {f.name: "default" for f in dataclasses.fields(params.train)}
    source |= {k: "sweep" for k in chosen} | {k: "override" for k in explicit}
    return dataclasses.replace(params.train, **merged), source


def choose(results: list[dict], metric_key: str = "score") -> int:
    """Index of the best result; the first one wins ties."""
    best = max(r[metric_key] for r in results)
    return next(i for i, r in enumerate(results) if r[metric_key] == best)
