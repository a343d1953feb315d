"""RQ1/RQ2: transfer of each intermediate task to each target and probe, against the baseline.

delta = mean over restarts (source) − mean over restarts (baseline), in points (×100).
The interval and the flag come from Welch's t-test across restarts (scipy.stats.ttest_ind).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

BASELINE = "none"


def cell_stats(df: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """One row per (source, task): n, mean, std, delta, CI of the delta, p, significant."""
    rows = []
    base = {t: g["score"].to_numpy(float) for t, g in df[df["source"] == BASELINE].groupby("task")}
    for (source, task), g in df[df["source"] != BASELINE].groupby(["source", "task"]):
        s = g["score"].to_numpy(float)
        b = base.get(task, np.array([]))
        row = {"source": source, "task": task, "role": g["role"].iloc[0], "n": len(s), "n_baseline": len(b),
               "mean": s.mean() * 100, "std": s.std(ddof=1) * 100 if len(s) > 1 else np.nan,
               "baseline_mean": b.mean() * 100 if len(b) else np.nan}
        row["delta"] = row["mean"] - row["baseline_mean"]
        row["ci_low"] = row["ci_high"] = row["p"] = np.nan
        if len(s) > 1 and len(b) > 1 and (s.std() > 0 or b.std() > 0):
            with warnings.catch_warnings():  # restarts with the same score: scipy warns, the test is still right
                warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
                test = stats.ttest_ind(s, b, equal_var=False)
            ci = test.confidence_interval(1 - alpha)
            row.update(p=float(test.pvalue), ci_low=float(ci.low) * 100, ci_high=float(ci.high) * 100)
        row["significant"] = bool(row["p"] < alpha) if not np.isnan(row["p"]) else False
        rows.append(row)
    cols = ["source", "task", "role", "n", "n_baseline", "mean", "std", "baseline_mean", "delta", "ci_low",
            "ci_high", "p", "significant"]
    return pd.DataFrame(rows, columns=cols)


def matrix(cells: pd.DataFrame, targets: list[str], probes: list[str]) -> pd.DataFrame:
    """Rows: source; columns: targets then probes, plus avg_target; values: mean delta in points."""
    if cells.empty:
        return pd.DataFrame(columns=[*targets, *probes, "avg_target"]).rename_axis("source")
    m = cells.pivot(index="source", columns="task", values="delta")
    m = m.reindex(columns=[c for c in [*targets, *probes] if c in m.columns])
    present = [t for t in targets if t in m.columns]
    m["avg_target"] = m[present].mean(axis=1) if present else np.nan
    return m.rename_axis("source")


def per_source(cells: pd.DataFrame) -> pd.DataFrame:
    """Average delta over targets, and wins/losses (significant or not) per intermediate task."""
    t = cells[cells["role"] == "target"]
    if t.empty:
        return pd.DataFrame(columns=["avg_delta", "wins", "losses", "significant_wins", "significant_losses"])
    g = t.groupby("source")
    return pd.DataFrame({
        "avg_delta": g["delta"].mean(), "wins": g["delta"].apply(lambda d: int((d > 0).sum())),
        "losses": g["delta"].apply(lambda d: int((d < 0).sum())),
        "significant_wins": g.apply(lambda x: int(((x["delta"] > 0) & x["significant"]).sum()), include_groups=False),
        "significant_losses": g.apply(lambda x: int(((x["delta"] < 0) & x["significant"]).sum()),
                                      include_groups=False)}).sort_values("avg_delta", ascending=False)
