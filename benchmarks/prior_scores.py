"""How well the prior learnt from each grid shipped with stilts ranks intermediate tasks: the figures `stilts rank`
quotes come from the file this writes, src/stilts/selection/published/prior_scores.json.

    python benchmarks/prior_scores.py       # each shipped grid scored against itself, every target left out of its fit
    python benchmarks/prior_scores.py --grid taskweb-roberta roberta-base taskweb_roberta.csv \\
        "the TaskWeb RoBERTa-base grid (Kim et al., 2023)"      # + a grid of another encoder (and its sha256)

A --grid (NAME ENCODER CSV ABOUT, a CSV in the `stilts import-results` format; TaskWeb's from
benchmarks/taskweb_grid.py) is ranked by each shipped grid's prior on all of its targets, the candidates both
grids hold. The rankings are those of `stilts rank --method prior --prior-experiment <shipped grid>
--experiment <scored grid>` (the same functions, in this process, without MLflow), scored as ranking_eval.csv's
`mean` rows: Regret@k, NDCG and Spearman averaged over targets, AUROC and Brier over the (candidate, target)
pairs with a baseline; `random` is the expectation over random orders. Rows: setting (`prior:<shipped grid>`),
held_out_grid (the grid scored), metric, value, random; with the stilts commit and the command that made them.
Prints the rows as a table; the last line names the file written.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("regret_at_1", "regret_at_3", "ndcg", "spearman", "auroc", "brier")


def grid_runs(csv: Path) -> pd.DataFrame:
    """A grid CSV as the table `stilts rank` reads from MLflow (one row per run)."""
    from stilts.analysis.imports import read

    rows = read(csv)
    return pd.DataFrame({"run_id": [f"{csv.name}:{r['line']}" for r in rows], "source": [r["source"] for r in rows],
                         "task": [r["task"] for r in rows], "role": [r["role"] for r in rows],
                         "restart": [r["restart"] for r in rows], "score": [r["score"] for r in rows]})


def targets_and_sources(runs: pd.DataFrame) -> tuple[list[str], list[str]]:
    t = runs[runs["role"] == "target"]
    return sorted(set(t["task"])), sorted(set(t["source"]) - {"none"})


def score(prior_grid: str, held_out: str, runs: pd.DataFrame, targets: list[str], candidates: list[str],
          root: Path) -> list[dict]:
    """The `mean` rows of ranking_eval.csv for the prior of `prior_grid` ranking `held_out`'s targets."""
    from stilts import config
    from stilts.selection import evaluate, rank

    params = config.Params(root=root)
    params.rank = dataclasses.replace(params.rank, targets=targets, candidates=candidates, methods=["prior"],
                                      prior_experiments=[prior_grid])
    frames, _, _ = rank.rankings(params, held_out, runs)
    means = evaluate.measured_means(runs)
    table = evaluate.evaluate(evaluate.with_measured(rank.ranking_table({"prior": frames["prior"]}), means), means)
    mean = table[table["target"] == "mean"].set_index("method")
    rows = [{"setting": f"prior:{prior_grid}", "held_out_grid": held_out, "metric": "targets",
             "value": len(targets), "random": None},
            {"setting": f"prior:{prior_grid}", "held_out_grid": held_out, "metric": "candidates",
             "value": len(candidates), "random": None}]
    for m in METRICS:
        value, rand = float(mean.at["prior", m]), float(mean.at["random", m])
        if not math.isnan(value):
            rows.append({"setting": f"prior:{prior_grid}", "held_out_grid": held_out, "metric": m,
                         "value": round(value, 4), "random": None if math.isnan(rand) else round(rand, 4)})
    return rows


def commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          timeout=30)
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "src"], cwd=ROOT,
                           capture_output=True, text=True, timeout=30).stdout.strip()
    return head.stdout.strip() + (" with uncommitted changes under src/" if dirty else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", nargs=4, action="append", default=[], metavar=("NAME", "ENCODER", "CSV", "ABOUT"),
                    help="a grid measured elsewhere, ranked by each shipped grid's prior")
    ap.add_argument("--out", type=Path, default=ROOT / "src" / "stilts" / "selection" / "published" /
                    "prior_scores.json")
    args = ap.parse_args(argv)
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # the grids are read from files, never from a tracking store
    from stilts.selection import published

    made = {"command": shlex.join(["python", "benchmarks/prior_scores.py", *(argv if argv is not None else
                                                                             sys.argv[1:])]),
            "stilts_commit": commit(), "date": time.strftime("%Y-%m-%d")}
    grids = {n: {"encoder": p.encoder, "about": p.citation} for n, p in published.catalog().items()}
    rows = []
    with tempfile.TemporaryDirectory(prefix="stilts-prior-scores-") as root:  # no data, no MLflow store
        for name in published.names():
            runs = published.runs(name)
            rows += score(name, name, runs, *targets_and_sources(runs), Path(root))
        for name, encoder, csv, about in args.grid:
            grids[name] = {"encoder": encoder, "about": about, "file": Path(csv).name,
                           "sha256": hashlib.sha256(Path(csv).read_bytes()).hexdigest()}
            runs = grid_runs(Path(csv))
            targets, sources = targets_and_sources(runs)
            for shipped in published.names():
                shared = sorted(set(sources) & set(published.runs(shipped)["source"]))
                rows += score(shipped, name, runs, targets, shared, Path(root))
    args.out.write_text(json.dumps({"made": made, "grids": grids, "rows": rows}, indent=1, ensure_ascii=False) + "\n",
                        encoding="utf-8")
    print("| setting | held-out grid | metric | value | random |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['held_out_grid']} | {r['metric']} | {r['value']} | "
              f"{'' if r['random'] is None else r['random']} |")
    print(f"wrote {args.out} ({made['command']}; stilts {made['stilts_commit']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
