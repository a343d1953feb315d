"""From the prior (selection.prior, selection.harm) to the prior of `stilts select`'s belief: the one place
that reads the prior, so another prior (other grids, other weights) changes nothing else.

It uses the prior's public functions: `prior.pooled_candidates` (`stilts rank`'s scores: each grid's source
effects pooled with weights for the user's model, plus the other grids' measurements of the target itself,
and their covariance), `prior.fit` (the stacked source-effects model without the target: σ²) and
`harm.target_effect` (the target effect from the target's facts, and its variance). The normalised gain of
candidate c on the target is z_c = a_c + b_t + e_c, so

    μ_z = â + b̂_t,   Σ_z = Cov(â) + Var(b̂_t) 11ᵀ + σ² I,

with â shifted to the stacked fit's level, which b̂_t is against (`level`).

whose marginals are the ranking's own: P(z_c > 0) is `ranking.csv`'s p_beats_baseline. Without a target-
effect model (no prior grid with baseline runs) b_t gets the vague variance NO_EFFECT_VAR: the candidates'
differences are known, their level against the baseline is not.

The scale support (belief.Scale): every other target of the prior grids gives a pair (s, ρ), its spread
across sources in its metric and its restart noise over that spread. The pairs are binned on a product grid
of quantiles (SPREAD_BINS × NOISE_BINS; each bin's point is the median of its pairs, its weight their share,
plus half a pair so that no bin is ruled out); with fewer pairs than bins, each pair is a point of its own.
Grids without restarts give no noise: ρ then ranges over DEFAULT_NOISE_RATIOS, equally weighted.
"""

from __future__ import annotations

import numpy as np

from stilts.selection import grids as grids_
from stilts.selection.belief import Prior, Scale

NO_EFFECT_VAR = 25.0  # (5 spreads)²: the level of gains over the baseline, where nothing predicts it
SPREAD_BINS = 6
NOISE_BINS = 4
DEFAULT_NOISE_RATIOS = (0.5, 1.0, 2.0)
DEFAULT_SPREAD = 0.03  # a target's spread when no prior grid target has one


def grids(params, experiment: str) -> list[grids_.Grid]:
    """The grids the prior learns from, as `stilts rank` reads them (rank.prior_experiments, else the catalogue's
    grids that are here and the study's own experiment)."""
    import copy
    import dataclasses

    from stilts.selection import rank

    as_prior = copy.copy(params)
    as_prior.rank = dataclasses.replace(params.rank, methods=["prior"])
    return rank.load_grids(as_prior, experiment, rank.experiment_runs(params, experiment))


def grid_baseline(grid_list: list[grids_.Grid], target: str) -> float | None:
    """The target's first baseline run in a prior grid that measured it (the harm model's headroom)."""
    return grids_.target_baseline(grid_list, target)


def train_size(params, target: str) -> int | None:
    from stilts.selection import guidance

    return guidance.train_sizes(params, [target]).get(target)


def build(grid_list: list[grids_.Grid], target: str, candidates: list[str], embeddings: dict | None = None,
          baseline: float | None = None, train_size: int | None = None, *, model: str | None = None,
          scored: str | None = None, pool=None) -> Prior | None:
    """The prior of the target's candidates, `stilts rank`'s (prior.pooled_candidates): the grids' source effects
    pooled with weights for the user's `model`, plus what other grids measured on the target itself; the pairs
    of the target in the grid `scored` (the selection's own experiment: its runs come in as runs) are never
    used, with `scored` None no grid's are. `pool`: pooling.prepare(grid_list, model), when already made. None
    when the grids hold nothing but the target."""
    from stilts.selection import harm, pooling, prior

    eff = prior.fit(grid_list, {target})  # the stacked fit without the target: σ², the level b̂_t is against
    if eff is None:
        return None
    pool = pool or pooling.prepare(grid_list, model)
    _, mean, cov = prior.pooled_candidates(pool, target, candidates, embeddings, scored)
    mean = mean + level(eff, mean, candidates)
    effect = harm.target_effect(eff, grid_list, target, baseline, train_size)
    b_mean, b_var = effect if effect is not None else (0.0, NO_EFFECT_VAR)
    k = len(candidates)
    cov_z = cov + eff.sigma2 * np.eye(k) + b_var * np.ones((k, k))
    return Prior(list(candidates), mean + b_mean, cov_z, scale(grid_list, target), effect is not None)


