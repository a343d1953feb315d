"""Validation of params.yaml: types, ranges, task names, sweep grids, rankings.

Each error is one line naming the file and the dotted key (with a "did you mean" where a name is close).
"""

from __future__ import annotations

import dataclasses
import types
import typing

from stilts.errors import StiltsError, did_you_mean

# the allowed values of params keys (config.py holds the schema; it calls these checks, so they import nothing
# from it: the classes come with the values checked)
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
ATTN_IMPLEMENTATIONS = ("auto", "eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
COMPILE = ("auto", True, False)
PROBE_MODES = ("finetune", "frozen")
LOG_MODELS = ("reference", "copy")
RANK_METHODS = ("semb", "logme", "prior", "hybrid")


def check_type(value, tp, key: str, src: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for tp_ in inner[:-1]:  # `bool | str`: the first type the value is
            try:
                return check_type(value, tp_, key, src)
            except StiltsError:
                pass
        return check_type(value, inner[-1], key, src)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise StiltsError(f"{src}: '{key}' must be a list, got {type(value).__name__} {value!r}")
        return [check_type(v, inner, f"{key}[{i}]", src) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise StiltsError(f"{src}: '{key}' must be a mapping, got {value!r}")
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML reads "1e-5" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool) and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
        raise StiltsError(f"{src}: '{key}' must be {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def build(cls, raw, prefix: str, src: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise StiltsError(f"{src}: '{prefix.rstrip('.')}' must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            raise StiltsError(f"{src}: unknown key '{prefix}{key}'{did_you_mean(str(key), fields, prefix)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = build(tp, value, f"{prefix}{key}.", src)
        else:
            kwargs[key] = check_type(value, tp, f"{prefix}{key}", src)
    return cls(**kwargs)


def check_ranges(p, src: str) -> None:
    def need(ok: bool, key: str, msg: str):
        if not ok:
            raise StiltsError(f"{src}: '{key}' {msg}")

    need(p.model.attn_implementation in ATTN_IMPLEMENTATIONS, "model.attn_implementation",
         f"must be one of {ATTN_IMPLEMENTATIONS}")
    need(p.study.restarts >= 1, "study.restarts", f"must be ≥ 1, got {p.study.restarts}")
    need(p.study.intermediate_restarts >= 0, "study.intermediate_restarts",
         f"must be ≥ 0, got {p.study.intermediate_restarts}")
    for source, n in p.study.source_restarts.items():
        need(isinstance(n, int) and not isinstance(n, bool) and n >= 1, f"study.source_restarts.{source}",
             f"must be an integer ≥ 1, got {n!r}")
        need(source == "none" or source in p.sources, f"study.source_restarts.{source}",
             "is neither `none` nor an intermediate task of the study (tasks.intermediate)")
    need(p.sweep.restart >= 0, "sweep.restart", f"must be ≥ 0, got {p.sweep.restart}")
    need(p.study.probe_mode in PROBE_MODES, "study.probe_mode", f"must be one of {PROBE_MODES}")
    need(p.study.frozen_probe_lr > 0, "study.frozen_probe_lr", "must be > 0")
    need(all(n >= 1 for n in p.study.size_sweep_sizes), "study.size_sweep_sizes", "must all be ≥ 1")
    need(0 < p.mlm.probability < 1, "mlm.probability", "must be in (0, 1)")
    need(p.mlm.cap >= 1 and p.mlm.corpus_examples >= 1 and p.mlm.eval_examples >= 1, "mlm",
         "cap, corpus_examples and eval_examples must be ≥ 1")
    for i, t in enumerate(p.mlm.tasks):
        need(t in p.tasks.intermediate, f"mlm.tasks[{i}]", f"'{t}' is not in tasks.intermediate")
    for i, t in enumerate(p.study.size_sweep_tasks):
        need(t in p.tasks.intermediate, f"study.size_sweep_tasks[{i}]", f"'{t}' is not in tasks.intermediate")
    for name, t in [("train", p.train)] + [(f"task_overrides.{k}", p.train_for(k)) for k in p.task_overrides]:
        need(t.lr > 0, f"{name}.lr", f"must be > 0, got {t.lr}")
        for k in ("batch_size", "eval_batch_size", "grad_accum", "epochs", "max_seq_length", "log_every"):
            need(getattr(t, k) >= 1, f"{name}.{k}", f"must be ≥ 1, got {getattr(t, k)}")
        for k in ("max_steps", "max_train_examples", "max_eval_examples", "eval_every", "patience",
                  "save_every"):
            need(getattr(t, k) >= 0, f"{name}.{k}", f"must be ≥ 0, got {getattr(t, k)}")
        need(0 <= t.warmup_ratio < 1, f"{name}.warmup_ratio", "must be in [0, 1)")
        need(t.save_interval_s >= 0, f"{name}.save_interval_s", "must be ≥ 0")
        need(0 <= t.head_dropout < 1, f"{name}.head_dropout", "must be in [0, 1)")
        need(t.mixed_precision in MIXED_PRECISION, f"{name}.mixed_precision", f"must be one of {MIXED_PRECISION}")
        need(t.compile in COMPILE, f"{name}.compile", f"must be auto, true or false, got {t.compile!r}")
        need(all(b >= 1 for b in t.pad_buckets), f"{name}.pad_buckets", "must all be ≥ 1")
        need(not t.pad_buckets or max(t.pad_buckets) >= t.max_seq_length, f"{name}.pad_buckets",
             f"must reach max_seq_length ({t.max_seq_length}), got {t.pad_buckets}")
    need(p.data.generated_train >= 10, "data.generated_train", "must be ≥ 10")
    need(p.data.generated_validation >= 10, "data.generated_validation", "must be ≥ 10")
    need(bool(p.mlflow.experiment.strip()), "mlflow.experiment", "must not be empty")
    need(p.mlflow.log_models in LOG_MODELS, "mlflow.log_models", f"must be one of {LOG_MODELS}")


def no_duplicates(values: list, key: str, src: str) -> None:
    """A list of names (tasks, methods) names each once: a repeated task would be trained and counted twice."""
    first: dict = {}
    for i, v in enumerate(values):
        if v in first:
            raise StiltsError(f"{src}: '{key}[{i}]': '{v}' is listed twice (also {key}[{first[v]}])")
        first[v] = i


def check_tasks(p, src: str) -> None:
    from stilts.tasks import registry

    names = registry.names()
    for role in ("intermediate", "target", "probe"):
        for i, t in enumerate(getattr(p.tasks, role)):
            if t not in names:
                raise StiltsError(f"{src}: 'tasks.{role}[{i}]': unknown task '{t}'{did_you_mean(t, names)}")
        no_duplicates(getattr(p.tasks, role), f"tasks.{role}", src)
    no_duplicates(p.mlm.tasks, "mlm.tasks", src)
    no_duplicates(p.study.size_sweep_tasks, "study.size_sweep_tasks", src)
    no_duplicates(p.study.size_sweep_sizes, "study.size_sweep_sizes", src)
    for t, over in p.task_overrides.items():
        if t not in names:
            raise StiltsError(f"{src}: 'task_overrides.{t}': unknown task '{t}'{did_you_mean(t, names)}")
        fields = {f.name for f in dataclasses.fields(type(p.train))}
        for k, v in (over or {}).items():
            if k not in fields:
                raise StiltsError(f"{src}: unknown key 'task_overrides.{t}.{k}'"
                                  f"{did_you_mean(k, fields, f'task_overrides.{t}.')}")
            over[k] = check_type(v, typing.get_type_hints(type(p.train))[k], f"task_overrides.{t}.{k}", src)
        p.task_overrides[t] = over or {}


def check_data_files(p, src: str) -> None:
    from stilts.tasks import registry

    names = registry.names()
    for t, files in p.data.files.items():
        if t not in names:
            raise StiltsError(f"{src}: 'data.files.{t}': unknown task '{t}'{did_you_mean(t, names)}")
        if not isinstance(files, dict):
            raise StiltsError(f"{src}: 'data.files.{t}' must map train/validation to file paths")
        for split, path in files.items():
            if split not in ("train", "validation", "all"):
                raise StiltsError(f"{src}: unknown key 'data.files.{t}.{split}'"
                                  f"{did_you_mean(str(split), ('train', 'validation', 'all'), f'data.files.{t}.')}")
            if not isinstance(path, str) or not path:
                raise StiltsError(f"{src}: 'data.files.{t}.{split}' must be a file path")


def check_sweep(p, src: str) -> None:
    hints = typing.get_type_hints(type(p.train))
    fields = {f.name for f in dataclasses.fields(type(p.train))}
    for k, values in p.sweep.grid.items():
        if k not in fields:
            raise StiltsError(f"{src}: unknown key 'sweep.grid.{k}'{did_you_mean(k, fields, 'sweep.grid.')}")
        if not isinstance(values, list) or not values:
            raise StiltsError(f"{src}: 'sweep.grid.{k}' must be a non-empty list")
        p.sweep.grid[k] = [check_type(v, hints[k], f"sweep.grid.{k}[{i}]", src) for i, v in enumerate(values)]
    for k, v in p.sweep.overrides.items():
        if k not in fields:
            raise StiltsError(f"{src}: unknown key 'sweep.overrides.{k}'{did_you_mean(k, fields, 'sweep.overrides.')}")
        p.sweep.overrides[k] = check_type(v, hints[k], f"sweep.overrides.{k}", src)
    if p.sweep.enabled and not p.sweep.grid:
        raise StiltsError(f"{src}: 'sweep.grid' is empty but sweep.enabled is true")


def check_select(s, src: str) -> None:
    """The settings of a selection (from params, or the command line as `src`)."""
    if s.budget < 1:
        raise StiltsError(f"{src}: 'select.budget' must be ≥ 1, got {s.budget}")
    for key in ("confident", "hopeless"):
        if not 0 < getattr(s, key) < 1:
            raise StiltsError(f"{src}: 'select.{key}' must be in (0, 1), got {getattr(s, key)}")
    if s.target is not None and "-" in s.target:
        raise StiltsError(f"{src}: 'select.target': task name '{s.target}' must not contain '-'")


def check_rank(r, src: str) -> None:
    """Task names, methods and sizes of a ranking (from params, or the command line as `src`)."""
    from stilts.tasks import registry

    names = registry.names()
    # prior and hybrid also rank tasks known only from a measured grid (checked when the grids are read)
    grid_only = set(r.methods) <= {"prior", "hybrid"}
    for key in ("targets", "candidates"):
        for i, t in enumerate(getattr(r, key)):
            if t not in names and not grid_only:
                raise StiltsError(f"{src}: 'rank.{key}[{i}]': unknown task '{t}'{did_you_mean(t, names)}")
        no_duplicates(getattr(r, key), f"rank.{key}", src)
    no_duplicates(r.methods, "rank.methods", src)
    for i, m in enumerate(r.methods):
        if m not in RANK_METHODS:
            raise StiltsError(f"{src}: 'rank.methods[{i}]': unknown method '{m}'{did_you_mean(m, RANK_METHODS)} "
                              f"(one of {', '.join(RANK_METHODS)})")
    if not r.methods:
        raise StiltsError(f"{src}: 'rank.methods' must not be empty")
    for key in ("sample_size", "max_seq_length", "batch_size"):
        if getattr(r, key) < (2 if key == "sample_size" else 1):
            raise StiltsError(f"{src}: 'rank.{key}' must be ≥ {2 if key == 'sample_size' else 1}, "
                              f"got {getattr(r, key)}")
    if r.restart < 0:
        raise StiltsError(f"{src}: 'rank.restart' must be ≥ 0, got {r.restart}")
