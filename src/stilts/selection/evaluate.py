"""A ranking of candidates for one target, scored against the measured transfer grid.

`measured` is the target's mean score over restarts after each candidate (the task's major metric).
Regret@k (Poth et al., 2021): (best measured − best measured among the top k ranked) / best
measured, a fraction; 0 when the top k hold the best candidate. NDCG over the whole list, with the
gain of a candidate = its measured mean − the lowest measured mean among the candidates, so the worst
candidate gains nothing and a constant offset in the metric changes nothing; discount 1/log2(1 + position).
Spearman: rank correlation of the ranking scores with the measured means (ties averaged).
A random ranking (every order equally likely) is scored by its exact expectation: for Regret@k, the
expected best of k candidates drawn without replacement (the i-th smallest of n is the best of the k
with probability C(i−1, k−1) / C(n, k)); for NDCG, every position's expected gain is the mean gain;
Spearman's expectation is 0.

Harm prediction (methods that give P(candidate beats the baseline), i.e. prior and hybrid), against
a grid with baseline runs: "beats" = the candidate's measured mean is above the baseline mean.
AUROC = the probability that a pair that beats the baseline gets a higher P than one that does not
(ties count half; undefined when every pair is on one side), Brier = mean (P − beats)². Per target
over its candidates; in the `mean` rows over all (candidate, target) pairs pooled. A random
ranking's AUROC is 0.5 (for targets with a baseline); it has no Brier score.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

KS = (1, 3)
COLUMNS = ["target", "method", *[f"regret_at_{k}" for k in KS], "ndcg", "spearman", "auroc", "brier", "n_candidates",
           "first", "first_p_beats", "first_gain_low", "first_gain_high", "first_measured_gain", "first_beats"]
SCORES = COLUMNS[2:8]  # regret@1, @3, NDCG, Spearman, AUROC, Brier
FIRST = COLUMNS[-6:]  # the method's first pick: predicted (P(beats), normalised 80% interval) and measured
BASELINE = "none"


def order(scores: dict[str, float]) -> list[str]:
    """Candidates best first; ties go to the name that sorts first (a fixed, documented order)."""
    return sorted(scores, key=lambda c: (-scores[c], c))


def regret_at_k(scores: dict[str, float], measured: dict[str, float], k: int) -> float:
    best = max(measured.values())
    if best == 0:
        return math.nan
    top = order(scores)[:k]
    return (best - max(measured[c] for c in top)) / best


def _gains(measured: dict[str, float]) -> dict[str, float]:
    low = min(measured.values())
    return {c: v - low for c, v in measured.items()}


def _discounts(n: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, n + 2))


def ndcg(scores: dict[str, float], measured: dict[str, float]) -> float:
    gains = _gains(measured)
    ideal = float(np.sort(list(gains.values()))[::-1] @ _discounts(len(gains)))
    if ideal == 0:
        return math.nan  # every candidate measured the same: no order is better than another
    return float(np.array([gains[c] for c in order(scores)]) @ _discounts(len(gains))) / ideal


def spearman(scores: dict[str, float], measured: dict[str, float]) -> float:
    names = sorted(measured)
    a, b = [scores[c] for c in names], [measured[c] for c in names]
    if len(set(a)) < 2 or len(set(b)) < 2:
        return math.nan
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def _ranks(values) -> np.ndarray:
    """1-based ranks, ties averaged (as scipy.stats.rankdata; pandas is loaded already, scipy.stats is slow)."""
    return pd.Series(values, dtype=float).rank(method="average").to_numpy()


def random_regret_at_k(measured: dict[str, float], k: int) -> float:
    values = np.sort(list(measured.values()))
    n, best = len(values), values[-1]
    if best == 0:
        return math.nan
    k = min(k, n)
    weights = np.array([math.comb(i, k - 1) for i in range(n)], dtype=np.float64) / math.comb(n, k)
    return float((best - weights @ values) / best)


def random_ndcg(measured: dict[str, float]) -> float:
    gains = np.array(list(_gains(measured).values()))
    disc = _discounts(len(gains))
    ideal = float(np.sort(gains)[::-1] @ disc)
    return math.nan if ideal == 0 else float(gains.mean() * disc.sum() / ideal)


def auroc(beats, p) -> float:
    y, p = np.asarray(beats, dtype=bool), np.asarray(p, dtype=float)
    if y.all() or not y.any():
        return math.nan
    n1, n0 = int(y.sum()), int((~y).sum())
    return float((_ranks(p)[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))  # Mann–Whitney U / (n1 n0)


def brier(beats, p) -> float:
    return float(np.mean((np.asarray(p, dtype=float) - np.asarray(beats, dtype=float)) ** 2)) if len(p) else math.nan


def score_target(target: str, method: str, scores: dict[str, float], measured: dict[str, float]) -> dict:
    """One row of ranking_eval.csv: the candidates both ranked and measured."""
    both = {c: measured[c] for c in scores if c in measured}
    ranked = {c: scores[c] for c in both}
    row = {"target": target, "method": method, "n_candidates": len(both)}
    row |= {f"regret_at_{k}": regret_at_k(ranked, both, k) for k in KS}
    return row | {"ndcg": ndcg(ranked, both), "spearman": spearman(ranked, both)}


def score_random(target: str, measured: dict[str, float]) -> dict:
    row = {"target": target, "method": "random", "n_candidates": len(measured)}
    row |= {f"regret_at_{k}": random_regret_at_k(measured, k) for k in KS}
    return row | {"ndcg": random_ndcg(measured), "spearman": 0.0}


def measured_means(runs: pd.DataFrame) -> dict[tuple[str, str], float]:
    """(target, source) → mean score over restarts, from analysis.collect's table (source `none`: the baseline)."""
    if runs.empty:
        return {}
    means = runs.groupby(["task", "source"])["score"].mean()
    return {(t, s): float(v) for (t, s), v in means.items()}


