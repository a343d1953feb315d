"""MLproject entry points → the `stilts` CLI. Typed `-P` parameters become params overrides.

A cell entry point first runs what the cell needs and is missing or out of date, the way `dvc repro` would
(the same stage graph, `stilts.stages`): the task's prepared data, its sweep (when sweep.enabled and no
task_overrides fix the grid), and for a transfer the source's intermediate checkpoint. Each step is its
own `stilts` command (its own runs).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys

from stilts import cli
from stilts.errors import StiltsError


def _parse(argv: list[str] | None):
    p = argparse.ArgumentParser(prog="python -m stilts.mlproject")
    p.add_argument("command")
    p.add_argument("--task")
    p.add_argument("--source")
    p.add_argument("--restart", default="0")
    p.add_argument("--lr", default="")
    p.add_argument("--experiment", default="")
    p.add_argument("--overrides", default="")
    return p.parse_args(argv)


def _number(value: str, name: str, kind=float):
    try:
        return kind(float(value))
    except ValueError:
        raise StiltsError(f"-P {name}={value!r} is not a number") from None


def _overrides(a) -> list[str]:
    try:
        sets = shlex.split(a.overrides or "")
    except ValueError as e:
        raise StiltsError(f"-P overrides={a.overrides!r}: {e}") from None
    if a.lr:
        sets.append(f"task_overrides.{a.task}.lr={_number(a.lr, 'lr')!r}")
    return sets


def _sets(a) -> list[str]:
    return [x for s in _overrides(a) for x in ("--set", s)]


def to_cli(argv: list[str] | None = None) -> list[str]:
    a = _parse(argv)
    args = _sets(a) + [a.command]
    if a.command in ("prepare", "sweep", "intermediate", "transfer"):
        args += ["--task", a.task]
    if a.command in ("intermediate", "transfer"):
        args += ["--restart", str(_number(a.restart, "restart", int))]
    if a.command == "transfer":
        args += ["--source", a.source]
    if a.command == "analyze" and a.experiment:
        args += ["--experiment", a.experiment]
    return args


def prerequisites(params, a) -> list[list[str]]:
    """What `a.command` needs first, in order, as `stilts` arguments (without the --set options): the stages
    of what its cell needs whose outputs are missing or stale, and those downstream of them (`stilts.stages`)."""
    from stilts import pipeline, stages

    if a.command not in ("sweep", "intermediate", "transfer"):
        return []
    source = a.source if a.command == "transfer" else a.task
    cell = stages.graph(pipeline.cell_layout(params, a.command, a.task, source, _number(a.restart, "restart", int)))
    target = list(cell)[-1]
    todo = stages.plan(cell, stages.stale_by_records(params, cell), targets=[target])
    return [shlex.split(st.cmd)[1:] for st in todo if st.name != target]


def _entry_point(a) -> str:
    """What this entry point runs: its runs are found by it (stilts.entry_point) when it runs again."""
    cell = a.command in ("intermediate", "transfer")
    return " ".join(str(x) for x in (a.command, a.source if cell else None, a.task,
                                     a.restart if cell else None, a.experiment) if x)


def main(argv: list[str] | None = None) -> int:
    a = _parse(argv)
    try:
        from stilts import config

        params = config.load("params.yaml", _overrides(a))
        steps = prerequisites(params, a) + [to_cli(argv)]
        last = cli.build_parser().parse_args(steps[-1])
        if last.command in cli.TRACKED_COMMANDS:  # before the steps that come first train or prepare anything
            cli.check_tracking(last)
    except StiltsError as e:
        print(f"stilts: error: {e}", file=sys.stderr)
        return 2
    if os.environ.get("MLFLOW_RUN_ID"):  # the first MLflow run a step starts tags the entry point's run
        os.environ.update(STILTS_ENTRY_POINT=_entry_point(a), STILTS_ENTRY_PID=str(os.getpid()))
    for step in steps[:-1]:
        print(f"mlflow run: first `stilts {' '.join(step)}` (missing or out of date)", flush=True)
        # a process of its own, as under `dvc repro`: a cell leaves process-wide state behind (Accelerate's
        # precision, RNG states) that the next cell must not inherit; with the cell server this costs ~0.3 s
        code = subprocess.call([sys.executable, "-m", "stilts", *_sets(a), *step])
        if code:
            return code
    return cli.main(steps[-1])


if __name__ == "__main__":
    raise SystemExit(main())
