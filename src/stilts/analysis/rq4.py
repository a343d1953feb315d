"""RQ4: does intermediate data size matter? Transfer against the number of intermediate examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stilts.config import parse_source


def size_table(cells: pd.DataFrame, full_sizes: dict[str, int]) -> pd.DataFrame:
    """Rows: (source_task, size); average delta over targets. Only tasks that have sized variants."""
    t = cells[cells["role"] == "target"]
    if t.empty:
        return pd.DataFrame(columns=["source_task", "size", "avg_target_delta", "targets"])
    parsed = t["source"].map(parse_source)
    t = t.assign(source_task=[p[0] for p in parsed], size=[p[1] for p in parsed])
    swept = set(t.loc[t["size"].notna(), "source_task"])
    t = t[t["source_task"].isin(swept)].copy()
    t["size"] = [s if s is not None and not pd.isna(s) else full_sizes.get(task, np.nan)
                 for s, task in zip(t["size"], t["source_task"])]
    out = t.groupby(["source_task", "size"]).agg(avg_target_delta=("delta", "mean"), targets=("task", "nunique"))
    return out.reset_index().sort_values(["source_task", "size"])


def plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for task, g in table.groupby("source_task"):
        ax.plot(g["size"], g["avg_target_delta"], marker="o", label=task)
    ax.axhline(0, color="grey", lw=0.8)
    if table.empty:
        ax.text(0.5, 0.5, "no data-size sweep in this study", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=8)
    ax.set_xlabel("intermediate training examples")
    ax.set_ylabel("avg. target Δ (points)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)  # into the report's staging folder, moved into place when all succeeded
    plt.close(fig)
