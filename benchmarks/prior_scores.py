"""Leave one grid out: how well the default prior, learnt from every other grid of the catalogue, ranks the
intermediate tasks of the grid left out, for a user whose encoder and method are that grid's.

    STILTS_CACHE=/tmp/cache python benchmarks/prior_scores.py --from /path/to/TaskWeb \
        [--out src/stilts/selection/published/prior_scores.json] [--signal type|semb] [--oracle]

--from PATH fetches the fetchable sources from a local clone first (`stilts grids fetch NAME --from PATH`).
Every grid that is here (shipped or fetched) is left out in turn; its targets are ranked from the others,
over the candidates the left-out grid measured for each, in two settings:
  named    the targets keep their names: other grids' measurements of the same task count (a user whose
           target is a standard task);
  renamed  no grid's pairs of the target are used, as if its name were new (a user's own task).
The left-out grid's own results are never read by the prior; its targets' baseline runs, where it has them,
give the harm prediction the target's headroom (one run a user would make). Regret@1, Regret@3, NDCG (mean
over targets) and AUROC of P(beats the baseline) (pooled pairs; only where the left-out grid has baselines and
another grid too) against a random order, per grid and setting, and their means over grids.

Target signals tried for a task no grid measured (each adds a setting `renamed+<signal>`; neither is part of
the prior, as neither lowered both regrets; the third tried, choosing the top 3 as a set, did and is the
prior's pooling.diversify):
  type       the target's task type (stilts' registry; TASK_TYPES for tasks outside it): the mean residual of
             each candidate over the other grids' targets of that type, shrunk like the target's own correction;
  semb       the target's 3 nearest tasks by semb task embedding (the embedded encoder over --sample-size
             examples of each task's data from --data, as `stilts rank --method semb` computes them): their
             residuals in the other grids, shrunk the same way; targets without data get none.
--signal plain adds `named+plain` and `renamed+plain`: each candidate ranked by its own score, the prior
without choosing its top 3 as a set, to show what that choice changes.
--oracle adds `oracle`: the one order of candidates, the same for every target, that is best for the left-out
grid's own results (greedy on its mean Regret@1, then @3): not a method (it reads the results it is scored on),
the bound on what any ranking that gives every target the same order can reach.

--out FILE writes the rows (setting, held_out_grid, metric, value, random) with the command, stilts commit,
date and CPU; src/stilts/selection/published/prior_scores.json is what `stilts rank` quotes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import prior_signals  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("regret_at_1", "regret_at_3", "ndcg", "auroc")


def load_grids():
    from stilts.selection import grids, published

    out = []
    for name in published.available():
        entry = published.catalog()[name]
        out.append(grids.from_runs(name, published.runs(name), entry.encoder, entry.method, published=True))
    return out


def rank_held_out(held, others, setting: str, embeddings: dict) -> pd.DataFrame:
    """ranking rows (target, candidate, method, score, p_beats_baseline) of the held-out grid's targets."""
    from stilts.selection import pooling, prior

    if setting == "oracle":
        return prior_signals.oracle(held)
    named, signal = setting.startswith("named"), setting.partition("+")[2]
    pool = pooling.prepare(others, held.encoder, held.method or pooling.USER_METHOD)
    frames = []
    for t in held.targets:
        cands = [c for c in held.measured(t) if c != t]
        if len(cands) < 2:
            continue
        base = float(held.first_baseline[t]) if t in held.first_baseline.index else None
        scored = held.name if named else None  # None: no grid's pairs of t are used
        f = prior.rank_target(others, t, cands, baseline=base, model=held.encoder, scored=scored, pool=pool)
        effects = pool.for_target(t, scored)
        if signal == "plain":  # each candidate by its own score: the prior without choosing the top 3 as a set
            f["score"] = prior.pooled_candidates(pool, t, cands, None, scored)[1]
        elif signal in ("type", "semb"):  # added to the prior's scores before the top 3 is chosen as a set
            extra = prior_signals.type_correction(pool, effects, t, cands) if signal == "type" else \
                prior_signals.semb_correction(pool, effects, t, cands, embeddings)
            _, mean, _ = prior.pooled_candidates(pool, t, cands, None, scored)
            adjusted = mean + np.array([extra.get(c, 0.0) for c in cands])
            f["score"] = pooling.diversify(adjusted, effects, pool.weights, t, cands)[0]
        frames.append(f.assign(target=t, method="prior"))
    return pd.concat(frames, ignore_index=True)


