"""`stilts rank`: rank candidate intermediate tasks for each target, and score the ranking against
the measured grid when the experiment holds one.

reports/ranking.csv        target, candidate, method, score, rank (1 = the best candidate), basis (where
                           the score came from), p_beats_baseline, p_best, gain_low, gain_high (prior
                           and hybrid: see prior.py), data (`present`, or where a candidate's data must go
                           before it can be trained), measured_gain and measured_beats (where the scored
                           experiment measured the pair: mean score after it − baseline mean; whether > 0)
reports/ranking_eval.csv   target, method, regret_at_1, regret_at_3, ndcg, spearman, auroc, brier,
                           n_candidates (rows with method `random`: its expectation; rows with target `mean`)
For another experiment than the study's (e.g. imported results), both go to reports/<experiment>/,
as the analysis does. Each ranking is one MLflow run (stilts.role=ranking) with both tables.

When the prior grids are other experiments than the scored one, a reference method `prior-within`
is added: the prior fitted on the scored experiment itself (leave-one-target-out), so the table
shows what the prior from elsewhere loses against one from the same setting.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd

from stilts.errors import StiltsError
from stilts.io import atomic_write_text
from stilts.selection import evaluate
from stilts.selection import grids as grids_

RANKING = "ranking.csv"
RANKING_EVAL = "ranking_eval.csv"
COLUMNS = ["target", "candidate", "method", "score", "rank", "basis", "p_beats_baseline", "p_best", "gain_low",
           "gain_high", "data", "measured_gain", "measured_beats"]
GRID_METHODS = ("prior", "hybrid")
WITHIN = "prior-within"


def candidates_for(params, fallback: list[str] = ()) -> dict[str, list[str]]:
    """target → its candidates (rank.candidates, else tasks.intermediate, else `fallback`: the prior
    grids' sources), the target itself left out."""
    r = params.rank
    if not r.targets:
        raise StiltsError("rank: no targets; give --targets T1,T2 or set rank.targets in params")
    pool = r.candidates or params.tasks.intermediate or list(fallback)
    if not pool:
        raise StiltsError("rank: no candidates; give --candidates A,B or set rank.candidates "
                          "(or tasks.intermediate) in params")
    out = {t: [c for c in dict.fromkeys(pool) if c != t] for t in dict.fromkeys(r.targets)}
    for t, cands in out.items():
        if not cands:
            raise StiltsError(f"rank: target '{t}' has no candidate other than itself")
    return out


def _check_inputs(params, candidates: dict[str, list[str]]) -> None:
    """What semb and logme need, before any work: prepared data (prepared now if missing), checkpoints."""
    from stilts.cells import checkpoint_dir
    from stilts.selection.logme import check_target
    from stilts.selection.sample import ensure_prepared

    methods = params.rank.methods
    if "logme" in methods:
        for t in candidates:
            check_target(t)
        k = params.rank.restart
        for c in dict.fromkeys(c for cs in candidates.values() for c in cs):
            ckpt = checkpoint_dir(params, c, k)
            if not (ckpt / "stilts.json").is_file():
                raise StiltsError(f"{ckpt}: no intermediate checkpoint for logme; run `stilts intermediate --task "
                                  f"{c} --restart {k}` first (or dvc repro), or rank with --method semb")
    if "semb" in methods or "logme" in methods:
        for task in dict.fromkeys([*candidates, *(c for cs in candidates.values() for c in cs)]):
            ensure_prepared(params, task)


def _check_names(candidates: dict[str, list[str]], grid_list: list[grids_.Grid], runs: pd.DataFrame) -> None:
    """A task the registry does not know must be in a prior grid (the prior knows it from there); a target
    may also be one measured only in the scored experiment (source effects do not depend on the target)."""
    from stilts.errors import did_you_mean
    from stilts.tasks import registry

    known = set(registry.names()) | {t for g in grid_list for t in [*g.targets, *g.sources]}
    known |= set(runs["task"]) if not runs.empty else set()
    where = ", ".join(g.name for g in grid_list) or "none given"
    for role, names in (("target", list(candidates)), ("candidate", [c for cs in candidates.values() for c in cs])):
        for name in dict.fromkeys(names):
            if name not in known:
                raise StiltsError(f"rank: {role} '{name}' is in no prior grid ({where}) and is not a known "
                                  f"task{did_you_mean(name, sorted(known))}")


def _check_request(params) -> None:
    """What can be checked before reading anything."""
    r = params.rank
    if not r.targets:
        raise StiltsError("rank: no targets; give --targets T1,T2 or set rank.targets in params")


def experiment_runs(params, experiment: str) -> pd.DataFrame:
    """collect()'s table of the scored experiment; a catalogue grid's runs (shipped or fetched) when no experiment
    by its name holds target runs (it is scored against without an import step)."""
    from stilts import tracking
    from stilts.analysis.collect import collect
    from stilts.selection import published

    runs = collect(params, experiment) if tracking.experiment_exists(params, experiment) else None
    if experiment in published.names() and (runs is None or not (runs["role"] == "target").any()):
        return published.runs(experiment)
    return collect(params, experiment) if runs is None else runs


def load_grids(params, experiment: str, runs: pd.DataFrame,
               notes: list[str] | None = None) -> list[grids_.Grid]:
    """The grids prior and hybrid learn from: rank.prior_experiments; else every catalogue grid that is here
    (fetched on first use where the network allows) and the study's own experiment once it holds transfer
    runs (a target's own pairs in the scored experiment are never used)."""
    from stilts.selection import published

    notes = [] if notes is None else notes
    if not any(m in GRID_METHODS for m in params.rank.methods):
        return []
    load = lambda e: grids_.load(params, e, runs if e == experiment else None)  # noqa: E731
    if params.rank.prior_experiments:
        named = list(dict.fromkeys(params.rank.prior_experiments))
        notes += published.on_first_use([e for e in named if e in published.names()], required=True)
        return [load(e) for e in named]
    notes += published.on_first_use(published.names())
    grid_list = [load(e) for e in published.available()]
    own = params.mlflow.experiment
    if own not in published.names():
        try:
            grid_list.append(load(own))
        except StiltsError:  # no transfer run there yet
            pass
    return grid_list


def _side_scores(params, method: str, candidates: dict[str, list[str]]) -> pd.DataFrame:
    from stilts.selection import logme, semb

    by_pair = {"semb": semb.scores, "logme": logme.scores}[method](params, list(candidates), candidates)
    return pd.DataFrame([{"target": t, "candidate": c, "score": by_pair[(t, c)], "basis": method}
                         for t, cs in candidates.items() for c in cs])


def _grid_scores(params, method: str, grid_list, candidates, baselines, notes: list[str],
                 sizes: dict | None = None, scored: str | None = None) -> pd.DataFrame:
    """prior, prior-within or hybrid: one frame per target; the target's pairs in the scored experiment are
    never used (hybrid: in no grid)."""
    from stilts.selection import hybrid, pooling, prior, signals

    in_grid = {s for g in grid_list for s in g.sources}
    absent = [c for cs in candidates.values() for c in cs if c not in in_grid]
    sig, emb = {}, {}
    if method == "hybrid":
        pairs = {t: list(cs) for t, cs in candidates.items()}
        for g in grid_list:
            for u in g.targets:
                pairs[u] = list(dict.fromkeys([*pairs.get(u, []), *(s for s in g.sources if s != u)]))
        sig, emb = signals.gather(params, pairs, sorted(in_grid) if absent else [])
        _note_missing(sig, candidates, notes)
        if not grid_list:
            notes.append("hybrid: no prior grid (--prior-experiment): the mean of the standardised semb and logme "
                         "scores there are, without a harm prediction")
    elif absent:
        emb = signals.embeddings(params, [*absent, *sorted(in_grid)])
    pool = pooling.prepare(grid_list, params.model.name) if method != "hybrid" and grid_list else None
    if pool is not None and method == "prior" and len(grid_list) > 1:
        notes.append(f"prior: grid weights for model.name={params.model.name} (closeness learned leave-one-grid-out"
                     f"): {pooling.describe(pool.weights, pool.weights)}")
    frames = []
    for t, cs in candidates.items():
        if method == "hybrid":
            f = hybrid.rank_target(grid_list, t, cs, sig, emb, baselines.get(t), (sizes or {}).get(t))
        else:
            f = prior.rank_target(grid_list, t, cs, emb, baselines.get(t), (sizes or {}).get(t),
                                  model=params.model.name, scored=scored, pool=pool)
        if f.empty:
            raise StiltsError(f"rank: the prior grids ({', '.join(g.name for g in grid_list)}) hold no transfer "
                              f"results for any target other than '{t}'")
        frames.append(f.assign(target=t))
    return pd.concat(frames, ignore_index=True)


def _note_missing(sig: dict, candidates: dict[str, list[str]], notes: list[str]) -> None:
    without = [t for t in candidates if not any(p[0] == t for p in sig.get("semb", {}))]
    if without:
        notes.append(f"hybrid: no semb signal for target(s) {', '.join(without)} (data files absent or not a "
                     "registered task): their hybrid score comes from the other signals")


def ranking_table(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """method → its (target, candidate, score, ...) frame → ranking.csv's rows, best first per target."""
    rows = []
    for method, f in frames.items():
        for target, g in f.groupby("target", sort=False):
            by_name = g.set_index("candidate")
            ordered = evaluate.order(dict(zip(g["candidate"], g["score"])))
            for i, c in enumerate(ordered):
                row = {"target": target, "candidate": c, "method": method, "rank": i + 1}
                rows.append(row | {k: by_name.at[c, k] for k in COLUMNS if k in by_name.columns and k not in row})
    table = pd.DataFrame(rows, columns=COLUMNS)
    order = {t: i for i, t in enumerate(dict.fromkeys(r["target"] for r in rows))}
    return table.sort_values("target", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def out_dir(params, experiment: str) -> Path:
    reports = params.path("reports")
    return reports if experiment == params.mlflow.experiment else reports / experiment


def rankings(params, experiment: str, runs: pd.DataFrame) -> tuple[dict, dict, list[str]]:
    """(method → frame, method → seconds, notes) for every method of rank.methods (and prior-within)."""
    r = params.rank
    notes: list[str] = []
    grid_list = load_grids(params, experiment, runs, notes)
    candidates = candidates_for(params, sorted({s for g in grid_list for s in g.sources}))
    if set(r.methods) <= set(GRID_METHODS):
        _check_names(candidates, grid_list, runs)
    if grid_list:
        _check_inputs(params, candidates)  # without grids, run() checked them before reading MLflow
    first = grids_.first_baselines(runs)
    baselines = {t: float(first[t]) if t in first.index else grids_.target_baseline(grid_list, t)
                 for t in candidates}
    methods = list(r.methods)
    within = None
    if "prior" in methods and experiment not in [g.name for g in grid_list]:
        try:
            within = [grids_.from_runs(experiment, runs)]
            methods.append(WITHIN)
        except StiltsError:  # the scored experiment holds no grid: nothing to compare with
            pass
    from stilts.selection import guidance

    sizes = guidance.train_sizes(params, candidates) if grid_list else {}
    notes += guidance.encoder_notes(params, grid_list) + guidance.baseline_notes(params, grid_list, candidates,
                                                                                baselines, sizes)
    frames, seconds = {}, {}
    for method in methods:
        start = time.perf_counter()
        if method in ("semb", "logme"):
            frames[method] = _side_scores(params, method, candidates)
        elif method == WITHIN:  # a reference only: skipped where the scored experiment has too few targets
            try:
                frames[method] = _grid_scores(params, method, within, candidates, baselines, [], sizes,
                                              experiment)
            except StiltsError:
                continue
        else:
            frames[method] = _grid_scores(params, method, grid_list, candidates, baselines, notes, sizes,
                                          experiment)
        seconds[method] = time.perf_counter() - start
    from stilts.selection import select_record

    chosen = select_record.ranking_frame(params, candidates)
    if chosen is not None:  # the answer of a selection on the target, scored like a ranking
        frames[select_record.METHOD] = chosen
    return frames, seconds, notes + [f"prior grids: {', '.join(g.name for g in grid_list)}"] * bool(grid_list)


def run(params, experiment: str | None = None) -> dict:
    """Rank, score against `experiment` (default: the study's), write the tables, log the run."""
    from stilts import tracking

    experiment = experiment or params.mlflow.experiment
    _check_request(params)
    if not any(m in GRID_METHODS for m in params.rank.methods):
        _check_inputs(params, candidates_for(params))  # bad input fails before anything is read or written
    runs = experiment_runs(params, experiment)
    frames, seconds, notes = rankings(params, experiment, runs)
    ranking = ranking_table(frames)
    from stilts.selection import guidance

    ranking["data"] = ranking["candidate"].map(guidance.data_status(params, ranking["candidate"]))
    means = evaluate.measured_means(runs)
    ranking = evaluate.with_measured(ranking, means)
    table = evaluate.evaluate(ranking, means)
    out = out_dir(params, experiment)
    atomic_write_text(out / RANKING, ranking.to_csv(index=False, float_format="%.6f"))
    atomic_write_text(out / RANKING_EVAL, table.to_csv(index=False, float_format="%.6f"))
    r = params.rank
    targets = list(dict.fromkeys(ranking["target"]))
    with tracking.tracked(params, "ranking", {"role": "ranking", "source": "-", "task": "-"}, experiment) as run_:
        run_.log_params({"rank": {"targets": ",".join(targets), "methods": ",".join(r.methods),
                                  "candidates": ",".join(dict.fromkeys(ranking["candidate"])),
                                  "prior_grids": next((n.split(": ", 1)[1] for n in notes
                                                       if n.startswith("prior grids: ")), ""),
                                  "sample_size": r.sample_size, "seed": r.seed, "encoder": r.encoder,
                                  "max_seq_length": r.max_seq_length, "restart": r.restart},
                         "scored_against": experiment})
        metrics = {f"{m}_seconds": s for m, s in seconds.items()}
        for row in table[table["target"] == "mean"].itertuples():
            metrics |= {f"{row.method}_{k}": getattr(row, k) for k in evaluate.SCORES
                        if not math.isnan(getattr(row, k))}
        run_.log_metrics(metrics)
        for name in (RANKING, RANKING_EVAL):
            run_.log_artifact(out / name, "reports")
    return {"out": out, "ranking": ranking, "evaluation": table, "seconds": seconds, "experiment": experiment,
            "notes": notes}
