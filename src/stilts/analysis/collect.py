"""One MLflow query → a tidy table: one row per cell (the latest FINISHED run of each)."""

from __future__ import annotations

import pandas as pd

from stilts import tracking

COLUMNS = ["run_id", "source", "task", "role", "restart", "metric", "score", "majority_score",
           "pred_classes", "imported", "start_time", "encoder"]


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
        "encoder": col("params.model.name")})
    for c in runs.columns:  # keep every minor metric, and the settings (parsed from MLflow's strings)
        if c.startswith("metrics.final_dev_") and c not in ("metrics.final_dev_score",):
            df[c.removeprefix("metrics.final_")] = _num(runs[c])
        elif c.startswith("params.train."):
            df[c.removeprefix("params.")] = _parse(runs[c])
    df = df[df["role"].isin(["target", "probe"]) & df["score"].notna()]
    df["restart"] = df["restart"].astype(int)
    # a cell rerun (new settings, a resumed study) supersedes its older runs
    df = df.sort_values("start_time").drop_duplicates(["source", "task", "restart"], keep="last")
    return df.sort_values(["role", "task", "source", "restart"]).reset_index(drop=True)
