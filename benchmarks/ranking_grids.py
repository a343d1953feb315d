"""`stilts rank --method prior/hybrid` on measured grids: within each grid, and a prior from one grid on another.

    python benchmarks/ranking_grids.py --grid paper-2020=../shared/grids/paper2020_roberta_large.csv \\
        --grid taskweb-roberta=/path/taskweb_roberta.csv [--project DIR] [--data ../shared/data] \
        [--hybrid-grid paper-2020]

Each --grid NAME=CSV is imported once into the project's MLflow store (`stilts import-results`; skipped
when the experiment exists). Within a grid: `stilts rank --method prior` over all of its targets and
sources, scored against the grid itself (every target left out of its own fit); for --hybrid-grid also
`--method prior,hybrid` twice (cold: data prepared and embedded from --data with configs/ranking-paper.yaml's
`data.files`; warm: cached), and semb, prior and hybrid on the targets and candidates whose data is there.
Across grids, for each ordered pair (A, B): the prior from A ranks B's targets, on the targets and
candidates both grids measured; `prior-within` (B's own prior, leave-one-target-out) is the reference.
Every `stilts rank` runs as a fresh process (imports included, no cell server) and is timed.
Prints markdown tables; the last line: prior_s=… hybrid_cold_s=… hybrid_warm_s=….
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import bounded
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
MEASURES = ["regret_at_1", "regret_at_3", "ndcg", "spearman", "auroc", "brier", "n_candidates"]


def stilts(project: Path, *args: str) -> float:
    env = {**os.environ, "STILTS_WORKER": "0", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    bounded.run([sys.executable, "-m", "stilts", "--params", project / "params.yaml", *args], limit=3600,
                cwd=project, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def grid_tasks(csv: Path) -> tuple[list[str], list[str]]:
    d = pd.read_csv(csv)
    d = d[d["role"] == "target"]
    return sorted(set(d["task"])), sorted(set(d["source"]) - {"none"})


def means(project: Path, experiment: str) -> pd.DataFrame:
    table = pd.read_csv(project / "reports" / experiment / "ranking_eval.csv")
    return table[table["target"] == "mean"].set_index("method")[MEASURES]


def fmt(table: pd.DataFrame) -> str:
    lines = ["| method | " + " | ".join(MEASURES) + " |", "|---" * (len(MEASURES) + 1) + "|"]
    for method, row in table.iterrows():
        lines.append(f"| {method} | " + " | ".join("" if pd.isna(v) else f"{v:.4f}" for v in row) + " |")
    return "\n".join(lines)


def setup(project: Path, data: Path) -> None:
    files = yaml.safe_load((ROOT / "benchmarks" / "shared_copies.yaml").read_text())
    params = {"data": {"raw_dir": str(data), "files": files}, "mlflow": {"experiment": "scratch"}}
    project.mkdir(parents=True, exist_ok=True)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def semb_subset(project: Path, name: str, targets: list[str], sources: list[str]) -> None:
    """semb on its own needs every task's data: the three methods on the tasks whose data is there."""
    from stilts import config
    from stilts.selection.signals import has_data

    params = config.load(project / "params.yaml")
    targets, sources = [t for t in targets if has_data(params, t)], [s for s in sources if has_data(params, s)]
    stilts(project, "rank", "--method", "semb,prior,hybrid", "--prior-experiment", name, "--experiment", name,
           "--targets", ",".join(targets), "--candidates", ",".join(sources))
    print(f"\n### within {name}, tasks with data only: {len(targets)} targets ({', '.join(targets)}) × "
          f"{len(sources)} candidates ({', '.join(sources)})\n\n{fmt(means(project, name))}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", action="append", required=True, metavar="NAME=CSV")
    ap.add_argument("--project", type=Path, help="scratch project, kept (default: a temporary folder, removed)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--hybrid-grid", default="paper-2020", help="the grid ranked with semb and hybrid too")
    args = ap.parse_args(argv)
    project = args.project or bounded.scratch("stilts-ranking-grids-")
    setup(project, args.data)
    grids = dict(g.split("=", 1) for g in args.grid)
    print(f"project {project}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    for name, csv in grids.items():
        if not (project / "mlflow.db").is_file() or client.get_experiment_by_name(name) is None:
            seconds = stilts(project, "import-results", str(Path(csv).resolve()), "--experiment", name)
            print(f"import {name}: {seconds:.1f} s")
    tasks = {name: grid_tasks(Path(csv)) for name, csv in grids.items()}
    timing = {}
    for name, (targets, sources) in tasks.items():
        common = ["--prior-experiment", name, "--experiment", name, "--targets", ",".join(targets),
                  "--candidates", ",".join(sources)]
        timing[f"{name} prior"] = stilts(project, "rank", "--method", "prior", *common)
        table = means(project, name)
        if name == args.hybrid_grid:
            timing[f"{name} hybrid cold"] = stilts(project, "rank", "--method", "prior,hybrid", *common)
            timing[f"{name} hybrid warm"] = stilts(project, "rank", "--method", "prior,hybrid", *common)
            table = means(project, name)
        print(f"\n### within {name}: {len(targets)} targets × {len(sources)} candidates\n\n{fmt(table)}")
        if name == args.hybrid_grid:
            semb_subset(project, name, targets, sources)
    for a in grids:
        for b in grids:
            if a == b:
                continue
            targets = sorted(set(tasks[a][0]) & set(tasks[b][0]))
            sources = sorted(set(tasks[a][1]) & set(tasks[b][1]))
            stilts(project, "rank", "--method", "prior", "--prior-experiment", a, "--experiment", b,
                   "--targets", ",".join(targets), "--candidates", ",".join(sources))
            print(f"\n### prior from {a} on {b}: {len(targets)} shared targets ({', '.join(targets)}) × "
                  f"{len(sources)} shared candidates ({', '.join(sources)})\n\n{fmt(means(project, b))}")
    print("\n" + "\n".join(f"{k}: {v:.1f} s" for k, v in timing.items()))
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    hybrid = [v for k, v in timing.items() if "hybrid" in k] or [float("nan")] * 2
    print(f"prior_s={timing[next(iter(timing))]:.1f} hybrid_cold_s={hybrid[0]:.1f} hybrid_warm_s={hybrid[-1]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
