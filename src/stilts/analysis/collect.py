"""One MLflow query → a tidy table: one row per cell, its current run.

A cell's current run is the one its result file (results/<source>/<task>/r<k>.json, the study's own
experiment) names; where no result file names a FINISHED run, the runs a later run of the cell has not
superseded (no `stilts.superseded_by` tag), the latest of them. Superseded runs stay FINISHED: they did.
"""

from __future__ import annotations

import pandas as pd

from stilts import tracking
from stilts.io import read_json

SUPERSEDED = "tags.stilts.superseded_by"
COLUMNS = ["run_id", "source", "task", "role", "restart", "metric", "score", "majority_score",
           "pred_classes", "imported", "start_time"]


def _num(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series, errors="coerce")


def _parse(series: pd.Series) -> pd.Series:
    """MLflow returns params as strings: numbers and booleans back to their types, the rest unchanged."""
    numbers = pd.to_numeric(series, errors="coerce")
    if numbers.notna().sum() == series.notna().sum():
        return numbers
    if series.dropna().isin(["True", "False"]).all():
        return series.map({"True": True, "False": False})
    return series


def result_runs(params, experiment: str | None = None) -> dict[tuple[str, str, int], str]:
    """(source, task, restart) → the run that cell's result file names; only for the study's own experiment."""
    if experiment not in (None, params.mlflow.experiment):
        return {}
    named = {}
    for path in params.path("results").glob("*/*/r*.json"):
        if path.stem[1:].isdigit() and (run_id := read_json(path).get("mlflow_run_id")):
            named[(path.parent.parent.name, path.parent.name, int(path.stem[1:]))] = run_id
    return named


def current(runs: pd.DataFrame, named: dict | None = None) -> pd.Series:
    """Which of `runs` (rows with run_id, source, task, restart; `tags.stilts.superseded_by` when any has it)
    are their cell's current run: the one `named` for the cell, else those not superseded."""
    cells = list(zip(runs["source"], runs["task"], runs["restart"]))
    present = set(runs["run_id"])
    named = {cell: run for cell, run in (named or {}).items() if run in present}
    superseded = runs[SUPERSEDED].notna() if SUPERSEDED in runs else pd.Series(False, index=runs.index)
    return pd.Series([named[c] == r if c in named else not s for c, r, s in zip(cells, runs["run_id"], superseded)],
                     index=runs.index, dtype=bool)


def collect(params, experiment: str | None = None) -> pd.DataFrame:
    runs = tracking.search_runs(params, experiment, "attributes.status = 'FINISHED'")
    if runs.empty:
        return pd.DataFrame(columns=COLUMNS)
    col = lambda name: runs[name] if name in runs else pd.Series([None] * len(runs), index=runs.index)  # noqa: E731
    df = pd.DataFrame({
        "run_id": runs["run_id"], "source": col("tags.stilts.source"), "task": col("tags.stilts.task"),
        "role": col("tags.stilts.role"), "restart": _num(col("tags.stilts.restart")),
        "metric": col("tags.stilts.metric"), "score": _num(col("metrics.final_dev_score")),
        "majority_score": _num(col("metrics.majority_score")),
        "pred_classes": _num(col("metrics.final_dev_pred_classes")),
        "imported": col("tags.stilts.imported").fillna("false").eq("true"), "start_time": runs["start_time"],
        SUPERSEDED: col(SUPERSEDED)})
    for c in runs.columns:  # keep every minor metric, and the settings (parsed from MLflow's strings)
        if c.startswith("metrics.final_dev_") and c not in ("metrics.final_dev_score",):
            df[c.removeprefix("metrics.final_")] = _num(runs[c])
        elif c.startswith("params.train."):
            df[c.removeprefix("params.")] = _parse(runs[c])
    df = df[df["role"].isin(["target", "probe"]) & df["score"].notna()]
    df["restart"] = df["restart"].astype(int)
    df = df[current(df, result_runs(params, experiment))].drop(columns=SUPERSEDED)
    df = df.sort_values("start_time").drop_duplicates(["source", "task", "restart"], keep="last")
    return df.sort_values(["role", "task", "source", "restart"]).reset_index(drop=True)
