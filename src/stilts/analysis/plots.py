"""Heatmaps with the cell values written in (PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def heatmap(m: pd.DataFrame, path: Path, title: str, marks: pd.DataFrame | None = None, fmt: str = "{:+.1f}",
            limit: float | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = m.to_numpy(dtype=float) if not m.empty else np.zeros((1, 1))
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * max(1, m.shape[1]), 1.2 + 0.5 * max(1, m.shape[0])))
    lim = limit or (np.nanmax(np.abs(values)) if np.isfinite(values).any() else 1.0)
    im = ax.imshow(values, cmap="RdBu", vmin=-lim or -1, vmax=lim or 1, aspect="auto")
    ax.set_xticks(range(m.shape[1]), list(m.columns), rotation=45, ha="right")
    ax.set_yticks(range(m.shape[0]), list(m.index))
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            v = values[i, j]
            if np.isfinite(v):
                star = "*" if marks is not None and bool(marks.iloc[i, j]) else ""
                ax.text(j, i, fmt.format(v) + star, ha="center", va="center", fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)  # into the report's staging folder, moved into place when all succeeded
    plt.close(fig)
