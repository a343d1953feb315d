"""`stilts rank`: rank candidate intermediate tasks for each target, and score the ranking against
the measured grid when the experiment holds one.

reports/ranking.csv        target, candidate, method, score, rank (1 = the best candidate)
reports/ranking_eval.csv   target, method, regret_at_1, regret_at_3, ndcg, spearman, n_candidates
                           (rows with method `random`: its expectation; rows with target `mean`)
For another experiment than the study's (e.g. imported results), both go to reports/<experiment>/,
as the analysis does. Each ranking is one MLflow run (stilts.role=ranking) with both tables.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from stilts.errors import StiltsError
from stilts.io import atomic_write_text
from stilts.selection import evaluate

RANKING = "ranking.csv"
RANKING_EVAL = "ranking_eval.csv"


def candidates_for(params) -> dict[str, list[str]]:
    """target → its candidates (rank.candidates, else tasks.intermediate), the target itself left out."""
    r = params.rank
    if not r.targets:
        raise StiltsError("rank: no targets; give --targets T1,T2 or set rank.targets in params")
    pool = r.candidates or params.tasks.intermediate
    if not pool:
        raise StiltsError("rank: no candidates; give --candidates A,B or set rank.candidates "
                          "(or tasks.intermediate) in params")
    out = {t: [c for c in dict.fromkeys(pool) if c != t] for t in dict.fromkeys(r.targets)}
    for t, cands in out.items():
        if not cands:
            raise StiltsError(f"rank: target '{t}' has no candidate other than itself")
    return out


def _check_inputs(params, candidates: dict[str, list[str]]) -> None:
    """Everything a method needs, before any work: prepared data (prepared now if missing), checkpoints."""
    from stilts.cells import checkpoint_dir
    from stilts.selection.logme import check_target
    from stilts.selection.sample import ensure_prepared

    if "logme" in params.rank.methods:
        for t in candidates:
            check_target(t)
        k = params.rank.restart
        for c in dict.fromkeys(c for cs in candidates.values() for c in cs):
            ckpt = checkpoint_dir(params, c, k)
            if not (ckpt / "stilts.json").is_file():
                raise StiltsError(f"{ckpt}: no intermediate checkpoint for logme; run `stilts intermediate --task "
                                  f"{c} --restart {k}` first (or dvc repro), or rank with --method semb")
    for task in dict.fromkeys([*candidates, *(c for cs in candidates.values() for c in cs)]):
        ensure_prepared(params, task)


def _scores(params, method: str, targets: list[str], candidates: dict[str, list[str]]):
    from stilts.selection import logme, semb

    return {"semb": semb.scores, "logme": logme.scores}[method](params, targets, candidates)


def ranking_table(scores: dict[str, dict[tuple[str, str], float]], candidates: dict[str, list[str]]) -> pd.DataFrame:
    rows = []
    for target, cands in candidates.items():
        for method, by_pair in scores.items():
            ordered = evaluate.order({c: by_pair[(target, c)] for c in cands})
            rows += [{"target": target, "candidate": c, "method": method, "score": by_pair[(target, c)],
                      "rank": i + 1} for i, c in enumerate(ordered)]
    return pd.DataFrame(rows, columns=["target", "candidate", "method", "score", "rank"])


def out_dir(params, experiment: str) -> Path:
    reports = params.path("reports")
    return reports if experiment == params.mlflow.experiment else reports / experiment


def run(params, experiment: str | None = None) -> dict:
    """Rank, score against `experiment` (default: the study's), write the tables, log the run."""
    from stilts import tracking
    from stilts.analysis.collect import collect

    experiment = experiment or params.mlflow.experiment
    candidates = candidates_for(params)
    targets = list(candidates)
    _check_inputs(params, candidates)
    scores, seconds = {}, {}
    for method in params.rank.methods:
        start = time.perf_counter()
        scores[method] = _scores(params, method, targets, candidates)
        seconds[method] = time.perf_counter() - start
    ranking = ranking_table(scores, candidates)
    means = evaluate.measured_means(collect(params, experiment))
    table = evaluate.evaluate(ranking, means)
    out = out_dir(params, experiment)
    atomic_write_text(out / RANKING, ranking.to_csv(index=False, float_format="%.6f"))
    atomic_write_text(out / RANKING_EVAL, table.to_csv(index=False, float_format="%.6f"))
    r = params.rank
    with tracking.tracked(params, "ranking", {"role": "ranking", "source": "-", "task": "-"}, experiment) as run_:
        run_.log_params({"rank": {"targets": ",".join(targets), "methods": ",".join(r.methods),
                                  "candidates": ",".join(dict.fromkeys(c for cs in candidates.values() for c in cs)),
                                  "sample_size": r.sample_size, "seed": r.seed, "encoder": r.encoder,
                                  "max_seq_length": r.max_seq_length, "restart": r.restart},
                         "scored_against": experiment})
        metrics = {f"{m}_seconds": s for m, s in seconds.items()}
        for row in table[table["target"] == "mean"].itertuples():
            metrics |= {f"{row.method}_{k}": getattr(row, k) for k in evaluate.COLUMNS[2:-1]}
        run_.log_metrics(metrics)
        for name in (RANKING, RANKING_EVAL):
            run_.log_artifact(out / name, "reports")
    return {"out": out, "ranking": ranking, "evaluation": table, "seconds": seconds, "experiment": experiment}


def _fmt(x) -> str:
    return "" if pd.isna(x) else f"{x:.3f}"


def summary(result: dict) -> str:
    """What `stilts rank` prints: the top 3 per target and method, and the scores against the grid."""
    lines = []
    for (target, method), g in result["ranking"].groupby(["target", "method"], sort=False):
        top = ", ".join(f"{c} ({s:.3f})" for c, s in zip(g["candidate"][:3], g["score"][:3]))
        lines.append(f"{target} [{method}]: {top}")
    table = result["evaluation"]
    if table.empty:
        lines.append(f"not scored: experiment '{result['experiment']}' holds no transfer results for two or more "
                     "ranked candidates of any target")
    else:
        lines.append(f"against experiment '{result['experiment']}' (mean over targets):")
        for row in table[table["target"] == "mean"].itertuples():
            lines.append(f"  {row.method:<7} regret@1 {_fmt(row.regret_at_1)}  regret@3 {_fmt(row.regret_at_3)}  "
                         f"ndcg {_fmt(row.ndcg)}  spearman {_fmt(row.spearman)}")
    return "\n".join(lines)


def report_section(out: Path) -> str:
    """report.md's "Which intermediate task?" section, from the tables in `out` (if a ranking ran)."""
    lines = ["\n## Which intermediate task? (ranking without the grid)\n"]
    if not (out / RANKING).is_file():
        lines.append("No ranking in this study: set `rank.targets` in params (a `rank` stage), or run `stilts rank "
                     "--targets T1,T2`. It ranks candidate intermediate tasks for each target by dataset "
                     "similarity (semb) or LogME on each candidate checkpoint's features (logme).\n")
        return "\n".join(lines)
    ranking = pd.read_csv(out / RANKING)
    lines.append("Top 3 candidates per target (rank 1 first; `reports/ranking.csv` has every score):\n")
    lines.append("| target | method | 1 | 2 | 3 |\n|---|---|---|---|---|")
    for (target, method), g in ranking.sort_values("rank", kind="stable").groupby(["target", "method"], sort=False):
        top = list(g["candidate"][:3]) + [""] * (3 - min(3, len(g)))
        lines.append(f"| {target} | {method} | " + " | ".join(top) + " |")
    table = pd.read_csv(out / RANKING_EVAL) if (out / RANKING_EVAL).is_file() else pd.DataFrame()
    if table.empty:
        lines.append("\nNot scored: the experiment holds no transfer results for these target/candidate pairs.\n")
        return "\n".join(lines)
    lines.append("\nAgainst the measured grid (mean score over restarts after each candidate): Regret@k = (best "
                 "measured − best measured among the top k) / best; NDCG with gains = measured mean − the lowest "
                 "candidate's; Spearman of scores vs measured means; `random` = the exact expectation of a random "
                 "order. Lower regret, higher NDCG and Spearman are better.\n")
    lines.append("| target | method | Regret@1 | Regret@3 | NDCG | Spearman | candidates |\n|---|---|---|---|---|---|---|")
    for row in table.itertuples():
        n = "" if pd.isna(row.n_candidates) else f"{row.n_candidates:g}"
        lines.append(f"| {row.target} | {row.method} | {_fmt(row.regret_at_1)} | {_fmt(row.regret_at_3)} | "
                     f"{_fmt(row.ndcg)} | {_fmt(row.spearman)} | {n} |")
    return "\n".join(lines) + "\n"
