"""The prior: a candidate's score for a target from the gains it showed on other targets of measured grids.

Model, per grid g (fit): the normalised gain (grids.normalised) of source s on target t is
z = a_s + b_(g,t) + e, e ~ N(0, σ²), with a ridge penalty λ Σ a_s² (λ = 1: one pseudo-observation of zero
gain per source, so a source measured on few targets is shrunk towards the average, and a source measured
nowhere has a = 0 with variance σ²/λ). Least squares by the normal equations; σ² = residual sum of squares /
(observations − effective parameters). Several grids stacked share a by name and keep a b per target.

Ranking (rank_target): pooling.py fits each grid on its own, weighs the grids by their closeness to the
user's encoder (weights learned leave-one-grid-out) and pools their source effects; where other grids
measured the ranked target itself, their residuals for it are added. The scored experiment's pairs of the
target are never used. Within a target b is a constant, so the ranking score of a candidate is its pooled
source effect (plus the target's own correction); pooling two grids or more, the second and third are chosen
as a set with the first (pooling.diversify), their scores raised just above the best candidate left out where
needed (with one grid each candidate keeps its own score: there the choice did worse on 2 of 3 grids).

A candidate in no grid is scored from its semb neighbours: the mean pooled effect of the k = 3 in-grid
candidates whose task embeddings are closest (cosine), with the variance of that guess measured by predicting
every in-grid source from its own neighbours; without an embedding it gets the unseen-source prior: 0, with the
variance of the pooled effects across sources plus their mean variance. `basis` says which, or which grids
measured it and how much each weighed.

Per candidate: the predicted normalised gain μ = score + b̂_t (b̂_t from harm.target_effect on the stacked
fit without the target), its predictive variance v = Var(score) + Var(b̂_t) + σ², P(beats the baseline) =
Φ(μ / √v), an 80% interval μ ± 1.2816 √v, and P(best) = the probability that the candidate is the best one
for the target, from 4,000 draws of the candidates' gains (the scores' distribution plus independent e).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import ndtr

from stilts.selection import grids as grids_
from stilts.selection.additive import LAMBDA, Effects, fit  # noqa: F401 (prior.fit, prior.Effects, prior.LAMBDA)

NEIGHBOURS = 3
INTERVAL_Z = 1.2816  # 80% two-sided
DRAWS = 4000


def neighbour_guess(eff: Effects, embeddings: dict[str, np.ndarray], candidate: str):
    """(score, variance, neighbours) of a candidate outside every grid from its closest in-grid
    candidates by task embedding; None without an embedding or with too few embedded sources."""
    known = [s for s in eff.a.index if s in embeddings]
    if candidate not in embeddings or len(known) < 2:
        return None

    def closest(task: str, pool: list[str]) -> list[str]:
        sims = {s: _cosine(embeddings[task], embeddings[s]) for s in pool if s != task}
        return sorted(sims, key=lambda s: (-sims[s], s))[:NEIGHBOURS]

    near = closest(candidate, known)
    guess = float(eff.a[near].mean())
    errors = [eff.a[s] - eff.a[closest(s, known)].mean() for s in known] if len(known) > NEIGHBOURS else []
    var = float(np.mean(np.square(errors))) if errors else eff.prior_var
    return guess, var, near


def _cosine(u: np.ndarray, v: np.ndarray) -> float:
    return float(u @ v / max(np.linalg.norm(u) * np.linalg.norm(v), 1e-12))


def candidate_effects(eff: Effects, candidates: list[str], embeddings: dict[str, np.ndarray] | None = None):
    """candidate → (score, basis); and the mean vector and covariance of their source effects."""
    out, cov_diag = {}, {}
    for c in candidates:
        if c in eff.a.index:
            out[c] = (float(eff.a[c]), "grid")
            continue
        guess = neighbour_guess(eff, embeddings or {}, c)
        if guess is not None:
            out[c] = (guess[0], "semb neighbours: " + ", ".join(guess[2]))
            cov_diag[c] = guess[1]
        else:
            out[c] = (0.0, "in no grid, no embedding: unseen-source prior")
            cov_diag[c] = eff.prior_var
    cov = pd.DataFrame(0.0, candidates, candidates)
    in_grid = [c for c in candidates if c in eff.a.index]
    cov.loc[in_grid, in_grid] = eff.a_cov.loc[in_grid, in_grid].to_numpy()
    for c, v in cov_diag.items():
        cov.loc[c, c] = v
    return out, np.array([out[c][0] for c in candidates]), cov.to_numpy()


def p_best(mean: np.ndarray, cov: np.ndarray, sigma2: float, seed: int = 0) -> np.ndarray:
    """P(each candidate has the highest gain) under gains ~ N(mean, cov + σ² I). The draws go through the
    Cholesky factor, which moves by the last bits when the covariance does (an eigendecomposition can turn
    its vectors for near-equal eigenvalues, so the same fit on another CPU would draw other samples)."""
    if len(mean) == 1:
        return np.ones(1)
    total = cov + sigma2 * np.eye(len(mean))
    draws = np.random.default_rng(seed).multivariate_normal(mean, total, size=DRAWS, method="cholesky")
    return np.bincount(draws.argmax(axis=1), minlength=len(mean)) / DRAWS


def harm_columns(mean: np.ndarray, var: np.ndarray, target_effect: tuple[float, float] | None) -> dict:
    """p_beats_baseline and the 80% interval of the normalised gain (NaN without a target-effect model)."""
    if target_effect is None:
        nan = np.full(len(mean), np.nan)
        return {"p_beats_baseline": nan, "gain_low": nan, "gain_high": nan}
    mu = mean + target_effect[0]
    sd = np.sqrt(var + target_effect[1])
    return {"p_beats_baseline": ndtr(mu / sd), "gain_low": mu - INTERVAL_Z * sd,
            "gain_high": mu + INTERVAL_Z * sd}


def pooled_candidates(pool, target: str, candidates: list[str], embeddings=None, scored: str | None = None):
    """candidate → (score, basis) from the pool's weighted grids and their measurements of the target; the mean
    vector and covariance of the scores (pooling.pooled_cov; a candidate outside every grid: its variance only)."""
    from stilts.selection import pooling

    effects = pool.for_target(target, scored)
    pooled = pooling.pooled_effects(effects, pool.weights, candidates)
    correction, measured_in = pooling.target_correction(effects, pool.weights, target, candidates)
    known = {s for e in effects.values() for s in e.a.index}
    everywhere = pooling.pooled_effects(effects, pool.weights, sorted(known))
    means = np.array([v[0] for v in everywhere.values()])
    unseen = float(np.var(means) + np.mean([v[1] for v in everywhere.values()])) if everywhere else 1.0
    proxy = _Proxy(pd.Series(means, list(everywhere)), unseen)
    out, var = {}, {}
    for c in candidates:
        if pooled[c] is not None:
            mean, v, used = pooled[c]
            basis = "grids: " + pooling.describe(pool.weights, used)
            if c in correction:
                mean += correction[c]
                basis += f"; {target} itself measured in {', '.join(measured_in)}"
            out[c], var[c] = (mean, basis), v
            continue
        guess = neighbour_guess(proxy, embeddings or {}, c)
        if guess is not None:
            out[c], var[c] = (guess[0], "semb neighbours: " + ", ".join(guess[2])), guess[1]
        else:
            out[c], var[c] = (0.0, "in no grid, no embedding: unseen-source prior"), proxy.prior_var
    cov = pooling.pooled_cov(effects, pool.weights, pooled, candidates)
    cov[np.diag_indices(len(candidates))] = [var[c] for c in candidates]
    return out, np.array([out[c][0] for c in candidates]), cov


@dataclass
class _Proxy:
    """What neighbour_guess reads of a fit: source effects and the variance of a source measured nowhere."""
    a: pd.Series
    prior_var: float


def rank_target(grid_list: list[grids_.Grid], target: str, candidates: list[str],
                embeddings: dict[str, np.ndarray] | None = None, baseline: float | None = None,
                train_size: int | None = None, *, model: str | None = None, scored: str | None = None,
                pool=None) -> pd.DataFrame:
    """The prior's rows of ranking.csv for one target: the pooled source effects of the grids (pooling.py,
    weighed for the user's `model`), plus what other grids measured on the target itself. The pairs of the
    target in the grid `scored` (the scored experiment) are never used; with `scored` None, no grid's are.
    `pool`: pooling.prepare(grid_list, model), when the caller ranks several targets."""
    from stilts.selection import harm, pooling

    eff = fit(grid_list, {target})
    if eff is None:
        return pd.DataFrame()
    pool = pool or pooling.prepare(grid_list, model)
    scored_c, mean, cov = pooled_candidates(pool, target, candidates, embeddings, scored)
    var = np.diag(cov) + eff.sigma2
    effect = harm.target_effect(eff, grid_list, target, baseline, train_size)
    order, raised = pooling.diversify(mean, pool.for_target(target, scored), pool.weights, target, candidates) \
        if len(pool.effects) >= 2 else (mean, {})
    basis = [scored_c[c][1] + (f"; in the top {pooling.TOP} as a set (score {raised[i]:.3f} raised)"
                               if i in raised else "") for i, c in enumerate(candidates)]
    return pd.DataFrame({"candidate": candidates, "score": order, "basis": basis,
                         **harm_columns(mean, var, effect), "p_best": p_best(mean, cov, eff.sigma2)})
