"""Plans of the next runs for `stilts select`: which runs, spent together, raise the answer's expected score most.

A plan is how many runs of each arm to make in the next `horizon` training runs (a candidate's first run costs
its intermediate run too). Its value is the expected rise of the answer's expected score once its runs are in,
E[max_i μ'_i] − max_i μ_i over the arms the answer may be, under the Gaussian with the belief's mean μ and
covariance Σ (and its mean noise variance n²): after runs of arms H, each averaged over its c_a runs,

    μ' = μ + Σ Hᵀ L⁻ᵀ η,   L Lᵀ = H Σ Hᵀ + diag(n² / c),   η ~ N(0, I),

and the answer is then the best of the arms it may be (once a candidate has run: the arms that ran, the plan's
included; rule.answer_arms), so a plan's value is an expectation over η, taken over DRAWS fixed antithetic draws
shared by every plan (common random numbers: plans are compared on the same draws, and the same belief gives
the same choice). With one arm this is the knowledge gradient of `runs` runs; with several it values exploring
several candidates together, which one run at a time undervalues (one noisy run of a candidate alone rarely changes
the answer). Plans are enumerated over the arms whose next run costs one (the baseline, the candidates already
trained) and the POOL other arms with the highest μ_a + 2 sd_a, up to MAX_RUNS_PER_ARM runs of an arm.
"""

from __future__ import annotations

import numpy as np

POOL = 8
MAX_RUNS_PER_ARM = 3
DRAWS = 2000
HORIZON = 6


def _pool(mean: np.ndarray, cov: np.ndarray, measurable: np.ndarray, cost_first: dict[int, int],
          budget: int) -> list[int]:
    """The baseline and every arm whose next run costs one (a candidate already trained: a repeat), then the POOL
    others with the highest μ_a + 2 sd_a among those whose first run fits in the budget."""
    arms = [int(a) for a in np.flatnonzero(measurable) if cost_first[int(a)] <= budget]
    cheap = [a for a in arms if a == 0 or cost_first[a] == 1]
    rest = np.array([a for a in arms if a not in cheap], dtype=int)
    index = mean[rest] + 2 * np.sqrt(np.maximum(np.diag(cov)[rest], 0))
    chosen = [int(a) for a in rest[np.argsort(-index, kind="stable")]][:POOL]
    return sorted(cheap + chosen)


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


def answerable(allowed: np.ndarray, ran: np.ndarray | None, arms=()) -> np.ndarray:
    """The arms the answer may be once `arms` have run too (rule.answer_arms): the allowed arms that ran, once a
    candidate has; before, every allowed arm. `ran` None: every allowed arm."""
    if ran is None:
        return allowed
    after = ran.copy()
    after[list(arms)] = True
    after &= allowed
    return after if after[1:].any() else allowed


def value(mean: np.ndarray, cov: np.ndarray, noise_var: float, allowed: np.ndarray, plan: dict[int, int],
          draws: np.ndarray, ran: np.ndarray | None = None) -> float:
    """E[max of μ' over the arms the answer may be after the plan] − max of μ over those it may be now."""
    arms = list(plan)
    after_set, now = answerable(allowed, ran, arms), answerable(allowed, ran)
    counts = np.array([plan[a] for a in arms], dtype=float)
    gram = cov[np.ix_(arms, arms)] + np.diag(noise_var / counts)
    chol = np.linalg.cholesky(gram)
    shift = np.linalg.solve(chol, cov[arms][:, after_set]).T  # Σ Hᵀ L⁻ᵀ, answerable arms only
    after = mean[after_set] + draws[:, :len(arms)] @ shift.T
    return float(after.max(axis=1).mean() - mean[now].max())


def best_plan(mean: np.ndarray, cov: np.ndarray, noise_var: float, allowed: np.ndarray, measurable: np.ndarray,
              cost_first: dict[int, int], budget: int, seed: int = 0,
              ran: np.ndarray | None = None) -> tuple[dict[int, int], float]:
    """(the plan with the highest value within min(budget, HORIZON) runs, its value); ties go to the plan
    enumerated first (fewer runs of the arms that come first in the pool). `ran`: the arms run so far (the
    answer is among those run, once a candidate has: see `answerable`)."""
    horizon = min(budget, HORIZON)
    pool = _pool(mean, cov, measurable, cost_first, horizon)
    options = plans(pool, cost_first, horizon)
    if not options:
        return {}, 0.0
    draws = _draws(max(len(p) for p in options), seed)
    values = [value(mean, cov, noise_var, allowed, p, draws, ran) for p in options]
    i = int(np.argmax(values))
    return options[i], values[i]
