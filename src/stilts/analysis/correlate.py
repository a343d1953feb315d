"""RQ3: do probing scores explain target scores? Rank correlations across intermediate-trained models.

One observation per intermediate-trained model (source ≠ none) and restart (n = 11 × 3 = 33 in the
paper). Pairs: each target against every other target and every probe. Holm–Bonferroni is applied
jointly over the whole block, per method, at α.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from stilts.config import parse_source

BASELINE = "none"


def holm(pvalues, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm–Bonferroni step-down: adjusted p-values and reject flags (NaN p-values are left out)."""
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted, np.where(np.isnan(adjusted), False, adjusted <= alpha)


def score_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Rows: (source, restart) of intermediate-trained models; columns: tasks; values: scores.
    Data-size variants (<task>__n<N>) are left out: the paper correlates the full intermediate tasks."""
    full = runs["source"].map(lambda s: parse_source(s)[1] is None)
    df = runs[(runs["source"] != BASELINE) & full]
    return df.pivot_table(index=["source", "restart"], columns="task", values="score", aggfunc="mean")


def correlations(runs: pd.DataFrame, targets: list[str], probes: list[str], alpha: float = 0.05) -> pd.DataFrame:
    table = score_table(runs)
    pairs, seen = [], set()
    for a in targets:
        for b in [*targets, *probes]:
            if a != b and frozenset((a, b)) not in seen and a in table and b in table:
                seen.add(frozenset((a, b)))
                pairs.append((a, b))
    rows = []
    for method, fn in (("spearman", stats.spearmanr), ("pearson", stats.pearsonr)):
        block = []
        for a, b in pairs:
            both = table[[a, b]].dropna()
            rho = p = np.nan
            constant = both[a].nunique() < 2 or both[b].nunique() < 2
            if len(both) >= 3 and not constant:
                res = fn(both[a], both[b])
                rho, p = float(res[0]), float(res[1])
            block.append({"task_a": a, "task_b": b, "method": method, "rho": rho, "p": p, "n": len(both)})
        if block:
            adjusted, reject = holm([r["p"] for r in block], alpha)
            for r, pa, rej in zip(block, adjusted, reject):
                r["p_holm"], r["significant"] = pa, bool(rej)
        rows += block
    return pd.DataFrame(rows, columns=["task_a", "task_b", "method", "rho", "p", "p_holm", "significant", "n"])


def matrix(corr: pd.DataFrame, method: str = "spearman") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Target × task matrix of rho and of significance marks, for the heatmap."""
    c = corr[corr["method"] == method]
    both = pd.concat([c, c.rename(columns={"task_a": "task_b", "task_b": "task_a"})])
    rho = both.pivot_table(index="task_a", columns="task_b", values="rho", aggfunc="first")
    sig = both.pivot_table(index="task_a", columns="task_b", values="significant", aggfunc="first")
    targets = list(dict.fromkeys(c["task_a"]))
    rho = rho.reindex(index=targets)
    return rho, sig.reindex(index=rho.index, columns=rho.columns).fillna(False).astype(bool)
