"""The posterior over one target's arms (the baseline and each candidate) that `stilts select` keeps.

Arms: index 0 is the baseline (no intermediate task), 1.. the candidates. Their true scores (the mean over
restarts in the target's metric) are w = (θ_none, θ_1, …, θ_K) with

    θ_none ~ N(LEVEL_MEAN, LEVEL_VAR)                     a vague level: the prior says nothing about it
    θ_c = θ_none + s · z_c,  z ~ N(μ_z, Σ_z)               the prior's normalised gains (selection.prior_belief)
    a run of arm a scores θ_a + ε,  ε ~ N(0, (ρ s)²)        restart noise

s is the target's spread across intermediate tasks in its metric (what the prior's gains are divided by)
and ρ the restart noise in units of it. Neither is known for a new target: both range over support points
taken from the targets of the prior grids (`Scale`), each weighted by its prior weight times the marginal
likelihood of the target's runs. Given (s, ρ) the model is linear and Gaussian, so each support point holds
an exact Gaussian posterior; the belief is their mixture. Runs of the same arm inform ρ s (the restarts'
spread), runs of different arms s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

LEVEL_MEAN = 0.5  # scores are on a 0–1 scale (accuracy, F1, correlations): a level 1 wide says nothing
LEVEL_VAR = 1.0
DRAWS = 4000


@dataclass(frozen=True)
class Scale:
    """Support points (s, ρ) with their prior weights."""
    spread: np.ndarray
    noise_ratio: np.ndarray
    weight: np.ndarray


@dataclass(frozen=True)
class Prior:
    """What the grids say about the target's candidates, in normalised gains (selection.prior_belief)."""
    candidates: list[str]
    mean: np.ndarray  # μ_z
    cov: np.ndarray  # Σ_z
    scale: Scale
    anchored: bool  # whether μ_z is against the baseline (the harm model had baseline-anchored grids)


@dataclass
class Component:
    weight: float
    mean: np.ndarray  # posterior mean of w
    cov: np.ndarray  # posterior covariance of w
    noise_var: float  # (ρ s)²


def _prior_moments(prior: Prior, s: float) -> tuple[np.ndarray, np.ndarray]:
    k = len(prior.candidates)
    mean = np.r_[LEVEL_MEAN, LEVEL_MEAN + s * prior.mean]
    cov = np.full((k + 1, k + 1), LEVEL_VAR)
    cov[1:, 1:] += s * s * prior.cov
    return mean, cov


def _condition(mean: np.ndarray, cov: np.ndarray, arms: np.ndarray, y: np.ndarray, noise_var: float):
    """(posterior mean, posterior covariance, log marginal likelihood of y) for runs y of `arms`."""
    if not len(y):
        return mean, cov, 0.0
    h_cov = cov[arms]  # H Σ
    gram = h_cov[:, arms] + noise_var * np.eye(len(y))
    chol = np.linalg.cholesky(gram)
    resid = y - mean[arms]
    alpha = np.linalg.solve(chol, resid)
    gain = np.linalg.solve(chol, h_cov)  # L⁻¹ H Σ
    post_mean = mean + gain.T @ alpha
    post_cov = cov - gain.T @ gain
    loglik = -0.5 * (alpha @ alpha) - float(np.log(np.diag(chol)).sum()) - 0.5 * len(y) * math.log(2 * math.pi)
    return post_mean, (post_cov + post_cov.T) / 2, loglik


class Belief:
    """The mixture posterior over w given the runs so far (arm index, score)."""

    def __init__(self, prior: Prior, runs: list[tuple[int, float]]):
        self.prior = prior
        self.arms = ["none", *prior.candidates]
        arms = np.array([a for a, _ in runs], dtype=int)
        y = np.array([v for _, v in runs], dtype=float)
        comps, logw = [], []
        sc = prior.scale
        for s, rho, w in zip(sc.spread, sc.noise_ratio, sc.weight):
            noise_var = float(rho * s) ** 2
            mean, cov, loglik = _condition(*_prior_moments(prior, float(s)), arms, y, noise_var)
            comps.append(Component(0.0, mean, cov, noise_var))
            logw.append(math.log(w) + loglik)
        logw = np.array(logw)
        weights = np.exp(logw - logw.max())
        weights /= weights.sum()
        for c, w in zip(comps, weights):
            c.weight = float(w)
        self.components = comps
        self.counts = np.bincount(arms, minlength=len(self.arms))  # runs per arm
        self._moments = None

    @property
    def weights(self) -> np.ndarray:
        return np.array([c.weight for c in self.components])

    def mean(self) -> np.ndarray:
        """E[w]: each arm's expected true score."""
        return sum(c.weight * c.mean for c in self.components)

    def moments(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(mean, covariance) of w under the mixture, and the mean noise variance."""
        if self._moments is None:
            m = self.mean()
            second = sum(c.weight * (c.cov + np.outer(c.mean, c.mean)) for c in self.components)
            self._moments = m, second - np.outer(m, m), float(sum(c.weight * c.noise_var for c in self.components))
        return self._moments

    def sd(self) -> np.ndarray:
        """Each arm's posterior standard deviation (mixture: within + between components)."""
        m = self.mean()
        second = sum(c.weight * (np.diag(c.cov) + c.mean ** 2) for c in self.components)
        return np.sqrt(np.maximum(second - m ** 2, 0.0))

    def p_beats(self) -> np.ndarray:
        """P(θ_c > θ_none) per arm (the baseline's own entry is 0)."""
        out = np.zeros(len(self.arms))
        for c in self.components:
            diff = c.mean[1:] - c.mean[0]
            var = np.diag(c.cov)[1:] + c.cov[0, 0] - 2 * c.cov[0, 1:]
            out[1:] += c.weight * ndtr(diff / np.sqrt(np.maximum(var, 1e-18)))
        return out

    def gain(self) -> np.ndarray:
        """E[θ_a − θ_none] per arm, in the target's metric."""
        m = self.mean()
        return m - m[0]

    def draws(self, n: int = DRAWS, seed: int = 0) -> np.ndarray:
        """n draws of w from the mixture (components in proportion to their weights), reproducible by seed."""
        rng = np.random.default_rng(seed)
        counts = rng.multinomial(n, self.weights)
        parts = []
        for c, k in zip(self.components, counts):
            if k:
                chol = np.linalg.cholesky(c.cov + 1e-15 * np.eye(len(c.mean)))
                parts.append(c.mean + rng.standard_normal((k, len(c.mean))) @ chol.T)
        return np.concatenate(parts)

    def p_best(self, allowed: np.ndarray, seed: int = 0) -> np.ndarray:
        """P(each allowed arm has the highest true score among the allowed arms); 0 for the others."""
        idx = np.flatnonzero(allowed)
        best = self.draws(seed=seed)[:, idx].argmax(axis=1)
        out = np.zeros(len(self.arms))
        out[idx] = np.bincount(best, minlength=len(idx)) / len(best)
        return out

    def spread(self) -> tuple[float, float]:
        """Posterior means of s and of the restart noise ρ s, in the target's metric."""
        sc = self.prior.scale
        w = self.weights
        return float(w @ sc.spread), float(w @ (sc.spread * sc.noise_ratio))
