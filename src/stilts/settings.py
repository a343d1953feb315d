"""Each task's effective settings, resolved from params into one small file per stage kind and task.

The DVC pipeline's first stage (`settings`, `stilts settings`) depends on the params file as a whole and
writes these files; every other stage depends on the files of its task instead of listing params keys. So a
change of params by any route (an edit, `dvc exp run -S`, a key that did not exist when `stilts pipeline`
wrote the stages) reaches exactly the stages whose resolved settings changed: a file's bytes change only
when its content does (sorted keys), and an unchanged file is not rewritten.

- `data/settings/prepare/<task>.json`: what `stilts prepare` reads: the task's declaration and data settings.
- `data/settings/train/<task>.json`: what its sweep and cells read: declaration, model, train settings after
  task_overrides, the sweep (when the task is swept), MLflow, probe mode, masked LM (intermediate tasks).
  The sweep's winner is in results/sweep/<task>.json, a dependency of the cells already.
- `data/settings/analyze.json`, `data/settings/rank.json`: the analysis's and the ranking's settings.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from stilts.config import parse_source
from stilts.io import atomic_write_text
from stilts.tasks import registry

DIR = "data/settings"


def prepare_path(task: str) -> str:
    return f"{DIR}/prepare/{task}.json"


def train_path(task: str) -> str:
    return f"{DIR}/train/{task}.json"


ANALYZE = f"{DIR}/analyze.json"
RANK = f"{DIR}/rank.json"


# not settings: where a task file lies, and words for people
NOT_SETTINGS = ("declared_in", "description", "licence_note")


def declaration(task: str) -> dict:
    """The task's declaration as plain data, as its task file says it (`convert` by the function's name; the
    function's code is a dependency of prepare, src/stilts/tasks)."""
    t = registry.get(task)
    decl = {f.name: getattr(t, f.name) for f in dataclasses.fields(t) if f.name not in NOT_SETTINGS}
    return decl | {"convert": t.convert.__name__ if t.convert else None}


def for_prepare(params, task: str) -> dict:
    t = registry.get(task)
    data = {"processed_dir": params.data.processed_dir}
    if t.generator:
        data |= {k: getattr(params.data, k) for k in ("generated_train", "generated_validation", "generated_seed")}
    else:
        data |= {"raw_dir": params.data.raw_dir, "files": params.data.files.get(task)}
    return {"task": declaration(task), "data": data}


def for_train(params, task: str) -> dict:
    from stilts import sweep

    swept = sweep.needs_sweep(params, task)
    intermediate = task in {parse_source(s)[0] for s in params.sources}
    return {"task": declaration(task), "model": dataclasses.asdict(params.model),
            "train": dataclasses.asdict(params.train_for(task)),
            "task_overrides": params.task_overrides.get(task, {}),  # they win over the sweep's winner
            "sweep": {**dataclasses.asdict(params.sweep), "points": sweep.points(params, task)} if swept else None,
            "role": params.role_of(task), "probe_mode": params.study.probe_mode,
            "frozen_probe_lr": params.study.frozen_probe_lr, "mlflow": dataclasses.asdict(params.mlflow),
            "mlm": dataclasses.asdict(params.mlm) if intermediate else None}


def for_analyze(params) -> dict:
    return {"mlflow": params.mlflow.experiment, "analysis": dataclasses.asdict(params.analysis),
            "tasks": dataclasses.asdict(params.tasks), "study": dataclasses.asdict(params.study)}


def for_rank(params, tasks: list[str]) -> dict:
    return {"rank": dataclasses.asdict(params.rank), "mlflow": params.mlflow.experiment,
            "intermediate": params.tasks.intermediate, "train": {t: for_train(params, t) for t in tasks}}


def rank_tasks(params) -> list[str]:
    """The targets and candidates of the study's ranking (they need prepared data too)."""
    if not params.rank.targets:
        return []
    from stilts.selection.rank import candidates_for

    return list(dict.fromkeys(params.rank.targets + [c for cs in candidates_for(params).values() for c in cs]))


def files(params) -> dict[str, dict]:
    """Every settings file of the study (path relative to the root → content)."""
    ranked = rank_tasks(params)
    out = {prepare_path(t): for_prepare(params, t) for t in dict.fromkeys(params.all_tasks + ranked)}
    out |= {train_path(t): for_train(params, t) for t in params.all_tasks}
    out[ANALYZE] = for_analyze(params)
    if params.rank.targets:
        out[RANK] = for_rank(params, ranked)
    return out


def text(content: dict) -> str:
    return json.dumps(content, indent=1, sort_keys=True, default=str) + "\n"


def write(params) -> list[Path]:
    """Write the files whose content differs from what is there (the others keep their bytes and times)."""
    written = []
    for rel, content in files(params).items():
        path, new = params.root / rel, text(content)
        if not path.is_file() or path.read_text(encoding="utf-8") != new:
            atomic_write_text(path, new)
            written.append(path)
    return written
