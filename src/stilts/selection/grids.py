"""Measured transfer grids (MLflow experiments: studies or imported results), as the prior reads them.

A grid is the mean score over restarts of every (target, source) cell of target-role runs (probes
are left out), the baseline mean per target (runs with source `none`, where the grid has them), and
the score of each target's first baseline run (the lowest restart), a fact that one cheap run gives, and each
target's restart noise (the variance of a run around its cell's mean).

Normalised gains put every target of every grid on one scale: gain = score − baseline mean (without
a baseline: score − the target's mean over its sources), divided by the target's spread over its
sources, 1.4826 × the median absolute deviation of its gains (the standard deviation where that is
0). A target with fewer than 2 sources, or with the same score after every source, carries no
information about sources and is left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from stilts.errors import StiltsError

BASELINE = "none"


@dataclass
class Grid:
    name: str
    means: pd.DataFrame  # target × source: mean score over restarts
    baseline: pd.Series  # target → baseline mean (targets without a baseline are absent)
    first_baseline: pd.Series  # target → score of its lowest-restart baseline run
    encoder: str | None = None  # the pretrained model it was measured with (None: not recorded)
    method: str | None = None  # how it adapted the encoder (None: full fine-tuning, as stilts trains)
    published: bool = False  # from the catalogue (published.py); False: a user's study or imported results
    noise: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))  # target → restart variance
    _normalised: tuple | None = field(default=None, repr=False)  # normalised(), computed once

    @property
    def targets(self) -> list[str]:
        return list(self.means.index)

    @property
    def sources(self) -> list[str]:
        return list(self.means.columns)

    def measured(self, target: str) -> dict[str, float]:
        """source → mean score of the target after it (cells that were measured)."""
        if target not in self.means.index:
            return {}
        row = self.means.loc[target]
        return {s: float(v) for s, v in row.items() if pd.notna(v)}


def from_runs(name: str, runs: pd.DataFrame, encoder: str | None = None, method: str | None = None,
              published: bool = False) -> Grid:
    """A grid from analysis.collect's table (one row per finished cell)."""
    t = runs[runs["role"] == "target"] if not runs.empty else runs
    transfer = t[t["source"] != BASELINE] if not t.empty else t
    if transfer.empty:
        raise StiltsError(f"rank: prior experiment '{name}' holds no transfer runs (finished target runs after an "
                          "intermediate task); import a grid with `stilts import-results` or run a study into it")
    means = transfer.groupby(["task", "source"])["score"].mean().unstack()
    baseline = t[t["source"] == BASELINE].groupby("task")["score"].mean()
    if encoder is None and "encoder" in runs and runs["encoder"].notna().any():
        encoder = str(runs["encoder"].dropna().mode().iloc[0])
    return Grid(name, means.sort_index().sort_index(axis=1), baseline, first_baselines(runs), encoder, method,
                published, restart_noise(t))


def restart_noise(runs: pd.DataFrame) -> pd.Series:
    """target → the variance of a run's score around its cell's mean, pooled over the target's cells that
    have two or more restarts (the baseline's too); targets without such a cell are absent."""
    if runs.empty:
        return pd.Series(dtype=float)
    cells = runs.groupby(["task", "source"])["score"]
    dev = (runs["score"] - cells.transform("mean")) ** 2
    stats = pd.DataFrame({"task": runs["task"], "ss": dev, "dof": 1.0}).groupby("task").sum()
    stats["dof"] -= runs.groupby("task")["source"].nunique().reindex(stats.index)
    stats = stats[stats["dof"] > 0]
    return (stats["ss"] / stats["dof"]).sort_index()


def first_baselines(runs: pd.DataFrame) -> pd.Series:
    """target → the score of its lowest-restart baseline run."""
    if runs.empty:
        return pd.Series(dtype=float)
    base = runs[(runs["role"] == "target") & (runs["source"] == BASELINE)]
    return base.sort_values("restart").groupby("task")["score"].first()


def load(params, experiment: str, runs: pd.DataFrame | None = None) -> Grid:
    """The grid of an MLflow experiment (`runs`: its collect() table, when already read); the catalogue's grid
    of that name (shipped or fetched) when no experiment by it holds target runs."""
    from stilts import tracking
    from stilts.analysis.collect import collect
    from stilts.selection import published

    exists = runs is not None or tracking.experiment_exists(params, experiment)
    if exists and runs is None:
        runs = collect(params, experiment)
    if experiment in published.names() and (not exists or not (runs["role"] == "target").any()):
        entry = published.catalog()[experiment]
        return from_runs(experiment, published.runs(experiment), entry.encoder, entry.method, published=True)
    if not exists:
        raise StiltsError(f"rank: prior experiment '{experiment}' does not exist in the MLflow store "
                          f"{tracking.tracking_uri(params)} and is not a grid of the catalogue (`stilts grids`); "
                          f"create it with `stilts import-results FILE --experiment {experiment}` or a study")
    grid = from_runs(experiment, runs)
    if grid.encoder is None and experiment in published.names():  # the catalogue's grid imported (no model logged)
        entry = published.catalog()[experiment]
        grid.encoder, grid.method, grid.published = entry.encoder, entry.method, True
    return grid


def spread(gains: pd.Series) -> float:
    """1.4826 × MAD of a target's gains over its sources; the standard deviation where the MAD is 0."""
    g = gains.dropna().to_numpy(float)
    if len(g) < 2:
        return 0.0
    mad = 1.4826 * float(np.median(np.abs(g - np.median(g))))
    return mad if mad > 0 else float(g.std(ddof=1))


def normalised(grid: Grid, leave_out: set[str] = frozenset()) -> tuple[pd.DataFrame, pd.Series]:
    """(target × source normalised gains, target → whether the gain is against a baseline), without the
    targets in `leave_out` and without targets that carry no information about sources."""
    if grid._normalised is None:
        rows, anchored = {}, {}
        for target in grid.means.index:
            scores = grid.means.loc[target].dropna()
            has_base = target in grid.baseline.index
            gains = scores - (grid.baseline[target] if has_base else scores.mean())
            s = spread(gains)
            if s > 0:
                rows[target], anchored[target] = gains / s, has_base
        z = pd.DataFrame(rows).T.reindex(columns=grid.means.columns) if rows else \
            pd.DataFrame(columns=grid.means.columns, dtype=float)
        grid._normalised = (z, pd.Series(anchored, dtype=bool))
    z, anchored = grid._normalised
    keep = [t for t in z.index if t not in leave_out]
    return z.loc[keep], anchored[keep]


def target_baseline(grids: list[Grid], target: str) -> float | None:
    """The target's first baseline run in the first grid that has one (None: no baseline run)."""
    for g in grids:
        if target in g.first_baseline.index:
            return float(g.first_baseline[target])
    return None
