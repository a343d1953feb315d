"""The study's DVC pipeline, written from params: one stage per task (prepare, sweep), per intermediate
task × restart, per (source × task × restart) transfer cell, and one analysis stage.

The first stage, `settings`, depends on the params file as a whole and resolves each task's settings into
files of its own (stilts.settings); every other stage depends on its task's files, code and data, so any
change of params, by any route, reruns exactly the stages whose task's settings changed (and the
analysis). DVC's templating cannot take the union of lists or per-cell optional keys, so the files are
written from params by `stilts pipeline`.

Layout: `dvc.yaml` holds the settings, prepare, sweep and analyze stages; `pipelines/<source>/dvc.yaml` holds
one source's cells (its intermediate runs and every transfer run from it; `none` is the baseline).
DVC rewrites a dvc.yaml's whole dvc.lock after every stage it runs, so one lock for the paper's
1,338 stages (~100k lines) would cost ~30 s of YAML per stage; a lock per source stays small.
`dvc repro` at the top reaches every cell, because the analysis depends on all their results.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from stilts import settings
from stilts.analysis import provenance
from stilts.cells import BASELINE
from stilts.config import parse_source
from stilts.errors import StiltsError
from stilts.io import atomic_write_text
from stilts.settings import rank_tasks
from stilts.tasks import registry

HEADER = ("# Written by `stilts pipeline` from {src}; rerun it when params add or remove stages (`make run` does).\n"
          "# Any other change of params reaches the stages through the first one, `settings`.\n")
SOURCE_HEADER = ("# Written by `stilts pipeline` from {src}: the cells of source '{source}'.\n"
                 "# Stages run in the project root (wdir), where `dvc repro` runs them.\n")
PIPELINES_DIR = "pipelines"
PREPARE_CODE = ["src/stilts/data.py", "src/stilts/readers.py", "src/stilts/tasks", "src/stilts/tasktypes"]
TRAIN_CODE = ["src/stilts/cells.py", "src/stilts/cell_outputs.py", "src/stilts/train.py", "src/stilts/step.py",
              "src/stilts/resume.py", "src/stilts/mlm.py", "src/stilts/modeling.py", "src/stilts/predict.py",
              "src/stilts/data.py", "src/stilts/tasks", "src/stilts/tasktypes", "src/stilts/metrics.py",
              "src/stilts/seeds.py", "src/stilts/sweep.py"]
SETTINGS_CODE = ["src/stilts/settings.py", "src/stilts/config.py", "src/stilts/config_checks.py", "src/stilts/sweep.py",
                 "src/stilts/tasks"]
ANALYSIS_CODE = ["src/stilts/analysis"]
RANK_CODE = ["src/stilts/selection", "src/stilts/tasktypes", "src/stilts/analysis/collect.py"]
RANK_FILES = ["reports/ranking.csv", "reports/ranking_eval.csv"]
REPORT_FILES = ["report.md", "transfer_matrix.csv", "transfer_cells.csv", "correlations.csv", "degenerate.csv",
                "runs.csv", "size_sweep.csv"]
REPORT_PLOTS = ["transfer_heatmap.png", "probing_heatmap.png", "correlation_heatmap.png", "size_sweep.png"]


def _code(params, paths: list[str]) -> list[str]:
    return [p for p in paths if (params.root / p).exists()]


def _rel(params, path: Path) -> str:
    return str(path.relative_to(params.root)) if path.is_relative_to(params.root) else str(path)


def _cmd(params, rest: str) -> str:
    src = Path(params.source)
    src = _rel(params, src.resolve()) if src.is_absolute() or src.exists() else str(src)
    return f"stilts --params {src} {rest}" if src != "params.yaml" else f"stilts {rest}"


def _settings(params) -> dict:
    """The first stage: each task's resolved settings (stilts.settings), from the params file as a whole and
    the project's task files (a declared task's declaration is part of its settings). Its files persist (DVC
    does not delete them before the stage runs): one whose content is unchanged keeps its bytes and time, so
    DVC need not hash it again."""
    tasks_dir = params.path(params.data.tasks_dir)
    return {"cmd": _cmd(params, "settings"), "deps": [_rel(params, Path(params.source).resolve())]
            + ([_rel(params, tasks_dir)] if tasks_dir.is_dir() else []) + _code(params, SETTINGS_CODE),
            "outs": [{path: {"persist": True}} for path in settings.files(params)]}


def stages(params) -> dict:
    """Every stage of the study by name (names are unique across the files)."""
    return {name: st for group in layout(params).values() for name, st in group.items()}


def _prepare(params, name: str) -> dict:
    task = registry.get(name)
    deps = _code(params, PREPARE_CODE) + [settings.prepare_path(name)]
    if task.generator:
        deps += _code(params, ["src/stilts/generate"])
    else:
        deps.append(_rel(params, params.path(params.data.raw_dir) / name))
    return {"cmd": _cmd(params, f"prepare --task {name}"), "deps": deps, "outs": [_processed(params, name)]}


def _processed(params, name: str) -> str:
    return _rel(params, params.path(params.data.processed_dir) / name)


def _swept(params, name: str) -> list[str]:
    """The task's sweep result, when it is swept (a dependency of every cell training it)."""
    from stilts import sweep

    return [_rel(params, sweep.result_path(params, name))] if sweep.needs_sweep(params, name) else []


