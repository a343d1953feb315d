"""Orchestration overhead of a study: the share of `dvc repro`'s wall time spent outside training.

    python benchmarks/orchestration.py            # in a project: stilts pipeline + dvc repro, timed
    python benchmarks/orchestration.py --no-run   # only analyse the runs already in mlflow.db

Splits the wall time into (a) training loops (the `train_seconds` of every sweep, intermediate and
transfer run: forward, backward, optimizer, evaluations; plus the final full-dev evaluation),
(b) inside runs but outside the loop (MLflow logging, checkpoint writing: run wall time minus (a)),
and (c) outside runs (DVC, process start, model and data loading, prepare and analyze stages).
Last line: orchestration_fraction=<x> = ((b) + (c)) / wall time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import bounded


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path("."))
    ap.add_argument("--no-run", action="store_true", help="analyse the runs already recorded")
    ap.add_argument("--wall", type=float, help="wall seconds of the repro (with --no-run)")
    ap.add_argument("--limit", type=float, default=6 * 3600, help="seconds `dvc repro` may run before it is stopped")
    args = ap.parse_args(argv)

    from stilts import config, tracking

    params = config.load(args.root / "params.yaml")
    started = time.time()
    wall = args.wall
    if not args.no_run:
        t = time.perf_counter()
        bounded.run(["stilts", "pipeline"], limit=600, cwd=args.root, check=True)
        bounded.run(["dvc", "repro"], limit=args.limit, cwd=args.root, check=True)
        wall = time.perf_counter() - t
    runs = tracking.search_runs(params)
    runs = runs[runs["status"] == "FINISHED"]
    if not args.no_run:
        import pandas as pd

        runs = runs[runs["start_time"] >= pd.Timestamp(started - 1, unit="s", tz="UTC")]
    cells = runs[runs["tags.stilts.role"].isin(["sweep", "intermediate", "target", "probe"])]
    cells = cells[cells["metrics.train_seconds"].notna()]  # not the sweep parents (their children are counted)
    run_wall = ((cells["end_time"] - cells["start_time"]).dt.total_seconds()).sum()
    final_eval = cells["metrics.final_eval_seconds"].fillna(0).sum() if "metrics.final_eval_seconds" in cells else 0.0
    loops = cells["metrics.train_seconds"].sum() + final_eval
    analysis = runs[runs["tags.stilts.role"] == "analysis"]
    if wall is None:
        wall = (runs["end_time"].max() - runs["start_time"].min()).total_seconds()
    roles = ", ".join(f"{k} {v}" for k, v in cells["tags.stilts.role"].value_counts().items())
    print(f"runs: {len(cells)} training runs ({roles}), {len(analysis)} analysis")
    print(f"wall time                        {wall:8.1f} s")
    print(f"(a) training loops (incl. evals)  {loops:8.1f} s  {100 * loops / wall:5.1f}%")
    print(f"(b) in runs, outside the loop     {run_wall - loops:8.1f} s  {100 * (run_wall - loops) / wall:5.1f}%  "
          f"({(run_wall - loops) / max(len(cells), 1):.2f} s per run)")
    print(f"(c) outside runs (DVC, processes, prepare, analyze) {wall - run_wall:8.1f} s  "
          f"{100 * (wall - run_wall) / wall:5.1f}%")
    print(f"orchestration_fraction={(wall - loops) / wall:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
