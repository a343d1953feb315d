"""hybrid: one score from the prior, semb and (where checkpoints exist) logme.

For a target t, each signal is put on one scale over t's candidates: the prior's source effects
centred (they are normalised gains already), semb and logme standardised (mean 0, sd 1); a
candidate without a signal (no data, no checkpoint) gets 0 there, the neutral value. The score is
ā + Σ w_k · signal_k, with non-negative weights w learned by least squares (scipy's nnls) on the
prior grids only, leave-one-target-out twice over: for every other grid target u, the prior is
refitted without t and u, and the centred normalised gains of u are regressed on u's signals. The
target t is never part of it. The residual variance of that regression is the spread of a
candidate's gain around its score, which gives P(beats the baseline), the interval and P(best) as
for the prior (prior.harm_columns, prior.p_best).

Without a prior grid the weights cannot be learned: the score is the mean of the standardised
signals there are (semb, logme), without a harm prediction, and `basis` says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stilts.errors import StiltsError
from stilts.selection import grids as grids_
from stilts.selection import harm, prior

SIGNALS = ("prior", "semb", "logme")


def standardised(values: dict[str, float], candidates: list[str]) -> np.ndarray:
    """The signal over the candidates, mean 0 and sd 1 over those that have it; 0 where it is missing."""
    have = [c for c in candidates if c in values]
    if len(have) < 2:
        return np.zeros(len(candidates))
    v = np.array([values[c] for c in have], dtype=float)
    sd = v.std()
    z = dict(zip(have, (v - v.mean()) / sd if sd > 0 else np.zeros(len(v))))
    return np.array([z.get(c, 0.0) for c in candidates])


def features(a: dict[str, float], signals: dict[str, dict], target: str, candidates: list[str]) -> np.ndarray:
    """candidates × (prior, semb, logme): the centred prior and the standardised side signals."""
    p = np.array([a[c] for c in candidates])
    cols = [p - p.mean()]
    for name in SIGNALS[1:]:
        pairs = signals.get(name, {})
        cols.append(standardised({c: pairs[(target, c)] for c in candidates if (target, c) in pairs}, candidates))
    return np.column_stack(cols)


def _training_rows(grid_list, target: str, signals: dict[str, dict]):
    """(X, y) over every other grid target u: its signals (prior refitted without target and u) and
    its centred normalised gains."""
    xs, ys = [], []
    names = dict.fromkeys(t for g in grid_list for t in g.targets if t != target)
    for u in names:
        eff = prior.fit(grid_list, {target, u})
        if eff is None:
            continue
        for g in grid_list:
            z, _ = grids_.normalised(g)
            if u not in z.index:
                continue
            row = z.loc[u].dropna().drop(labels=[u], errors="ignore")
            if len(row) < 3:
                continue
            cands = list(row.index)
            scored, _, _ = prior.candidate_effects(eff, cands)
            xs.append(features({c: scored[c][0] for c in cands}, signals, u, cands))
            ys.append(row.to_numpy(float) - row.mean())
    if not xs:
        return None
    return np.vstack(xs), np.concatenate(ys)


def weights(grid_list, target: str, signals: dict[str, dict]) -> tuple[np.ndarray, float] | None:
    """(non-negative weights of prior, semb, logme; residual variance), learned without `target`."""
    rows = _training_rows(grid_list, target, signals)
    if rows is None:
        return None
    from scipy import optimize

    x, y = rows
    used = np.abs(x).sum(axis=0) > 0  # a signal absent from every training row gets no weight
    w = np.zeros(x.shape[1])
    w[used], _ = optimize.nnls(x[:, used], y)
    resid = y - x @ w
    return w, float(resid @ resid / max(len(y) - int(used.sum()), 1))


def _basis(scored: dict, c: str, w: np.ndarray, signals: dict, target: str) -> str:
    parts = [f"prior ({scored[c][1]}) x{w[0]:.2f}"]
    for k, name in enumerate(SIGNALS[1:], start=1):
        if signals.get(name):
            parts.append(f"{name} x{w[k]:.2f}" if (target, c) in signals[name] else f"{name}: none")
    return " + ".join(parts)


def rank_target(grid_list, target: str, candidates: list[str], signals: dict[str, dict],
                embeddings: dict | None = None, baseline: float | None = None) -> pd.DataFrame:
    """hybrid's rows of ranking.csv for one target."""
    if not grid_list:
        return fallback(target, candidates, signals)
    eff = prior.fit(grid_list, {target})
    learned = weights(grid_list, target, signals) if eff is not None else None
    if learned is None:
        return fallback(target, candidates, signals)
    w, resid_var = learned
    scored, mean_a, _ = prior.candidate_effects(eff, candidates, embeddings)
    x = features({c: scored[c][0] for c in candidates}, signals, target, candidates)
    score = mean_a.mean() + x @ w
    effect = harm.target_effect(eff, grid_list, target, baseline)
    var = np.full(len(candidates), resid_var)
    return pd.DataFrame({"candidate": candidates, "score": score,
                         "basis": [_basis(scored, c, w, signals, target) for c in candidates],
                         **prior.harm_columns(score, var, effect),
                         "p_best": prior.p_best(score, np.zeros((len(score), len(score))), resid_var)})


def fallback(target: str, candidates: list[str], signals: dict[str, dict]) -> pd.DataFrame:
    """No prior grid: the mean of the standardised semb and logme signals the target has."""
    cols, used = [], []
    for name in SIGNALS[1:]:
        pairs = signals.get(name, {})
        values = {c: pairs[(target, c)] for c in candidates if (target, c) in pairs}
        if len(values) >= 2:
            cols.append(standardised(values, candidates))
            used.append(name)
    if not cols:
        raise StiltsError(f"rank: hybrid has no signal for target '{target}': no prior grid (--prior-experiment) "
                          "and no semb or logme score (its data files or the candidates' checkpoints are absent)")
    nan = np.full(len(candidates), np.nan)
    return pd.DataFrame({"candidate": candidates, "score": np.mean(cols, axis=0),
                         "basis": f"no prior grid: mean of standardised {' and '.join(used)}",
                         "p_beats_baseline": nan, "gain_low": nan, "gain_high": nan, "p_best": nan})