def _sweep(params, name: str) -> dict:
    from stilts import sweep

    return {"cmd": _cmd(params, f"sweep --task {name}"), "deps": _train_deps(params, name, swept=False),
            "outs": [_rel(params, sweep.result_path(params, name))]}


def _train_deps(params, name: str, swept: bool = True) -> list[str]:
    """What a stage training the task reads: code, prepared data, resolved settings, the sweep's winner."""
    return (_code(params, TRAIN_CODE) + [_processed(params, name), settings.train_path(name)]
            + (_swept(params, name) if swept else []))


def _intermediate(params, source: str, k: int) -> dict:
    name, size = parse_source(source)
    return {"cmd": _cmd(params, f"intermediate --task {name} --restart {k}" + (f" --size {size}" if size else "")),
            "deps": _train_deps(params, name), "outs": [f"models/intermediate/{source}/r{k}"]}


def _transfer(params, source: str, name: str, k: int) -> dict:
    deps = _train_deps(params, name)
    if source != BASELINE:
        deps.append(f"models/intermediate/{source}/r{params.intermediate_restart(k)}")
    return {"cmd": _cmd(params, f"transfer --source {source} --task {name} --restart {k}"), "deps": deps,
            "outs": [f"results/{source}/{name}/r{k}.json"]}


def layout(params) -> dict[str, dict]:
    """The stages grouped by the dvc.yaml (path relative to the root) that holds them."""
    top = {"settings": _settings(params)}
    top |= {f"prepare-{name}": _prepare(params, name) for name in dict.fromkeys(params.all_tasks + rank_tasks(params))}
    top |= {f"sweep-{name}": _sweep(params, name) for name in params.all_tasks if _swept(params, name)}
    groups: dict[str, dict] = {"dvc.yaml": top}
    for source in [BASELINE] + params.sources:
        group = groups[source_file(source)] = {}
        if source != BASELINE:
            group |= {f"intermediate-{source}-r{k}": _intermediate(params, source, k)
                      for k in range(params.intermediate_restarts_of(source))}
        # data-size variants answer RQ4 about targets (as in the paper): no probing cells for them
        tasks = params.tasks.target if parse_source(source)[1] is not None else params.transfer_tasks
        group |= {f"transfer-{source}-{name}-r{k}": _transfer(params, source, name, k)
                  for name in tasks for k in range(params.restarts_of(source))}
    results = [out for group in list(groups.values())[1:] for name, st in group.items()
               if name.startswith("transfer-") for out in st["outs"]]
    if params.rank.targets:
        top["rank"] = _rank_stage(params)
    top["analyze"] = {
        "cmd": _cmd(params, "analyze"),
        "deps": _code(params, ANALYSIS_CODE) + [settings.ANALYZE] + results
        + (RANK_FILES if params.rank.targets else []) + _selection_trail(params),
        "outs": [f"reports/{f}" for f in REPORT_FILES] + [{f"reports/{provenance.FILE}": {"cache": False}}],
        "metrics": [{"reports/summary.json": {"cache": False}}],
        "plots": [{f"reports/{f}": {"cache": False}} for f in REPORT_PLOTS]}
    return groups


