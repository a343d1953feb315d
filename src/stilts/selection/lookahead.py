"""Plans of the next runs for `stilts select`: which runs, spent together, raise the answer's expected score most.

A plan is how many runs of each arm to make in the next `horizon` training runs (a candidate's first run costs
its intermediate run too). Its value is the expected rise of the answer's expected score once its runs are in,
E[max_i μ'_i] − max_i μ_i over the arms the answer may be, under the Gaussian with the belief's mean μ and
covariance Σ (and its mean noise variance n²): after runs of arms H, each averaged over its c_a runs,

    μ' = μ + Σ Hᵀ L⁻ᵀ η,   L Lᵀ = H Σ Hᵀ + diag(n² / c),   η ~ N(0, I),

so a plan's value is an expectation over η, taken over DRAWS fixed antithetic draws shared by every plan
(common random numbers: plans are compared on the same draws, and the same belief gives the same choice).
With one arm this is the knowledge gradient of `runs` runs; with several it values exploring several
candidates together, which one run at a time undervalues (one noisy run of a candidate alone rarely changes
the answer). Plans are enumerated over the POOL arms with the highest μ_a + 2 sd_a (and the baseline), up to
MAX_RUNS_PER_ARM runs of an arm.
"""

from __future__ import annotations

import numpy as np

POOL = 8
MAX_RUNS_PER_ARM = 3
DRAWS = 2000
HORIZON = 6


def _pool(mean: np.ndarray, cov: np.ndarray, measurable: np.ndarray) -> list[int]:
    arms = np.flatnonzero(measurable)
    index = mean[arms] + 2 * np.sqrt(np.maximum(np.diag(cov)[arms], 0))
    order = [int(a) for a in arms[np.argsort(-index, kind="stable")]]
    chosen = [a for a in order if a > 0][:POOL]
    return ([0] if measurable[0] else []) + sorted(chosen)


def plans(pool: list[int], cost_first: dict[int, int], budget: int) -> list[dict[int, int]]:
    """Every non-empty plan (arm → runs) over the pool that costs at most `budget`."""
    out: list[dict[int, int]] = []

    def extend(i: int, plan: dict[int, int], spent: int) -> None:
        if i == len(pool):
            if plan:
                out.append(dict(plan))
            return
        arm = pool[i]
        extend(i + 1, plan, spent)
        for runs in range(1, MAX_RUNS_PER_ARM + 1):
            cost = cost_first[arm] + runs - 1
            if spent + cost > budget:
                break
            plan[arm] = runs
            extend(i + 1, plan, spent + cost)
            del plan[arm]

    extend(0, {}, 0)
    return out


def _draws(n_dims: int, seed: int) -> np.ndarray:
    half = np.random.default_rng(seed).standard_normal((DRAWS // 2, n_dims))
    return np.concatenate([half, -half])


def value(mean: np.ndarray, cov: np.ndarray, noise_var: float, allowed: np.ndarray, plan: dict[int, int],
          draws: np.ndarray) -> float:
    """E[max over allowed arms of μ'] − max μ for the plan's runs."""
    arms = list(plan)
    counts = np.array([plan[a] for a in arms], dtype=float)
    gram = cov[np.ix_(arms, arms)] + np.diag(noise_var / counts)
    chol = np.linalg.cholesky(gram)
    shift = np.linalg.solve(chol, cov[arms][:, allowed]).T  # Σ Hᵀ L⁻ᵀ, allowed arms only
    after = mean[allowed] + draws[:, :len(arms)] @ shift.T
    return float(after.max(axis=1).mean() - mean[allowed].max())


def best_plan(mean: np.ndarray, cov: np.ndarray, noise_var: float, allowed: np.ndarray, measurable: np.ndarray,
              cost_first: dict[int, int], budget: int, seed: int = 0) -> tuple[dict[int, int], float]:
    """(the plan with the highest value within min(budget, HORIZON) runs, its value); ties go to the plan
    enumerated first (fewer runs of the arms that come first in the pool)."""
    pool = _pool(mean, cov, measurable)
    options = plans(pool, cost_first, min(budget, HORIZON))
    if not options:
        return {}, 0.0
    draws = _draws(max(len(p) for p in options), seed)
    values = [value(mean, cov, noise_var, allowed, p, draws) for p in options]
    i = int(np.argmax(values))
    return options[i], values[i]