def level(eff, pooled: np.ndarray, candidates: list[str]) -> float:
    """The shift that puts pooled source effects on the level of the stacked fit `eff`, which the target effect
    b̂_t is against: each fit's effects sum to zero over its own sources, so pooled ones (per grid, averaged)
    and stacked ones differ by a constant. The mean over the candidates in `eff` of (stacked − pooled); 0 for
    one grid, where the two are the same fit."""
    known = [i for i, c in enumerate(candidates) if c in eff.a.index]
    if not known:
        return 0.0
    return float(np.mean(eff.a.reindex([candidates[i] for i in known]).to_numpy(float) - pooled[known]))


def scale_pairs(grid_list: list[grids_.Grid], target: str) -> tuple[np.ndarray, np.ndarray]:
    """(spread, noise ratio) of every other target of the grids (noise ratio NaN where it has no restarts)."""
    spreads, ratios = [], []
    for g in grid_list:
        for t in g.targets:
            if t == target:
                continue
            scores = g.means.loc[t].dropna()
            gains = scores - (g.baseline[t] if t in g.baseline.index else scores.mean())
            s = grids_.spread(gains)
            if s <= 0:
                continue
            spreads.append(s)
            ratios.append(float(np.sqrt(g.noise[t])) / s if t in g.noise.index else np.nan)
    return np.array(spreads), np.array(ratios)


def _bins(values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(bin index of each value, each bin's median) for n equal-count bins of log values."""
    logs = np.log(values)
    edges = np.quantile(logs, np.linspace(0, 1, n + 1)[1:-1])
    index = np.searchsorted(edges, logs, side="right")
    points = np.array([np.median(logs[index == i]) if (index == i).any() else np.nan for i in range(n)])
    return index, np.exp(points)


def scale(grid_list: list[grids_.Grid], target: str) -> Scale:
    spreads, ratios = scale_pairs(grid_list, target)
    if not len(spreads):
        spreads, ratios = np.array([DEFAULT_SPREAD]), np.array([np.nan])
    with_noise = ~np.isnan(ratios)
    if not with_noise.any():
        s_idx, s_pts = _bins(spreads, min(SPREAD_BINS, len(spreads)))
        s_w = np.bincount(s_idx, minlength=len(s_pts)) + 0.5
        grid_s, grid_r = np.meshgrid(s_pts, DEFAULT_NOISE_RATIOS, indexing="ij")
        weight = np.repeat(s_w, len(DEFAULT_NOISE_RATIOS))
        keep = ~np.isnan(grid_s.ravel())
        return _normalised(grid_s.ravel()[keep], grid_r.ravel()[keep], weight[keep])
    spreads, ratios = spreads[with_noise], ratios[with_noise]
    if len(spreads) < SPREAD_BINS * NOISE_BINS:
        return _normalised(spreads, ratios, np.ones(len(spreads)))
    s_idx, s_pts = _bins(spreads, SPREAD_BINS)
    r_idx, r_pts = _bins(ratios, NOISE_BINS)
    counts = np.zeros((SPREAD_BINS, NOISE_BINS))
    np.add.at(counts, (s_idx, r_idx), 1.0)
    grid_s, grid_r = np.meshgrid(s_pts, r_pts, indexing="ij")
    return _normalised(grid_s.ravel(), grid_r.ravel(), counts.ravel() + 0.5)


def _normalised(spread: np.ndarray, ratio: np.ndarray, weight: np.ndarray) -> Scale:
    return Scale(np.asarray(spread, float), np.asarray(ratio, float), np.asarray(weight, float) / weight.sum())