def score(held, ranking: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """metric → (value, random)."""
    from stilts.selection import evaluate, published

    table = evaluate.evaluate(ranking, evaluate.measured_means(published.runs(held.name)))
    mean = table[table["target"] == "mean"].set_index("method")
    out = {m: (float(mean.at["prior", m]), float(mean.at["random", m])) for m in METRICS}
    out["targets"] = (float((table["method"] == "prior").sum() - 1), math.nan)
    return out


def fmt(x: float, pct: bool) -> str:
    return "" if x is None or math.isnan(x) else (f"{100 * x:.2f}%" if pct else f"{x:.3f}")


def table(results: dict) -> str:
    lines = ["| setting | held-out grid | targets | Regret@1 (random) | Regret@3 (random) | NDCG (random) | AUROC |",
             "|---|---|---|---|---|---|---|"]
    for setting, by_grid in results.items():
        for grid, m in [*by_grid.items(), ("mean over grids", mean_over(by_grid))]:
            cells = [f"{fmt(m[k][0], k != 'ndcg')} ({fmt(m[k][1], k != 'ndcg')})" for k in METRICS[:3]]
            lines.append(f"| {setting} | {grid} | {m['targets'][0]:.0f} | " + " | ".join(cells) +
                         f" | {fmt(m['auroc'][0], False)} |")
    return "\n".join(lines)


def mean_over(by_grid: dict) -> dict:
    out = {}
    for k in (*METRICS, "targets"):
        vals = [m[k] for m in by_grid.values() if not math.isnan(m[k][0])]
        out[k] = (float(np.mean([v[0] for v in vals])), float(np.mean([v[1] for v in vals]))) if vals else \
            (math.nan, math.nan)
    out["targets"] = (sum(m["targets"][0] for m in by_grid.values()), math.nan)
    return out


def cpu() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=30).stdout.splitlines():
            if line.startswith("Model name:"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} CPUs"
    except (OSError, subprocess.TimeoutExpired):
        pass
    return platform.processor() or "unknown CPU"


def recorded(argv: list[str]) -> list[str]:
    """The command as users repeat it: no scratch folder (--semb-project), the task data as data/raw unless it
    lies inside this checkout."""
    out, args = [], iter(argv)
    for a in args:
        flag, eq, value = a.partition("=")
        if flag in ("--semb-project", "--data"):
            value = value if eq else next(args, "")
            if flag == "--data":
                path = Path(value).resolve()
                out += ["--data", str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else "data/raw"]
            continue
        out.append(a)
    return out


def write(out: Path, results: dict, grid_list, command: str) -> None:
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, timeout=60).stdout.strip()
    rows = [{"setting": s, "held_out_grid": g, "metric": k, "value": round(v[0], 6),
             "random": None if math.isnan(v[1]) else round(v[1], 6)}
            for s, by_grid in results.items() for g, m in by_grid.items() for k, v in m.items()
            if not math.isnan(v[0])]
    made = {"command": command, "stilts_commit": commit, "date": datetime.date.today().isoformat(), "cpu": cpu()}
    grids = {g.name: {"encoder": g.encoder, "method": g.method} for g in grid_list}
    out.write_text(json.dumps({"made": made, "grids": grids, "rows": rows}, indent=1) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--from", dest="from_path", type=Path, help="a clone of each fetchable source's repository")
    ap.add_argument("--signal", action="append", default=[], choices=["type", "semb", "plain"],
                    help="a target signal to try (repeatable)")
    ap.add_argument("--data", default=str(ROOT / "data" / "raw"),
                    help="task data for --signal semb (default: data/raw, the official files)")
    ap.add_argument("--semb-project", default=str(Path(tempfile.gettempdir()) / "stilts-prior-scores-semb"),
                    help="the scratch project semb's embeddings are cached in")
    ap.add_argument("--sample-size", type=int, default=1000, help="examples per task for semb (default 1000)")
    ap.add_argument("--oracle", action="store_true", help="add the best single order (a bound, not a method)")
    ap.add_argument("--only", help="comma-separated held-out grids (default: every grid)")
    ap.add_argument("--out", type=Path, help="write the rows there (the shipped file: "
                    "src/stilts/selection/published/prior_scores.json)")
    args = ap.parse_args(argv)
    from stilts.selection import fetch, published

    if args.from_path:
        for source in published.sources().values():
            fetch.fetch(source, args.from_path)
    grid_list = load_grids()
    settings = ["named", "renamed"] + [f"renamed+{s}" for s in args.signal]
    settings += ["named+plain"] * ("plain" in args.signal) + ["oracle"] * args.oracle
    tasks = sorted({t for g in grid_list for t in [*g.targets, *g.sources]})
    emb = prior_signals.embeddings(args.data, tasks, args.semb_project, args.sample_size) \
        if "semb" in args.signal else {}
    held_out = [g for g in grid_list if not args.only or g.name in args.only.split(",")]
    start, results = time.perf_counter(), {s: {} for s in settings}
    for held in held_out:
        others = [g for g in grid_list if g.name != held.name]
        for setting in settings:
            results[setting][held.name] = score(held, rank_held_out(held, others, setting, emb))
        print(f"{held.name}: done ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    print(table(results))
    if emb:
        print(f"\nsemb: embeddings of {len(emb)} tasks with data ({', '.join(sorted(emb))})")
    print(f"\n{len(grid_list)} grids; {time.perf_counter() - start:.0f} s; {cpu()}")
    if args.out:
        write(args.out, {s: results[s] for s in ("named", "renamed")}, grid_list,
              "python benchmarks/prior_scores.py " + " ".join(recorded(argv if argv is not None else sys.argv[1:])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