def cell_layout(params, command: str, task: str, source: str = BASELINE, restart: int = 0) -> dict[str, dict]:
    """The stage of one `stilts` command (prepare, sweep, intermediate, transfer; any task, in the study or
    not) and the stages of what it needs, as `layout` would give them; the command's own stage last."""
    needs = ([parse_source(source)[0]] if command == "transfer" and source != BASELINE else []) + [task]
    stages = {f"prepare-{t}": _prepare(params, t) for t in needs}
    stages |= {f"sweep-{t}": _sweep(params, t) for t in needs if _swept(params, t) or command == "sweep"}
    if source != BASELINE and command in ("intermediate", "transfer"):
        k = params.intermediate_restart(restart) if command == "transfer" else restart
        stages[f"intermediate-{source}-r{k}"] = _intermediate(params, source, k)
    if command == "transfer":
        stages[f"transfer-{source}-{task}-r{restart}"] = _transfer(params, source, task, restart)
    return {"dvc.yaml": stages}


def _selection_trail(params) -> list[str]:
    """A selection's study (select.target) reports and scores its trail, which `stilts select` writes."""
    from stilts.selection.select_record import trail_path

    return [_rel(params, trail_path(params, params.select.target))] if params.select.target else []


def _rank_stage(params) -> dict:
    """`stilts rank` on the study: after the grid cells it is scored against (and, for logme, the
    intermediate checkpoints it reads), so `dvc repro` reruns it when any of them changes."""
    from stilts.selection.rank import candidates_for

    candidates = candidates_for(params)
    deps = _code(params, RANK_CODE) + [settings.RANK] + [_processed(params, t) for t in rank_tasks(params)]
    if "logme" in params.rank.methods:
        deps += [f"models/intermediate/{c}/r{params.rank.restart}"
                 for c in dict.fromkeys(c for cs in candidates.values() for c in cs) if c in params.sources]
    # the measured cells it is scored against, and the baselines their gains and P(beats) are measured from
    deps += [f"results/{c}/{t}/r{k}.json" for t, cs in candidates.items() if t in params.transfer_tasks
             for c in [BASELINE, *cs] if c == BASELINE or c in params.sources for k in range(params.restarts_of(c))]
    return {"cmd": _cmd(params, "rank"), "deps": deps + _selection_trail(params), "outs": RANK_FILES}


def source_file(source: str) -> str:
    return f"{PIPELINES_DIR}/{source}/dvc.yaml"


def address(file: str, name: str) -> str:
    """How DVC names a stage on the command line (`dvc repro ADDRESS`): `path/dvc.yaml:name` outside the root."""
    return name if file == "dvc.yaml" else f"{file}:{name}"


def render(params) -> dict[str, str]:
    """The text of every dvc.yaml of the study, by path relative to the root."""
    for name in params.require_tasks():
        if "-" in name:
            raise StiltsError(f"task name '{name}' must not contain '-' (used in stage names)")
    src = Path(params.source).name
    texts = {}
    for file, group in layout(params).items():
        if file == "dvc.yaml":
            texts[file] = HEADER.format(src=src) + _dump(group)
            continue
        up = os.path.relpath(".", Path(file).parent)
        group = {name: {"cmd": st["cmd"], "wdir": up, **{k: v for k, v in st.items() if k != "cmd"}}
                 for name, st in group.items()}
        texts[file] = SOURCE_HEADER.format(src=src, source=Path(file).parent.name) + _dump(group)
    return texts


def _dump(group: dict) -> str:
    return yaml.safe_dump({"stages": group}, sort_keys=False, width=120)


def path(params) -> Path:
    return params.root / "dvc.yaml"


def _stale(params, texts: dict[str, str]) -> list[Path]:
    """Pipelines of sources no longer in params."""
    found = sorted((params.root / PIPELINES_DIR).glob("*/dvc.yaml"))
    return [p for p in found if str(p.relative_to(params.root)) not in texts]


def _outdated(params, texts: dict[str, str]) -> dict[Path, str]:
    """The files whose text differs from what params gives, with that text."""
    files = {params.root / file: text for file, text in texts.items()}
    return {p: text for p, text in files.items() if not p.is_file() or p.read_text() != text}


def write(params) -> Path:
    texts = render(params)
    for p, text in _outdated(params, texts).items():
        atomic_write_text(p, text)
    for p in _stale(params, texts):  # its stages are gone, and so is what its lock recorded
        for f in (p, p.with_name("dvc.lock")):
            f.unlink(missing_ok=True)
        if not any(p.parent.iterdir()):
            p.parent.rmdir()
    return path(params)


def check(params) -> None:
    texts = render(params)
    for p in _stale(params, texts):
        raise StiltsError(f"{p}: a source no longer in {params.source}; run `stilts pipeline`")
    for p in _outdated(params, texts):
        raise StiltsError(f"{p}: out of date with {params.source}; run `stilts pipeline`")
