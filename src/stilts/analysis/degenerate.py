"""Degenerate (collapsed) runs: at or below the majority-class/chance score plus a margin, or one class only."""

from __future__ import annotations

import pandas as pd


def flag(df: pd.DataFrame, margin: float) -> pd.DataFrame:
    out = df.copy()
    below = out["score"] <= out["majority_score"] + margin
    one_class = out["pred_classes"] == 1
    out["degenerate"] = (below.fillna(False) | one_class.fillna(False)).astype(bool)
    out["degenerate_reason"] = [
        "one class predicted" if oc else ("≤ majority + margin" if b else "")
        for b, oc in zip(below.fillna(False), one_class.fillna(False))]
    return out


def rates(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Degenerate rate per source and per task."""
    by = lambda k: df.groupby(k)["degenerate"].agg(runs="size", degenerate="sum", rate="mean")  # noqa: E731
    return by("source"), by("task")
