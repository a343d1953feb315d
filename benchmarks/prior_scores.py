"""Leave one grid out: how well the default prior, learnt from every other grid of the catalogue, ranks the
intermediate tasks of the grid left out, for a user whose encoder and method are that grid's.

    STILTS_CACHE=/tmp/cache python benchmarks/prior_scores.py --from /path/to/TaskWeb [--write]

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

--signal type adds a setting `renamed+type` (item 4 of the prior's signals, tried): the target's task type
(stilts' registry, TASK_TYPES for tasks outside it) selects a type-specific correction from the other grids'
targets of that type, shrunk like the target's own correction. It is not part of the prior: it did not help.

--write replaces src/stilts/selection/published/prior_scores.json (rows of setting, held_out_grid, metric,
value, random; the command, stilts commit, date and CPU), which `stilts rank` quotes.
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
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "stilts" / "selection" / "published" / "prior_scores.json"
METRICS = ("regret_at_1", "regret_at_3", "ndcg", "auroc")
TASK_TYPES = {"anli_r3": "classification", "imdb": "classification", "piqa": "multiple_choice",
              "quartz": "multiple_choice", "rotten_tomatoes": "classification", "squad_v2": "span_qa",
              "winogrande": "multiple_choice"}


def load_grids():
    from stilts.selection import grids, published

    out = []
    for name in published.available():
        entry = published.catalog()[name]
        out.append(grids.from_runs(name, published.runs(name), entry.encoder, entry.method, published=True))
    return out


def task_type(task: str) -> str | None:
    from stilts.tasks import registry

    return TASK_TYPES.get(task) or (registry.get(task).type if task in registry.names() else None)


def type_correction(pool, effects, target: str, candidates: list[str]) -> dict[str, float]:
    """The mean residual of each candidate over the other grids' targets of the target's type (not the target)."""
    from stilts.selection import pooling

    kind = task_type(target)
    mean_w = float(np.mean(list(pool.weights.values())))
    out = {}
    for c in candidates:
        rows = [(pool.weights[n], e.resid.at[u, c]) for n, e in effects.items() for u in e.resid.index
                if u != target and task_type(u) == kind and c in e.resid.columns and not math.isnan(e.resid.at[u, c])]
        if kind and rows:
            w, r = (np.array(x, dtype=float) for x in zip(*rows))
            out[c] = float(w @ r / (w.sum() + pooling.KAPPA * mean_w))
    return out


def rank_held_out(held, others, setting: str) -> pd.DataFrame:
    """ranking rows (target, candidate, method, score, p_beats_baseline) of the held-out grid's targets."""
    from stilts.selection import pooling, prior

    pool = pooling.prepare(others, held.encoder, held.method or pooling.USER_METHOD)
    frames = []
    for t in held.targets:
        cands = [c for c in held.measured(t) if c != t]
        if len(cands) < 2:
            continue
        base = float(held.first_baseline[t]) if t in held.first_baseline.index else None
        scored = held.name if setting == "named" else None  # None: no grid's pairs of t are used
        f = prior.rank_target(others, t, cands, baseline=base, model=held.encoder, scored=scored, pool=pool)
        if setting == "renamed+type":
            extra = type_correction(pool, pool.for_target(t, None), t, cands)
            f["score"] = f["score"] + f["candidate"].map(extra).fillna(0.0)
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
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} CPUs"
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def write(results: dict, grid_list, command: str) -> None:
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    rows = [{"setting": s, "held_out_grid": g, "metric": k, "value": round(v[0], 6),
             "random": None if math.isnan(v[1]) else round(v[1], 6)}
            for s, by_grid in results.items() for g, m in by_grid.items() for k, v in m.items()
            if not math.isnan(v[0])]
    made = {"command": command, "stilts_commit": commit, "date": datetime.date.today().isoformat(), "cpu": cpu()}
    grids = {g.name: {"encoder": g.encoder, "method": g.method} for g in grid_list}
    OUT.write_text(json.dumps({"made": made, "grids": grids, "rows": rows}, indent=1) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--from", dest="from_path", type=Path, help="a clone of each fetchable source's repository")
    ap.add_argument("--signal", action="append", default=[], choices=["type"], help="a target signal to try")
    ap.add_argument("--only", help="comma-separated held-out grids (default: every grid)")
    ap.add_argument("--write", action="store_true", help=f"write {OUT.relative_to(ROOT)}")
    args = ap.parse_args(argv)
    from stilts.selection import fetch, published

    if args.from_path:
        for source in published.sources().values():
            fetch.fetch(source, args.from_path)
    grid_list = load_grids()
    settings = ["named", "renamed"] + [f"renamed+{s}" for s in args.signal]
    held_out = [g for g in grid_list if not args.only or g.name in args.only.split(",")]
    start, results = time.perf_counter(), {s: {} for s in settings}
    for held in held_out:
        others = [g for g in grid_list if g.name != held.name]
        for setting in settings:
            results[setting][held.name] = score(held, rank_held_out(held, others, setting))
        print(f"{held.name}: done ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    print(table(results))
    print(f"\n{len(grid_list)} grids; {time.perf_counter() - start:.0f} s; {cpu()}")
    if args.write:
        write(results, grid_list, "python benchmarks/prior_scores.py " + " ".join(
            a for a in (argv if argv is not None else sys.argv[1:]) if a != "--write"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
