"""Heatmaps are sized to their matrix: labels never overlap or leave their cells, at 3×2 and at 11×25."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.text import Text

from stilts.analysis import plots
from stilts.tasks.paper import SUITE


def _boxes(fig, texts):
    renderer = fig.canvas.get_renderer()
    return [t.get_window_extent(renderer) for t in texts if t.get_text()]


def _overlapping(boxes) -> list:
    return [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]


def _matrices():
    rng = np.random.default_rng(0)
    small = pd.DataFrame([[18.04, 2.0], [-19.0, 10.3], [np.nan, np.nan]],
                         index=["syn_nli", "syn_sentiment", "syn_sentiment__n150"], columns=["syn_tense", "syn_bshift"])
    big = pd.DataFrame(rng.normal(0, 30, (11, 25)), index=SUITE["intermediate"], columns=SUITE["probe"])
    big.iloc[0, 0] = -100.0  # the widest value label
    return {"3x2": small, "11x25": big}


@pytest.mark.parametrize("name", ["3x2", "11x25"])
def test_labels_fit_and_do_not_overlap(name):
    m = _matrices()[name]
    fig = plots.figure(m, "Probing: Δ vs. baseline (points), a long title that must wrap rather than be cut off",
                       marks=m.abs() > 15)
    ax = fig.axes[0]
    fig.canvas.draw()
    yticks = _boxes(fig, ax.get_yticklabels())
    assert not _overlapping(yticks)
    # column labels run at 45°: parallel strips, apart when the cell pitch across them exceeds a line's height
    line = max(b.height for b in yticks)
    pitch = ax.transData.transform([[1, 0]])[0][0] - ax.transData.transform([[0, 0]])[0][0]
    assert pitch * np.sin(np.pi / 4) > line
    # every value label lies inside its own cell
    renderer = fig.canvas.get_renderer()
    for t in ax.texts:
        x, y = t.get_position()
        cell = ax.transData.transform([[x - 0.5, y + 0.5], [x + 0.5, y - 0.5]])
        box = t.get_window_extent(renderer)
        assert cell[0][0] <= box.x0 and box.x1 <= cell[1][0], t.get_text()
        assert cell[0][1] <= box.y0 and box.y1 <= cell[1][1], t.get_text()
    # no empty row: the data-size source without probing cells is left out
    assert [t.get_text() for t in ax.get_yticklabels()] == [str(i) for i in m.dropna(how="all").index]
    # the title fits the figure's width (wrapped, not cut)
    (title,) = [t for t in fig.findobj(Text) if t.get_text().startswith("Probing")]
    assert title.get_window_extent(renderer).x1 <= fig.bbox.x1
    assert ("\n" in title.get_text()) == (name == "3x2")  # wrapped where the plot is narrower than the title


def test_figure_size_follows_the_matrix(tmp_path):
    from PIL import Image

    sizes = {}
    for name, m in _matrices().items():
        plots.heatmap(m, tmp_path / f"{name}.png", "Probing: Δ vs. baseline (points)")
        sizes[name] = Image.open(tmp_path / f"{name}.png").size
    (w_small, h_small), (w_big, h_big) = sizes["3x2"], sizes["11x25"]
    assert w_big > 5 * w_small and h_big > 2 * h_small
    assert w_small < 600 and h_small < 350  # a small matrix is a small picture, not a big empty one
