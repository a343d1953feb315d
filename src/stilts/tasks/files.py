"""Task declarations as YAML files: the built-in tasks' in the package (`stilts/tasks/builtin/<name>.yaml`), the
project's own in `tasks/<name>.yaml` (`data.tasks_dir`). Both are read here, with the same keys and checks.

The keys are the fields of `Task` (type, metric, format, files, fields, labels, convert, hub, ...); a file is
checked when it is read, like params.yaml: one line naming the file and the key, with "did you mean" for typos.
What needs the data (a column the rows lack, a dev label unseen in train) is checked when it is prepared.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from pathlib import Path

from stilts.errors import StiltsError, did_you_mean
from stilts.io import atomic_write_text
from stilts.tasks.base import ROLES, Task

BUILTIN_DIR = Path(__file__).parent / "builtin"
SPLIT_KEYS = ("train", "validation", "all")
# the task's name is the file's; the file a project's task came from is recorded, not written
KEYS = tuple(f.name for f in dataclasses.fields(Task) if f.name not in ("name", "declared_in"))
# the record fields each type reads (fields: record field -> column); the types not listed take any (and the
# switches their modules read, e.g. edge probing's `two_spans: true`)
TYPE_FIELDS = {"classification": ("text_a", "text_b", "label"), "regression": ("text_a", "text_b", "label"),
               "multiple_choice": ("context", "question", "choices", "label", "label_offset")}
REQUIRED_FIELDS = {"multiple_choice": ("choices",)}
# the metrics that read each type's predictions (every type; named here so that reading a task file needs
# neither numpy nor the metrics module)
TYPE_METRICS = {"classification": ("accuracy", "f1", "macro_f1", "acc_f1", "mcc"),
                "regression": ("pearson_spearman",), "multiple_choice": ("accuracy",), "span_pair": ("accuracy",),
                "edge_probing": ("micro_f1",), "tagging": ("token_accuracy",), "span_qa": ("span_f1_em",),
                "grouped_binary": ("multirc_f1a_em", "record_f1_em")}
NAME = re.compile(r"^[a-z0-9_]+$")


def shown(path: Path) -> str:
    """The file as the user would name it: relative to the working directory when inside it."""
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else str(path)


def _read_yaml(path: Path) -> dict:
    import yaml

    where = shown(path)
    try:  # libyaml's parser when PyYAML has it: several times faster
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except UnicodeDecodeError:
        raise StiltsError(f"{where}: not UTF-8 text") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise StiltsError(f"{where}{f':{mark.line + 1}' if mark else ''}: invalid YAML: "
                          f"{getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise StiltsError(f"{where}: a task file is a mapping of {', '.join(KEYS[:6])}, ...; got {raw!r}")
    return raw


def _choice(value, choices, key: str, where: str, kind: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise StiltsError(f"{where}: '{key}': unknown {kind} '{value}'{did_you_mean(str(value), choices)} "
                          f"(one of {', '.join(choices)})")
    return value


def _str_map(value, key: str, where: str, allowed: tuple[str, ...] | None = None) -> dict:
    if not isinstance(value, dict):
        raise StiltsError(f"{where}: '{key}' must be a mapping, got {value!r}")
    for k, v in value.items():
        if allowed is not None and k not in allowed:
            raise StiltsError(f"{where}: unknown key '{key}.{k}'{did_you_mean(str(k), allowed, f'{key}.')} "
                              f"(one of {', '.join(allowed)})")
        ok = isinstance(v, str) and v or (isinstance(v, list) and v and all(isinstance(x, str) for x in v)) \
            or (k == "label_offset" and isinstance(v, int)) or (allowed is None and isinstance(v, bool | int))
        if not ok:
            raise StiltsError(f"{where}: '{key}.{k}' must be a column name (or, for choices, a list of them), "
                              f"got {v!r}")
    return dict(value)


def _scalar(value, tp, key: str, where: str):
    if tp is int and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise StiltsError(f"{where}: '{key}' must be a whole number ≥ 0, got {value!r}")
    if tp is str and not isinstance(value, str):
        raise StiltsError(f"{where}: '{key}' must be text, got {value!r}")
    return value


def _code_names(raw: dict, where: str) -> dict:
    """`convert` (a function in stilts.tasks.convert) and `generator` (a task of stilts.generate.suite)."""
    kw: dict = {}
    if "convert" in raw:
        from stilts.tasks.convert import BY_NAME

        kw["convert"] = BY_NAME[_choice(raw["convert"], tuple(BY_NAME), "convert", where, "conversion function")]
    if "generator" in raw:
        from stilts.generate.suite import NAMES

        kw["generator"] = _choice(raw["generator"], NAMES, "generator", where, "generator")
    return kw


def from_mapping(name: str, raw: dict, path: Path, readers: typing.Iterable[str], project: bool = True) -> Task:
    """A Task from a task file's mapping (every key checked); a project's task records the file it came from."""
    from stilts import tasktypes

    where = shown(path)
    for k in raw:
        if k not in KEYS:
            raise StiltsError(f"{where}: unknown key '{k}'{did_you_mean(str(k), KEYS)}")
    for k in ("type", "metric"):
        if k not in raw:
            raise StiltsError(f"{where}: '{k}' is missing (type: one of {', '.join(TYPE_FIELDS)}, ...)")
    kind = _choice(raw["type"], tasktypes.TYPES, "type", where, "task type")
    metric_names = TYPE_METRICS[kind]
    metric = _choice(raw["metric"], metric_names, "metric", where, f"metric for {kind}")
    kw = _code_names(raw, where)
    if "format" in raw:
        kw["format"] = _choice(raw["format"], tuple(readers), "format", where, "format")
    if "files" in raw:
        kw["files"] = _str_map(raw["files"], "files", where, SPLIT_KEYS)
    if "fields" in raw:
        kw["fields"] = _str_map(raw["fields"], "fields", where, TYPE_FIELDS.get(kind))
    for k in REQUIRED_FIELDS.get(kind, ()):
        if k not in kw.get("fields", {}):
            raise StiltsError(f"{where}: 'fields.{k}' is missing (a {kind} task names its {k} columns)")
    if "labels" in raw:
        labels = raw["labels"]
        if not isinstance(labels, list) or not all(isinstance(x, (str, int, bool)) for x in labels):
            raise StiltsError(f"{where}: 'labels' must be a list of label names, got {labels!r}")
        if kind in ("regression", "multiple_choice"):
            raise StiltsError(f"{where}: 'labels': a {kind} task has no label names")
        from stilts.tasktypes.common import label_str

        kw["labels"] = tuple(label_str(x) for x in labels)
        if len(set(kw["labels"])) != len(kw["labels"]) or len(kw["labels"]) < 2:
            raise StiltsError(f"{where}: 'labels' must name two or more different labels, got {labels!r}")
    if "roles" in raw:
        roles = raw["roles"]
        if not isinstance(roles, list):
            raise StiltsError(f"{where}: 'roles' must be a list (of {', '.join(ROLES)})")
        kw["roles"] = tuple(_choice(r, ROLES, f"roles[{i}]", where, "role") for i, r in enumerate(roles))
    for k in ("hub_splits", "hub_fields"):
        if k in raw:
            kw[k] = _str_map(raw[k], k, where, SPLIT_KEYS if k == "hub_splits" else None)
    for k in ("hub", "family", "licence_note", "description", "train_size", "dev_size"):
        if k in raw and raw[k] is not None:
            kw[k] = _scalar(raw[k], int if k.endswith("_size") else str, k, where)
    if not kw.get("files") and not kw.get("hub"):
        raise StiltsError(f"{where}: 'files' is missing (split → file under the task's data folder), and no "
                          "'hub' dataset is named")
    return Task(name, kind, metric, declared_in=str(path) if project else "", **kw)


def _task_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")) if folder.is_dir() else []


def _builtin_mappings() -> dict[str, dict]:
    """The built-in task files' mappings, by file name. Parsing YAML in every process costs more than the rest of
    the registry, so they are cached as JSON, keyed by every file's name, size and modification time (like .pyc)."""
    import json

    stamp = [[p.name, st.st_size, st.st_mtime_ns] for p in _task_files(BUILTIN_DIR) for st in [p.stat()]]
    cache = BUILTIN_DIR / "__pycache__" / "tasks.json"
    try:
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if cached["stamp"] == stamp:
            return cached["mappings"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    mappings = {p.name: _read_yaml(p) for p in _task_files(BUILTIN_DIR)}
    try:  # a read-only install (or a full disk) goes without the cache
        atomic_write_text(cache, json.dumps({"stamp": stamp, "mappings": mappings}))
    except (OSError, StiltsError):
        pass
    return mappings


def load_builtin() -> dict[str, Task]:
    """The built-in tasks, by name (a file here that does not pass the checks is a bug in the package)."""
    mappings = _builtin_mappings()
    return load_dir(BUILTIN_DIR, (), project=False, read=lambda path: mappings[path.name])


def load_dir(folder: Path, builtin: typing.Container[str], project: bool = True,
             read: typing.Callable[[Path], dict] = _read_yaml) -> dict[str, Task]:
    """Every `*.yaml` task file in `folder` (none when it does not exist), by task name."""
    from stilts.readers import READERS

    tasks = {}
    for path in _task_files(folder):
        where, name = shown(path), path.stem
        if not NAME.match(name):
            raise StiltsError(f"{where}: task name '{name}' (the file's name) must be lower-case letters, digits "
                              "and '_'")
        if name in builtin:
            raise StiltsError(f"{where}: task '{name}' is already a built-in task; name the file otherwise "
                              f"(e.g. {name}_own.yaml)")
        if name in tasks:
            raise StiltsError(f"{where}: task '{name}' is declared twice in {shown(folder)}/")
        tasks[name] = from_mapping(name, read(path), path.resolve(), READERS, project)
    return tasks


def default_columns(task: Task) -> dict[str, str]:
    """Record field → the column it is read from, with each type's defaults (classification reads
    `sentence` and `label` unless `fields` says otherwise)."""
    defaults = {"classification": {"text_a": "sentence", "label": "label"},
                "regression": {"text_a": "sentence", "label": "label"}, "multiple_choice": {"label": "label"}}
    cols = {**defaults.get(task.type, {}), **task.fields}
    cols.pop("label_offset", None)
    return cols


def check_columns(task: Task, row: dict, where: str) -> None:
    """The first row of a declared task's data has every column its `fields` name (one line naming the key)."""
    for key, col in default_columns(task).items():
        for c in col if isinstance(col, list) else [col]:
            if c not in row:
                have = [k for k in row if not str(k).startswith("__")]
                raise StiltsError(f"{shown(Path(task.declared_in))}: 'fields.{key}': column '{c}' is not in {where} "
                                  f"(columns: {', '.join(map(str, have[:12]))}){did_you_mean(c, map(str, have))}")
