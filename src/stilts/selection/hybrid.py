"""hybrid: one score from the prior, semb and (where checkpoints exist) logme.

For a target t, each signal is put on one scale over t's candidates: the prior's source effects
centred (they are normalised gains already), semb and logme centred and divided by their spread
within targets pooled over all targets (one scale per signal: a target whose candidates barely
differ in semb keeps small differences, instead of having them blown up to unit variance); a
candidate without a signal (no data, no checkpoint) gets 0 there, the neutral value. The score is
ā + Σ w_k · signal_k, with non-negative weights w learned by least squares (scipy's nnls) on the
prior grids only, leave-one-target-out twice over: for every other grid target u, the prior is
refitted without t and u, and the centred normalised gains of u are regressed on u's signals.
Which side signals enter at all is chosen the same way: the combination (prior alone, prior + semb,
prior + logme, all three) with the smallest error on each training target when fitted on the
others. The target t is never part of it. The residual variance of that regression is the spread of a
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


def pooled_sd(pairs: dict[tuple[str, str], float]) -> float:
    """The signal's spread within targets, pooled over every target: √ mean (x − its target's mean)²."""
    by_target: dict[str, list[float]] = {}
    for (t, _), v in pairs.items():
        by_target.setdefault(t, []).append(v)
    dev = [v - np.mean(vs) for vs in by_target.values() if len(vs) >= 2 for v in vs]
    return float(np.sqrt(np.mean(np.square(dev)))) if dev else 0.0


def standardised(values: dict[str, float], candidates: list[str], scale: float) -> np.ndarray:
    """The signal over the candidates, centred over those that have it and divided by its pooled
    within-target spread (one scale for every target, so a target whose candidates barely differ
    keeps small differences); 0, the neutral value, where it is missing."""
    have = [c for c in candidates if c in values]
    if len(have) < 2 or scale <= 0:
        return np.zeros(len(candidates))
    mean = np.mean([values[c] for c in have])
    return np.array([(values[c] - mean) / scale if c in values else 0.0 for c in candidates])


def features(a: dict[str, float], signals: dict[str, dict], target: str, candidates: list[str]) -> np.ndarray:
    """candidates × (prior, semb, logme): the centred prior and the standardised side signals."""
    p = np.array([a[c] for c in candidates])
    cols = [p - p.mean()]
    for name in SIGNALS[1:]:
        pairs = signals.get(name, {})
        values = {c: pairs[(target, c)] for c in candidates if (target, c) in pairs}
        cols.append(standardised(values, candidates, pooled_sd(pairs)))
    return np.column_stack(cols)


def _training_rows(grid_list, target: str, signals: dict[str, dict]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(X, y) for every other grid target u: its signals (prior refitted without target and u) and its
    centred normalised gains."""
    blocks = []
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
            blocks.append((features({c: scored[c][0] for c in cands}, signals, u, cands),
                           row.to_numpy(float) - row.mean()))
    return blocks


def _nnls(blocks, columns: tuple[int, ...]) -> np.ndarray:
    from scipy import optimize

    x = np.vstack([b[0] for b in blocks])
    w = np.zeros(x.shape[1])
    w[list(columns)], _ = optimize.nnls(x[:, list(columns)], np.concatenate([b[1] for b in blocks]))
    return w


def _held_out_error(blocks, columns: tuple[int, ...]) -> float:
    """Squared error of the combination on each training target, with weights fitted on the others."""
    return sum(float(np.sum((y - x @ _nnls(blocks[:i] + blocks[i + 1:], columns)) ** 2))
               for i, (x, y) in enumerate(blocks))


def weights(grid_list, target: str, signals: dict[str, dict]) -> tuple[np.ndarray, float] | None:
    """(non-negative weights of prior, semb, logme; residual variance), learned without `target`.
    Which side signals enter is chosen by leave-one-target-out error among the training targets
    (prior alone, prior with each side signal, prior with all): a signal that does not predict the
    gains of held-out targets gets weight 0."""
    blocks = _training_rows(grid_list, target, signals)
    if not blocks:
        return None
    present = [k for k in range(1, len(SIGNALS)) if any(np.abs(x[:, k]).sum() > 0 for x, _ in blocks)]
    choices = [(0,), *((0, k) for k in present)] + ([(0, *present)] if len(present) > 1 else [])
    if len(choices) > 1 and len(blocks) > 2:
        errors = [_held_out_error(blocks, c) for c in choices]
        best = choices[int(np.argmin(errors))]  # the first (fewest signals) among equals
    else:
        best = choices[-1]
    w = _nnls(blocks, best)
    x, y = np.vstack([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks])
    resid = y - x @ w
    return w, float(resid @ resid / max(len(y) - len(best), 1))


def _basis(scored: dict, c: str, w: np.ndarray, signals: dict, target: str) -> str:
    parts = [f"prior ({scored[c][1]}) x{w[0]:.2f}"]
    for k, name in enumerate(SIGNALS[1:], start=1):
        if signals.get(name):
            parts.append(f"{name} x{w[k]:.2f}" if (target, c) in signals[name] else f"{name}: none")
    return " + ".join(parts)


def rank_target(grid_list, target: str, candidates: list[str], signals: dict[str, dict],
                embeddings: dict | None = None, baseline: float | None = None,
                train_size: int | None = None) -> pd.DataFrame:
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
    effect = harm.target_effect(eff, grid_list, target, baseline, train_size)
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
            cols.append(standardised(values, candidates, pooled_sd(pairs)))
            used.append(name)
    if not cols:
        raise StiltsError(f"rank: hybrid has no signal for target '{target}': no prior grid (--prior-experiment) "
                          "and no semb or logme score (its data files or the candidates' checkpoints are absent)")
    nan = np.full(len(candidates), np.nan)
    return pd.DataFrame({"candidate": candidates, "score": np.mean(cols, axis=0),
                         "basis": f"no prior grid: mean of standardised {' and '.join(used)}",
                         "p_beats_baseline": nan, "gain_low": nan, "gain_high": nan, "p_best": nan})
