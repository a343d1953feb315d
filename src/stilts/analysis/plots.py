"""Heatmaps with the cell values written in (PNG), sized to their matrix.

Each cell gets a fixed size in inches, wide enough for its value at a readable font size, so a 3×2
matrix and the paper's 11×25 probing matrix both have legible labels; margins follow the longest
row and column labels, and the title wraps to the plot's width. Rows and columns without any value
(a data-size source is never probed) are left out.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

FONT = 8  # points: cell values and tick labels
CHAR_IN = FONT * 0.62 / 72  # the width of an average character at FONT, in inches
CELL_H = 0.34  # inches


def _without_empty(m: pd.DataFrame, marks: pd.DataFrame | None):
    values = m.apply(pd.to_numeric, errors="coerce")
    keep_rows = values.notna().any(axis=1)
    keep_cols = values.notna().any(axis=0)
    m = m.loc[keep_rows, keep_cols]
    if marks is not None:
        marks = marks.reindex(index=m.index, columns=m.columns).fillna(False)
    return m, marks


def figure(m: pd.DataFrame, title: str, marks: pd.DataFrame | None = None, fmt: str = "{:+.1f}",
           limit: float | None = None):
    """The heatmap as a matplotlib figure (not saved)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m, marks = _without_empty(m, marks)
    values = m.to_numpy(dtype=float) if not m.empty else np.full((1, 1), np.nan)
    rows, cols = values.shape
    labels = [[fmt.format(v) + ("*" if marks is not None and bool(marks.iloc[i, j]) else "")
               if np.isfinite(v) else "" for j, v in enumerate(row)] for i, row in enumerate(values)]
    longest_value = max([len(s) for row in labels for s in row] + [4])
    cell_w = max(0.42, (longest_value + 1.5) * CHAR_IN)
    row_label = max([len(str(x)) for x in m.index] + [4]) * CHAR_IN
    col_label = max([len(str(x)) for x in m.columns] + [4]) * CHAR_IN * 0.72  # rotated 45°
    colorbar = 0.9
    width = row_label + 0.3 + cols * cell_w + colorbar
    height = col_label + 0.4 + rows * CELL_H + 0.55
    fig = plt.figure(figsize=(width, height))
    # the axes get exactly rows × cols cells of the size above; the rest is margin for the labels
    left, bottom = (row_label + 0.25) / width, (col_label + 0.3) / height
    ax = fig.add_axes((left, bottom, cols * cell_w / width, rows * CELL_H / height))
    cax = fig.add_axes((left + (cols * cell_w + 0.15) / width, bottom, 0.12 / width, rows * CELL_H / height))
    lim = limit or (np.nanmax(np.abs(values)) if np.isfinite(values).any() else 1.0)
    im = ax.imshow(values, cmap="RdBu", vmin=-lim or -1, vmax=lim or 1, aspect="auto")
    ax.set_xticks(range(cols), [str(c) for c in m.columns] if cols and not m.empty else [""],
                  rotation=45, ha="right", rotation_mode="anchor", fontsize=FONT)
    ax.set_yticks(range(rows), [str(r) for r in m.index] if not m.empty else [""], fontsize=FONT)
    for i in range(rows):
        for j in range(cols):
            if labels[i][j]:
                dark = abs(values[i, j]) > 0.6 * (lim or 1)
                ax.text(j, i, labels[i][j], ha="center", va="center", fontsize=FONT,
                        color="white" if dark else "black")
    ax.set_title("\n".join(textwrap.wrap(title, max(20, int((width - 0.3) / (CHAR_IN * 1.25))))),
                 fontsize=FONT + 2, loc="left", x=-left * width / (cols * cell_w))
    fig.colorbar(im, cax=cax).ax.tick_params(labelsize=FONT)
    return fig


def heatmap(m: pd.DataFrame, path: Path, title: str, marks: pd.DataFrame | None = None, fmt: str = "{:+.1f}",
            limit: float | None = None) -> None:
    import matplotlib.pyplot as plt

    fig = figure(m, title, marks, fmt, limit)
    # into the report's staging folder, moved into place when all succeeded; `tight` keeps every label in
    fig.savefig(path, dpi=120, bbox_inches="tight", pad_inches=0.08)
    plt.close(fig)
