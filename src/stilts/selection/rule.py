"""Which run next, when to stop, and the answer: the decisions of `stilts select` on a `Belief`.

The answer is the arm with the highest expected true score (the baseline among them: "train no intermediate
task"); once a candidate has been run on the target, among the arms that were run (a candidate whose run
disappointed is not replaced by one never run, whose expected score rests on the prior alone).

A target without a baseline run gets one first: it is the cheapest run (one), the answer "train none" needs
it, and the harm model reads the target's headroom from it. After that, the next run comes from the
best plan of the next runs (selection.lookahead: which runs, spent together, raise the answer's expected
score most; a rule for identifying the best arm, the knowledge gradient of a batch, Frazier, Powell and
Dayanik, 2008). A candidate's first run costs two training runs (its intermediate task, then the target);
later runs reuse its intermediate checkpoint and cost one. Of the plan's arms, the first to run is the one
whose single run is worth most per training run: its knowledge gradient, computed under the Gaussian with the
belief's mean and covariance, exactly (the expected maximum of lines a_i + b_i Z, Z ~ N(0, 1), by their upper
envelope).

Stops: the budget is spent (no arm's next run fits in it, or none that fits can change the answer), P(the
leading arm is the best) ≥ `confident`, or, once the baseline was run, no candidate has P(beats the baseline)
≥ `hopeless`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stilts.selection import lookahead
from stilts.selection.belief import Belief

CONFIDENT = 0.95
HOPELESS = 0.05
_SQRT_2PI = math.sqrt(2 * math.pi)


@dataclass
class Options:
    confident: float = CONFIDENT  # stop when P(the leading arm is the best) reaches this
    hopeless: float = HOPELESS  # stop when no candidate's P(beats the baseline) reaches this (baseline run)
    seed: int = 0  # of the draws behind P(best) and the plans' values


@dataclass
class Decision:
    """One step: a run to make (arm index, its cost) or a stop (arm None), and why."""
    arm: int | None
    cost: int
    why: str
    values: dict[str, float]  # the plan's arms → one run's knowledge gradient per training run


def expected_improvement_of_max(a: np.ndarray, b: np.ndarray) -> float:
    """E[max_i (a_i + b_i Z)] − max_i a_i for Z ~ N(0, 1): exact, from the upper envelope of the lines."""
    lines = sorted(zip(b.tolist(), a.tolist()))
    env_a, env_b, env_c = [lines[0][1]], [lines[0][0]], [-math.inf]
    for bi, ai in lines[1:]:
        if bi == env_b[-1]:  # one slope: the later line of the sort is the higher
            env_a.pop(), env_b.pop(), env_c.pop()
            if not env_a:
                env_a, env_b, env_c = [ai], [bi], [-math.inf]
                continue
        while True:
            c = (env_a[-1] - ai) / (bi - env_b[-1])  # where the new line overtakes the envelope's last
            if c <= env_c[-1] and len(env_a) > 1:
                env_a.pop(), env_b.pop(), env_c.pop()
                continue
            break
        env_a.append(ai), env_b.append(bi), env_c.append(c)
    total = 0.0
    for j in range(1, len(env_a)):
        z = -abs(env_c[j])
        total += (env_b[j] - env_b[j - 1]) * (z * _cdf(z) + math.exp(-z * z / 2) / _SQRT_2PI)
    return total


def _cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2))


def knowledge_gradient(belief: Belief, allowed: np.ndarray, arm: int, runs: int) -> float:
    """The expected rise in the answer's expected score from `runs` more runs of `arm`, under the Gaussian with
    the mixture's mean and covariance (and its mean noise variance); the answer is among the arms that ran, the
    arm included, once a candidate has (answer_arms)."""
    mean, cov, noise_var = belief.moments()
    ran = belief.counts > 0
    idx = np.flatnonzero(lookahead.answerable(allowed, ran, [arm]))
    now = float(mean[lookahead.answerable(allowed, ran)].max())
    denom = math.sqrt(cov[arm, arm] + noise_var / runs)
    rise = expected_improvement_of_max(mean[idx], cov[idx, arm] / denom) if denom > 0 else 0.0
    return rise + float(mean[idx].max()) - now


def cost_of(arm: int, has_checkpoint: np.ndarray, runs: int = 1) -> int:
    """Training runs that `runs` target runs of the arm cost: plus its intermediate run for a candidate without
    a checkpoint (the baseline, arm 0, has none to train)."""
    return runs + (1 if arm > 0 and not has_checkpoint[arm] else 0)


def choose(belief: Belief, allowed: np.ndarray, measurable: np.ndarray, has_checkpoint: np.ndarray,
           budget_left: int, opts: Options) -> Decision:
    """The next run, or why to stop. `allowed`: arms the answer may be (trainable candidates; the baseline where
    the target has one); `measurable`: arms a run can be made of."""
    names = belief.arms
    lead = int(np.flatnonzero(allowed)[np.argmax(belief.mean()[allowed])])
    best = belief.p_best(allowed, seed=opts.seed)
    ran_baseline = belief.counts[0] > 0
    if measurable[0] and allowed[0] and ran_baseline:
        beats = belief.p_beats()
        cand = np.flatnonzero(allowed[1:]) + 1
        if len(cand) and beats[cand].max() < opts.hopeless:
            return Decision(None, 0, f"no candidate is likely to beat the baseline: the highest P(beats) is "
                            f"{beats[cand].max():.3f} < {opts.hopeless}", {})
    if best[lead] >= opts.confident:
        return Decision(None, 0, f"P({names[lead]} is the best) = {best[lead]:.3f} ≥ {opts.confident}", {})
    if measurable[0] and not ran_baseline and budget_left >= 1:
        return Decision(0, 1, "the target has no baseline run: the answer 'train none' and the harm model's "
                        "headroom need one (the cheapest run)", {})
    mean, cov, noise_var = belief.moments()
    cost_first = {int(a): cost_of(int(a), has_checkpoint) for a in np.flatnonzero(measurable)}
    plan, gain = lookahead.best_plan(mean, cov, noise_var, allowed, measurable, cost_first, budget_left, opts.seed,
                                     belief.counts > 0)
    if not plan:
        left = f" ({budget_left} run(s) left, the cheapest next run costs more)" if budget_left else ""
        return Decision(None, 0, f"the budget is spent{left}", {})
    if gain <= 0:
        return Decision(None, 0, f"no run within the budget ({budget_left} run(s) left) can change the answer", {})
    values = {names[a]: knowledge_gradient(belief, allowed, a, 1) / cost_first[a] for a in plan}
    pick = max(values, key=lambda n: (values[n], -names.index(n)))
    arm = names.index(pick)
    shown = ", ".join(f"{names[a]} x{r}" for a, r in plan.items())
    return Decision(arm, cost_first[arm], f"best plan of the next {min(budget_left, lookahead.HORIZON)} run(s): "
                    f"{shown} (expected rise of the answer's score {gain:.2e}); {pick} first, the highest value of "
                    f"one run per training run in the plan ({values[pick]:.2e})", values)


@dataclass
class Answer:
    arm: int
    name: str
    p_beats: float  # P(the answer beats the baseline); for "none": P(the best candidate beats it)
    gain: float  # expected gain over the baseline, in the target's metric
    p_best: float
    versus: str  # the candidate p_beats is about (the answer, or the best candidate when the answer is none)


def answer_arms(belief: Belief, allowed: np.ndarray) -> np.ndarray:
    """The arms the answer may be: once a candidate has been run on the target, the arms that were run (the
    answer is then something measured, or none); before, every allowed arm (the prior's pick)."""
    return lookahead.answerable(allowed, belief.counts > 0)


def answer(belief: Belief, allowed: np.ndarray, seed: int = 0) -> Answer:
    """Among `answer_arms`: the arm with the highest expected true score, P(it beats the baseline), its expected
    gain, P(best) (among the allowed arms)."""
    idx = np.flatnonzero(answer_arms(belief, allowed))
    mean = belief.mean()
    arm = int(idx[np.argmax(mean[idx])])
    cand = idx[idx > 0]
    top = arm if arm > 0 or not len(cand) else int(cand[np.argmax(mean[cand])])
    beats = belief.p_beats()
    best = belief.p_best(allowed, seed=seed)
    return Answer(arm, belief.arms[arm], float(beats[top]) if top > 0 else math.nan, float(belief.gain()[top]),
                  float(best[arm]), belief.arms[top])