def _harm_pairs(m: pd.DataFrame, target: str, measured: dict, means: dict) -> pd.DataFrame:
    """The method's (P, beats) for the target's measured candidates, when both exist."""
    if "p_beats_baseline" not in m or (target, BASELINE) not in means:
        return pd.DataFrame(columns=["p", "beats"])
    rows = m[m["candidate"].isin(measured) & m["p_beats_baseline"].notna()]
    base = means[(target, BASELINE)]
    return pd.DataFrame({"p": rows["p_beats_baseline"].to_numpy(float),
                         "beats": [measured[c] > base for c in rows["candidate"]]})


def with_measured(ranking: pd.DataFrame, means: dict[tuple[str, str], float]) -> pd.DataFrame:
    """ranking.csv's measured_gain (mean after the candidate − baseline mean, in the target's metric) and
    measured_beats, where the scored experiment measured the pair and the target's baseline."""
    gains = [means[(t, c)] - means[(t, BASELINE)] if (t, c) in means and (t, BASELINE) in means else math.nan
             for t, c in zip(ranking["target"], ranking["candidate"])]
    out = ranking.assign(measured_gain=gains)
    return out.assign(measured_beats=[float(g > 0) if not math.isnan(g) else math.nan for g in gains])


def _first(m: pd.DataFrame, measured: dict[str, float]) -> dict:
    """The method's first pick among the measured candidates (the recommendation a study tested)."""
    both = m[m["candidate"].isin(measured)]
    top = both.set_index("candidate").loc[order(dict(zip(both["candidate"], both["score"])))[0]]
    top = pd.concat([pd.Series({"candidate": top.name}), top])
    get = lambda k: top[k] if k in top.index else math.nan  # noqa: E731
    return dict(zip(FIRST, [top["candidate"], get("p_beats_baseline"), get("gain_low"), get("gain_high"),
                            get("measured_gain"), get("measured_beats")]))


def evaluate(ranking: pd.DataFrame, means: dict[tuple[str, str], float]) -> pd.DataFrame:
    """ranking.csv's table scored against the measured means: a row per target and method (the
    random ranking too), for targets with ≥ 2 ranked candidates measured, and their means over targets
    (AUROC and Brier: over all pairs pooled)."""
    rows, harm = [], {}
    for target, g in ranking.groupby("target", sort=False):
        measured = {c: means[(target, c)] for c in dict.fromkeys(g["candidate"]) if (target, c) in means}
        if len(measured) < 2:
            continue
        for method, m in g.groupby("method", sort=False):
            row = score_target(target, method, dict(zip(m["candidate"], m["score"])), measured) | _first(m, measured)
            pairs = _harm_pairs(m, target, measured, means)
            if len(pairs):
                row |= {"auroc": auroc(pairs["beats"], pairs["p"]), "brier": brier(pairs["beats"], pairs["p"])}
                harm.setdefault(method, []).append(pairs)
            rows.append(row)
        rows.append(score_random(target, measured) | ({"auroc": 0.5} if (target, BASELINE) in means else {}))
    table = pd.DataFrame(rows, columns=COLUMNS)
    if table.empty:
        return table
    metrics = [c for c in COLUMNS if c not in ("target", "method", "first")]
    mean = table.groupby("method", sort=False)[metrics].mean().reset_index()
    for method, parts in harm.items():
        pooled = pd.concat(parts)
        at = mean["method"] == method
        mean.loc[at, "auroc"], mean.loc[at, "brier"] = auroc(pooled["beats"], pooled["p"]), brier(pooled["beats"],
                                                                                                   pooled["p"])
    mean.insert(0, "target", "mean")
    return pd.concat([table, mean.reindex(columns=COLUMNS)], ignore_index=True)
