"""What `chaos.py` checks once the killed study has ended: the same results and report tables as the
uninterrupted one, one current FINISHED run per cell, no RUNNING run, `dvc status` clean, no temporaries."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import bounded

BIN = Path(sys.executable).parent
# what differs between two runs of the same cell by nature: timings, run ids, and the fingerprint of a cell
# that starts from a checkpoint (it hashes the checkpoint's stilts.json, which names the run that made it)
VOLATILE = ("seconds", "per_second", "mlflow_run_id", "run_id", "start_time", "end_time", "duration",
            "fingerprint")
CELL_ROLES = ("intermediate", "target", "probe")


def _stable(value):
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if not any(w in k for w in VOLATILE)}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _results(root: Path) -> dict:
    return {str(p.relative_to(root)): _stable(json.loads(p.read_text()))
            for p in sorted((root / "results").rglob("*.json"))}


def _tables(root: Path) -> dict:
    out = {}
    for p in sorted((root / "reports").glob("*.csv")):
        with open(p, newline="") as f:
            out[p.name] = [_stable(row) for row in csv.DictReader(f)]
    if (root / "reports" / "summary.json").is_file():
        out["summary.json"] = _stable(json.loads((root / "reports" / "summary.json").read_text()))
    return out


def _differences(name: str, ref: dict, got: dict) -> list[str]:
    problems = [f"{name}: {k} missing" for k in ref if k not in got]
    problems += [f"{name}: {k} not in the reference" for k in got if k not in ref]
    problems += [f"{name}: {k} differs: " + ", ".join(f for f in ref[k] if ref[k].get(f) != got[k].get(f))
                 if isinstance(ref[k], dict) and isinstance(got[k], dict) else f"{name}: {k} differs"
                 for k in ref if k in got and ref[k] != got[k]]
    return problems


def _runs(root: Path, env: dict) -> list[str]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from stilts import config, tracking

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    runs = tracking.search_runs(config.load(root / "params.yaml"))
    problems = [f"MLflow: run {r} is RUNNING" for r in runs.loc[runs["status"] == "RUNNING", "run_id"]]
    cells = runs[runs["tags.stilts.role"].isin(CELL_ROLES)]
    superseded = cells.get("tags.stilts.superseded_by")
    current = cells[(cells["status"] == "FINISHED") & (superseded.isna() if superseded is not None else True)]
    for cell, n in current.groupby("tags.stilts.cell").size().items():
        if n != 1:
            problems.append(f"MLflow: cell {cell} has {n} current FINISHED runs")
    for cell in set(cells["tags.stilts.cell"]) - set(current["tags.stilts.cell"]):
        problems.append(f"MLflow: cell {cell} has no current FINISHED run")
    return problems


def _temporaries(root: Path) -> list[str]:
    left = [p for p in root.rglob("*") if ".git" not in p.parts and ".dvc" not in p.parts and
            (p.name.endswith(".tmp") or ".old-" in p.name)]
    state = root / ".stilts" / "state"
    left += [p for p in state.iterdir()] if state.is_dir() else []
    return [f"left behind: {p.relative_to(root)}" for p in left]


def compare(ref: Path, root: Path, env: dict) -> list[str]:
    problems = _differences("results", _results(ref), _results(root))
    problems += _differences("reports", _tables(ref), _tables(root))
    problems += _runs(root, env)
    status = bounded.run([BIN / "dvc", "status", "--quiet"], limit=300, cwd=root, env=env, capture_output=True,
                         text=True)
    if status.returncode:
        problems.append(f"dvc status not clean: {status.stdout.strip()[:500]}")
    return problems + _temporaries(root)
