"""The additive model of transfer gains behind the prior: z = a_s + b_(g,t) + e on the normalised gains of one
grid or of several stacked (each target its own b, the intermediate tasks sharing a by name), with a ridge
penalty λ Σ a_s² (λ = 1). Least squares by the normal equations; σ² = residual sum of squares / (observations −
effective parameters). prior.py ranks with it (per grid, pooled by pooling.py; stacked for the harm model)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from stilts.selection import grids as grids_
from stilts.selection import ridge

LAMBDA = 1.0


@dataclass
class Effects:
    a: pd.Series  # source → effect
    a_cov: pd.DataFrame  # covariance of the source effects
    b: pd.Series  # "grid/target" → target effect
    anchored: pd.Series  # "grid/target" → whether its gains are against a baseline
    sigma2: float  # residual variance
    prior_var: float  # variance of the effect of a source measured nowhere (σ²/λ)
    targets: list[tuple[str, str]]  # (grid, target) of each column of b


def _observations(grid_list: list[grids_.Grid], leave_out: set[str]):
    """(target column, source, gain) of every normalised gain as arrays; the (grid, target) of each
    column and whether its gains are against a baseline."""
    cols, anchored, ti, src, val = [], [], [], [], []
    for g in grid_list:
        z, anch = grids_.normalised(g, leave_out)
        values = z.to_numpy(float)
        for r, target in enumerate(z.index):
            measured = np.flatnonzero(~np.isnan(values[r]))
            if not len(measured):
                continue
            ti += [len(cols)] * len(measured)
            src += [z.columns[c] for c in measured]
            val.append(values[r, measured])
            cols.append((g.name, target))
            anchored.append(bool(anch.iloc[r]))
    return np.array(ti, dtype=int), src, np.concatenate(val) if val else np.array([]), cols, anchored


def fit(grid_list: list[grids_.Grid], leave_out: set[str] = frozenset(), lam: float = LAMBDA) -> Effects | None:
    """z = a_s + b_t + e on every normalised gain of the grids except the targets in `leave_out`
    (None when nothing is left)."""
    ti, src, y, cols, anchored = _observations(grid_list, leave_out)
    if not len(y):
        return None
    sources = sorted(set(src))
    si = {s: i for i, s in enumerate(sources)}
    n_s, n_t = len(sources), len(cols)
    x = np.zeros((len(y), n_s + n_t))
    x[np.arange(len(y)), [si[s] for s in src]] = 1.0
    x[np.arange(len(y)), n_s + ti] = 1.0
    coef, inv, sigma2 = ridge.fit(x, y, np.r_[np.full(n_s, lam), np.zeros(n_t)])
    sigma2 = max(sigma2 if sigma2 is not None else float(np.var(y)) or 1.0, 1e-6)
    names = [f"{g}/{t}" for g, t in cols]
    return Effects(a=pd.Series(coef[:n_s], sources), a_cov=pd.DataFrame(sigma2 * inv[:n_s, :n_s], sources, sources),
                   b=pd.Series(coef[n_s:], names), anchored=pd.Series(anchored, names, dtype=bool), sigma2=sigma2,
                   prior_var=sigma2 / lam if lam > 0 else math.inf, targets=cols)
