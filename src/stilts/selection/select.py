"""`stilts select --target T --budget N`: train, one at a time, the cells that answer "which intermediate task
for T, or none?", each chosen from what the cells before it measured (selection.rule), until the budget is
spent or the answer is certain enough.

Each cell runs as a stage of the study that the selection writes (`--study`, default select-<target>.yaml: the
params file as written, with the arms trained so far as intermediate tasks, each with its own number of
restarts, and one intermediate run per candidate that its later target runs start from), through `dvc repro` of
that stage or, with `--cluster`, the Dask runner: DVC records it, MLflow logs it, and a killed cell resumes as
any cell does. When the selection stops, the study's `rank` and `analyze` stages run.

Arms: the baseline (source `none`) and every candidate with its data here. The measurements are the target's
runs this selection made (results/<source>/<target>/r<k>.json); the prior is `stilts rank`'s (the grids pooled
with weights for model.name, with what other grids measured on the target itself) and never reads the target's
runs in the selection's own experiment (selection.prior_belief).

The trail (reports/select/<target>.json) holds every decision before its cell starts: the posterior it was
made from, the run chosen and why. The same command again replays it: a decision whose cell has no result yet
runs that cell, and the next decisions are computed from the same results, so they are the same. It is also an
MLflow run (role `selection`) whose children are the selection's cells.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from stilts.errors import StiltsError
from stilts.io import atomic_write_text, read_json
from stilts.selection import belief as belief_
from stilts.selection import pooling, prior_belief, rule, select_record

BASELINE = "none"


@dataclass
class Arms:
    target: str
    names: list[str]  # the baseline first, then the candidates with data here
    skipped: list[str]  # candidates without data here

    @property
    def candidates(self) -> list[str]:
        return self.names[1:]


def study_path(params, target: str, given: str | None) -> Path:
    return Path(given) if given else params.path(f"select-{target}.yaml")


def arms_for(params, target: str) -> Arms:
    """The baseline and the candidates that can be trained here (rank.candidates, else tasks.intermediate, else
    every intermediate task of the prior grids), the target itself left out."""
    from stilts.selection import guidance
    from stilts.selection.signals import has_data
    from stilts.tasks import registry

    if target not in registry.names():
        raise StiltsError(f"select: target '{target}' is not a known task (declare it in "
                          f"{params.data.tasks_dir}/{target}.yaml)")
    if not has_data(params, target):
        raise StiltsError(f"select: target '{target}' has no data in {params.path(params.data.raw_dir) / target}/")
    pool = params.rank.candidates or params.tasks.intermediate
    if not pool:
        pool = sorted({s for g in prior_belief.grids(params, params.mlflow.experiment) for s in g.sources})
    pool = [c for c in dict.fromkeys(pool) if c != target and c != BASELINE]
    status = guidance.data_status(params, pool)
    trainable = sorted(c for c in pool if status[c] == "present")
    if not trainable:
        raise StiltsError(f"select: no candidate for '{target}' has its data here ({', '.join(pool[:8])}...); put "
                          f"a candidate's official files in its folder under {params.path(params.data.raw_dir)}/")
    return Arms(target, [BASELINE, *trainable], [c for c in pool if status[c] != "present"])


def study_params(params, trail: select_record.Trail) -> dict:
    """The selection's study: the user's params as written, with the arms trained so far (in the order of their
    first run) and their restarts, one intermediate run per candidate, and a ranking of the target."""
    runs = [s.run for s in trail.steps if s.run]
    sources = list(dict.fromkeys(r["arm"] for r in runs))
    counts = {s: sum(r["arm"] == s for r in runs) for s in sources}
    trained = [s for s in sources if s != BASELINE]
    raw = copy.deepcopy(params.raw or {})
    raw["tasks"] = {"intermediate": trained, "target": [trail.target], "probe": []}
    raw["study"] = {**(raw.get("study") or {}), "restarts": 1, "source_restarts": counts, "intermediate_restarts": 1}
    rank = raw.get("rank") or {}
    raw["rank"] = {**rank, "targets": [trail.target] if trained else [], "candidates": trained,
                   "methods": rank.get("methods") or ["prior"]}
    raw["select"] = {**(raw.get("select") or {}), "target": trail.target, **trail.settings_for_params()}
    return raw


def _write_study(params, trail, path: Path):
    from stilts import config

    raw = study_params(params, trail)
    study = config.from_dict(copy.deepcopy(raw), str(path), params.root)
    header = (f"# The selection for {trail.target} (`stilts select`): the cells it trained so far. It rewrites "
              "this file at every step.\n")
    text = header + yaml.safe_dump(raw, sort_keys=False)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)
    study.raw = raw
    return study


@dataclass
class Runner:
    """Runs one stage of the selection's study (and what it needs): `dvc repro` or the Dask runner."""
    cluster: str | None = None
    options: object = None
    tracking_uri: str | None = None

    def run(self, study, stage: str | None) -> int:
        from stilts import pipeline, stages, warm

        pipeline.write(study)
        if self.cluster:
            from stilts.engine import runner

            return runner.run(study, self.cluster, self.options, self.tracking_uri,
                              targets=[stage] if stage else None)
        warm.prestart()
        env = {"MLFLOW_TRACKING_URI": self.tracking_uri} if self.tracking_uri else {}
        args = [_address(study, stage)] if stage else []
        return stages.dvc(study.root, "repro", *args, env=env, capture=False)


def _address(study, stage: str) -> str:
    from stilts import pipeline

    for file, group in pipeline.layout(study).items():
        if stage in group:
            return pipeline.address(file, stage)
    raise StiltsError(f"select: stage '{stage}' is not in the selection's study")


