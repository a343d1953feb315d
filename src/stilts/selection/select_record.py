"""The record of a selection: its trail (reports/select/<target>.json), its MLflow run, what it prints, and the
report's section.

The trail holds the selection's settings, the checkpoints there were before it started, and one entry per
decision, written before the decision's cell starts: the posterior it was made from (per arm: expected score,
standard deviation, expected gain over the baseline, P(beats the baseline), P(best)), the run chosen (arm and
restart) or none, its cost in training runs, the runs spent with it, and why; then the answer.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from stilts.errors import StiltsError
from stilts.io import atomic_write_text, read_json

FOLDER = "reports/select"
SETTINGS = ("budget", "confident", "hopeless", "seed")


def trail_path(params, target: str) -> Path:
    return params.path(FOLDER) / f"{target}.json"


@dataclass
class Step:
    index: int
    run: dict | None  # {"arm": source, "restart": k}; None: the selection stopped
    cost: int
    spent: int  # training runs spent once this step's run is made
    why: str
    posterior: list[dict]
    plan_values: dict = field(default_factory=dict)


@dataclass
class Trail:
    target: str
    arms: list[str]
    budget: int
    confident: float
    hopeless: float
    seed: int
    checkpoints_before: list[str]
    study: str
    run_id: str | None = None
    steps: list[Step] = field(default_factory=list)
    answer: dict | None = None
    path: Path | None = None

    @classmethod
    def open(cls, params, arms, study: Path) -> Trail:
        """The trail of this selection: the one on disk when its settings are these, else a new one."""
        from stilts.cells import checkpoint_dir

        s = params.select
        path = trail_path(params, arms.target)
        fresh = cls(arms.target, arms.names, s.budget, s.confident, s.hopeless, s.seed,
                    [a for a in arms.candidates if (checkpoint_dir(params, a, 0) / "stilts.json").is_file()],
                    _shown(params, study), path=path)
        if not path.is_file():
            return fresh
        try:
            d = read_json(path)
            old = cls(**{k: v for k, v in d.items() if k != "steps"}, steps=[Step(**st) for st in d["steps"]])
        except (ValueError, TypeError, KeyError) as e:
            raise StiltsError(f"{path}: not a selection trail ({type(e).__name__}: {e}); remove it to start over") \
                from None
        old.path = path
        mine = {"arms": fresh.arms, **{k: getattr(fresh, k) for k in SETTINGS}}
        theirs = {"arms": old.arms, **{k: getattr(old, k) for k in SETTINGS}}
        if mine != theirs:
            diff = ", ".join(f"{k} {theirs[k]} → {mine[k]}" for k in mine if mine[k] != theirs[k])
            raise StiltsError(f"{path}: this selection was started with other settings ({diff}); the same command "
                              "continues it, or remove the file (and the study's results of the target) to start over")
        return old

    def save(self) -> None:
        d = {k: v for k, v in asdict(self).items() if k != "path"}
        atomic_write_text(self.path, json.dumps(d, indent=1, default=_plain) + "\n")

    def spent(self) -> int:
        return self.steps[-1].spent if self.steps else 0

    def settings_for_params(self) -> dict:
        return {k: getattr(self, k) for k in SETTINGS}

    def add_step(self, run: dict | None, decision, belief, allowed: np.ndarray, spent: int) -> Step:
        step = Step(len(self.steps) + 1, run, decision.cost, spent, decision.why, posterior_table(belief, allowed,
                                                                                                    self.seed),
                    {k: float(v) for k, v in decision.values.items()})
        self.steps.append(step)
        return step


def _shown(params, path: Path) -> str:
    path = Path(path).resolve()
    root = Path(params.root).resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _plain(x):
    return x.item() if isinstance(x, np.generic) else str(x)


def posterior_table(belief, allowed: np.ndarray, seed: int) -> list[dict]:
    mean, sd, gain, beats = belief.mean(), belief.sd(), belief.gain(), belief.p_beats()
    best = belief.p_best(allowed, seed=seed)
    return [{"arm": a, "runs": int(belief.counts[i]), "expected_score": float(mean[i]), "sd": float(sd[i]),
             "gain": float(gain[i]), "p_beats": float(beats[i]) if i else None, "p_best": float(best[i])}
            for i, a in enumerate(belief.arms)]


def answer_record(ans, belief, why: str, spent: int) -> dict:
    return {"arm": ans.name, "p_beats": None if math.isnan(ans.p_beats) else ans.p_beats, "versus": ans.versus,
            "gain": ans.gain, "p_best": ans.p_best, "stopped": why, "spent": spent, "runs": int(belief.counts.sum())}


def leader(step: Step) -> dict:
    return max(step.posterior, key=lambda r: (r["expected_score"], -step.posterior.index(r)))


def step_line(trail: Trail, step: Step) -> str:
    lead = leader(step)
    head = f"select {trail.target} step {step.index}: "
    now = (f"leading {lead['arm']} (P(best) {lead['p_best']:.2f}"
           + (f", P(beats the baseline) {lead['p_beats']:.2f}" if lead["p_beats"] is not None else "") + ")")
    if step.run is None:
        return f"{head}stop, {step.why}; {now}"
    return (f"{head}{step.run['arm']} r{step.run['restart']} (cost {step.cost}, {step.spent} of {trail.budget} "
            f"runs); {now}; {step.why}")


def answer_line(trail: Trail) -> str:
    a = trail.answer
    if a["arm"] == "none":
        what = f"train no intermediate task for {trail.target}"
        beats = f"P({a['versus']}, the best candidate, beats the baseline) {a['p_beats']:.2f}" \
            if a["p_beats"] is not None else ""
    else:
        what = f"train {a['arm']} before {trail.target}"
        beats = f"P(it beats the baseline) {a['p_beats']:.2f}, expected gain {a['gain']:+.4f}"
    return (f"select {trail.target}: {what}; {beats}; P(best) {a['p_best']:.2f}; after {a['runs']} target run(s), "
            f"{a['spent']} training run(s) of {trail.budget} (stopped: {a['stopped']}); trail: {trail.path}")


def log_settings(run, trail: Trail, arms) -> None:
    run.log_params({"select": {"target": trail.target, "arms": ",".join(trail.arms), "budget": trail.budget,
                               "confident": trail.confident, "hopeless": trail.hopeless, "seed": trail.seed,
                               "skipped_without_data": ",".join(arms.skipped), "study": trail.study}})


def log_step(run, trail: Trail, step: Step) -> None:
    lead = leader(step)
    run.log_metrics({"spent": step.spent, "leader_p_best": lead["p_best"], "leader_gain": lead["gain"],
                     **({"leader_p_beats": lead["p_beats"]} if lead["p_beats"] is not None else {})}, step=step.index)
    chosen = f"{step.run['arm']} r{step.run['restart']}" if step.run else "stop"
    run.set_tags({f"step_{step.index}": f"{chosen}: {step.why}"[:4900]})
    run.log_artifact(trail.path, "select")


def log_answer(run, trail: Trail) -> None:
    a = trail.answer
    run.set_tags({"answer": a["arm"], "stopped": a["stopped"][:4900]})
    run.log_metrics({k: a[k] for k in ("p_best", "gain", "spent", "runs")}
                    | ({"p_beats": a["p_beats"]} if a["p_beats"] is not None else {}))
    run.log_artifact(trail.path, "select")


def adopt_cells(params, parent, target: str, cell: dict) -> None:
    """The cell's MLflow run (and its intermediate run, at a candidate's first run) become the selection's
    children."""
    from stilts import tracking
    from stilts.cells import checkpoint_dir, result_path

    files = [result_path(params, cell["arm"], target, cell["restart"])]
    if cell["arm"] != "none" and cell["restart"] == 0:
        files.append(checkpoint_dir(params, cell["arm"], 0) / "stilts.json")
    for f in files:
        run_id = read_json(f).get("mlflow_run_id") if f.is_file() else None
        if run_id:
            tracking.set_parent(params, run_id, parent.id)


METHOD = "select"


def ranking_frame(params, candidates: dict[str, list[str]]):
    """The selection's answer as a ranking of its target's candidates (None without a finished trail of a
    ranked target): score = expected gain over the baseline, with P(beats) and P(best) of the last posterior."""
    import pandas as pd

    target = params.select.target
    path = trail_path(params, target) if target in candidates else None
    if path is None or not path.is_file():
        return None
    d = read_json(path)
    if not d.get("answer"):
        return None
    last = {r["arm"]: r for r in d["steps"][-1]["posterior"]}
    cands = [c for c in candidates[target] if c in last]
    runs = d["answer"]["runs"]
    return pd.DataFrame({"target": target, "candidate": cands, "score": [last[c]["gain"] for c in cands],
                         "basis": f"select: posterior after {runs} run(s) of the target",
                         "p_beats_baseline": [last[c]["p_beats"] for c in cands],
                         "p_best": [last[c]["p_best"] for c in cands]})


def report_section(params) -> str:
    """report.md's section on the selection of params.select.target (empty without its trail)."""
    target = params.select.target
    path = trail_path(params, target) if target else None
    if path is None or not path.is_file():
        return ""
    d = read_json(path)
    lines = [f"\n## Which intermediate task for {target}? The selection\n",
             f"`stilts select` trained one cell at a time (budget {d['budget']} training runs; a candidate's first "
             f"run includes its intermediate run), each chosen from the posterior after the runs before it.\n",
             "| step | run | cost | spent | leading arm | P(best) | P(beats baseline) | why |", "|---" * 8 + "|"]
    for st in d["steps"]:
        lead = max(st["posterior"], key=lambda r: r["expected_score"])
        run = f"{st['run']['arm']} r{st['run']['restart']}" if st["run"] else "stop"
        beats = f"{lead['p_beats']:.2f}" if lead["p_beats"] is not None else ""
        lines.append(f"| {st['index']} | {run} | {st['cost']} | {st['spent']} | {lead['arm']} | {lead['p_best']:.2f} | "
                     f"{beats} | {st['why']} |")
    a = d.get("answer")
    if a:
        beats = f", P(beats the baseline) {a['p_beats']:.2f}" if a["p_beats"] is not None else ""
        what = "no intermediate task" if a["arm"] == "none" else a["arm"]
        lines.append(f"\nAnswer: **{what}**{beats} (about {a['versus']}), expected gain {a['gain']:+.4f}, "
                     f"P(best) {a['p_best']:.2f}; stopped: {a['stopped']}.\n")
    return "\n".join(lines) + "\n"