def result_file(params, target: str, run: dict) -> Path:
    from stilts.cells import result_path

    return result_path(params, run["arm"], target, run["restart"])


def measured(params, arms: Arms, trail) -> list[tuple[int, float]]:
    """(arm index, score) of every run of the trail whose result is in."""
    out = []
    for step in trail.steps:
        if step.run and result_file(params, arms.target, step.run).is_file():
            score = read_json(result_file(params, arms.target, step.run))["score"]
            out.append((arms.names.index(step.run["arm"]), float(score)))
    return out


class Selection:
    def __init__(self, params, arms: Arms, trail, path: Path, runner: Runner):
        self.params, self.arms, self.trail, self.path, self.runner = params, arms, trail, path, runner
        self.grid_list = prior_belief.grids(params, params.mlflow.experiment)
        self.train_size = prior_belief.train_size(params, arms.target)
        self.pool = pooling.prepare(self.grid_list, params.model.name) if self.grid_list else None
        n = len(arms.names)
        self.allowed = np.ones(n, bool)
        self.checkpoint_before = np.array([a in trail.checkpoints_before for a in arms.names])

    def belief(self, runs: list[tuple[int, float]]) -> belief_.Belief:
        first = next((v for a, v in runs if a == 0), None)
        baseline = first if first is not None else prior_belief.grid_baseline(self.grid_list, self.arms.target)
        prior = prior_belief.build(self.grid_list, self.arms.target, self.arms.candidates, baseline=baseline,
                                   train_size=self.train_size, model=self.params.model.name,
                                   scored=self.params.mlflow.experiment, pool=self.pool)
        if prior is None:
            raise StiltsError(f"select: the prior grids ({', '.join(g.name for g in self.grid_list)}) hold no "
                              f"transfer results for any target other than '{self.arms.target}'")
        return belief_.Belief(prior, runs)

    def has_checkpoint(self) -> np.ndarray:
        ran = {s.run["arm"] for s in self.trail.steps if s.run}
        return self.checkpoint_before | np.array([a in ran for a in self.arms.names])

    def run_cell(self, run: dict, mlflow_run) -> None:
        study = _write_study(self.params, self.trail, self.path)
        stage = f"transfer-{run['arm']}-{self.arms.target}-r{run['restart']}"
        code = self.runner.run(study, stage)
        if code:
            from stilts import stop

            if code == stop.EXIT_RESUME:
                raise stop.Interrupted("the cell's stop")
            raise StiltsError(f"select: stage '{stage}' failed (exit {code}); its log is under .stilts/logs/ "
                              "(or the output above); the same command continues from it")
        select_record.adopt_cells(self.params, mlflow_run, self.arms.target, run)

    def step(self, mlflow_run) -> rule.Decision:
        runs = measured(self.params, self.arms, self.trail)
        b = self.belief(runs)
        spent = self.trail.spent()
        opts = rule.Options(self.trail.confident, self.trail.hopeless, self.trail.seed)
        d = rule.choose(b, self.allowed, self.allowed, self.has_checkpoint(), self.trail.budget - spent, opts)
        run = None
        if d.arm is not None:
            arm = self.arms.names[d.arm]
            run = {"arm": arm, "restart": sum(1 for s in self.trail.steps if s.run and s.run["arm"] == arm)}
        step = self.trail.add_step(run, d, b, self.allowed, spent + d.cost)
        if d.arm is None:
            self.trail.answer = select_record.answer_record(rule.answer(b, self.allowed, self.trail.seed), b,
                                                             d.why, spent)
        self.trail.save()
        select_record.log_step(mlflow_run, self.trail, step)
        print(select_record.step_line(self.trail, step), flush=True)
        return d

    def run(self, mlflow_run) -> None:
        for step in self.trail.steps:  # the cells of decisions made before a kill
            if step.run and not result_file(self.params, self.arms.target, step.run).is_file():
                print(f"select: step {step.index}: {step.run['arm']} r{step.run['restart']} was decided before the "
                      "last stop and has no result yet: it runs now", flush=True)
                self.run_cell(step.run, mlflow_run)
        while self.trail.answer is None:
            d = self.step(mlflow_run)
            if d.arm is not None:
                self.run_cell(self.trail.steps[-1].run, mlflow_run)


def run(params, target: str, given_study: str | None, runner: Runner) -> int:
    """Select for `target` under params.select; returns the exit code of the study's final stages. Like `stilts
    study`, one at a time in a project."""
    from stilts import stages

    arms = arms_for(params, target)
    with stages.one_study(params.root):
        return _select(params, arms, study_path(params, target, given_study), runner)


def _select(params, arms: Arms, path: Path, runner: Runner) -> int:
    from stilts import tracking

    target = arms.target
    trail = select_record.Trail.open(params, arms, path)
    if arms.skipped:
        print(f"note: without data here, not among the arms: {', '.join(arms.skipped)}", flush=True)
    tags = {"role": "selection", "source": "-", "task": target, "cell": f"select/{target}"}
    with tracking.tracked(params, f"select:{target}", tags, resume_id=trail.run_id) as mlflow_run:
        if trail.run_id != mlflow_run.id:
            trail.run_id = mlflow_run.id
            trail.save()
            select_record.log_settings(mlflow_run, trail, arms)
        Selection(params, arms, trail, path, runner).run(mlflow_run)
        select_record.log_answer(mlflow_run, trail)
    print(select_record.answer_line(trail), flush=True)
    if not any(s.run for s in trail.steps):
        return 0
    study = _write_study(params, trail, path)
    code = runner.run(study, None)  # the ranking scores the answer, the analysis reports the selection
    if code:
        print(f"stilts: error: the selection's study stages failed (exit {code})", file=sys.stderr)
    return code
