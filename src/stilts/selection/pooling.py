"""The prior's pooling of several grids: each grid's source effects on its own scale, weighted by how close the
grid's setting is to the user's, and the grids' own measurements of the ranked target where they have them.

1. Per grid g, the additive model (additive.fit) on g alone: source effects a_g,s with their variances, and the
   residuals r_g,t,s = z − a_g,s − b_g,t of every measured pair (g's normalised gains, its own scale).
2. Weights. A grid's closeness to the user's model (encoders.closeness: same encoder, same family, size
   distance, same method; stilts fine-tunes every parameter) gives w_g = exp(θ · features). θ is learned by
   leave-one-grid-out over the catalogue grids there are: each grid in turn plays the user (its encoder and
   method), the others are pooled with w(θ), and θ minimises the squared error of the pooled effects against
   the held-out grid's centred normalised gains, over THETAS; the smallest θ (Σ|θ|) within PARSIMONY of the
   lowest error is kept, so closeness counts only where it predicts clearly better (θ = 0: equal weights).
   Whatever θ is, a catalogue grid measured with the user's own encoder and method weighs at least
   SAME_FACTOR × the heaviest of the other catalogue grids, and a grid of the user's own (a study or imported
   results: not from the catalogue) OWN_FACTOR × the heaviest catalogue grid: most, as it was measured in the
   user's setting.
3. Pooled source effect: ā_s = Σ w_g a_g,s / Σ w_g over the grids that measured s; its variance
   Σ w_g² Var(a_g,s) / (Σ w_g)² plus τ_s² = Σ w_g (a_g,s − ā_s)² / Σ w_g, the grids' disagreement about s.
4. The ranked target itself: where other grids measured it (the same task name), its score after s gains
   c_t,s = Σ w_g r_g,t,s / (Σ w_g + KAPPA · mean weight) over those grids (shrunk as if KAPPA average grids had
   measured a residual of 0). The scored experiment's own pairs of the target are never used.
5. The top 3 as a set (diversify; when two grids or more are pooled): the first candidate is the best-scored;
   the second and third are chosen one by one to maximise the weighted mean, over scenarios, of the best
   normalised gain among those chosen. The scenarios are the other grids' rows of the target where they measured
   it, else every other target's row in every grid (a missing cell: the row's mean). Candidates that win on
   different kinds of target beat two that win together; a pick's score is raised just above the best candidate
   left out.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from stilts.selection import additive, encoders
from stilts.selection import grids as grids_

FEATURES = ("same_encoder", "same_family", "size_distance", "same_method")
SIGNS = np.array([1.0, 1.0, -1.0, 1.0])  # closer → heavier; a larger size distance → lighter
THETAS = [np.array(t) for t in itertools.product((0.0, 1.0, 2.0), (0.0, 0.5, 1.0, 2.0), (0.0, 0.5, 1.0),
                                                 (0.0, 0.5, 1.0, 2.0))]
PARSIMONY = 0.05  # θ: the smallest (Σ|θ|) within 5% of the lowest leave-one-grid-out error
SAME_FACTOR = 2.0  # a catalogue grid of the user's encoder and method: at least 2 × any other catalogue grid
TOP = 3  # the top of the ranking that diversify() chooses as a set
STEP = 1e-6  # the smallest score difference diversify() leaves between its picks
OWN_FACTOR = 2.0  # a grid of the user's own: 2 × the heaviest catalogue grid
KAPPA = 1.0
USER_METHOD = "full fine-tuning"


@dataclass
class GridEffects:
    name: str
    a: pd.Series  # source → effect
    a_cov: pd.DataFrame  # covariance of the source effects
    resid: pd.DataFrame  # target × source: z − a − b of the measured pairs


@dataclass
class Pool:
    """The grids' effects (all targets) and weights for one user's model; per ranked target, `for_target`."""
    grid_list: list
    effects: dict[str, GridEffects]
    weights: dict[str, float]  # grid → weight (sum 1)
    theta: np.ndarray
    _scored: dict = field(default_factory=dict)

    def for_target(self, target: str, scored: str | None) -> dict[str, GridEffects]:
        """The effects the target's ranking uses: the scored grid's refitted without its pairs of the target
        (every grid's, when `scored` is None)."""
        out = {}
        for g in self.grid_list:
            if scored is None or g.name == scored:
                key = (g.name, target)
                if key not in self._scored:
                    self._scored[key] = grid_effects(g, {target})
                if self._scored[key] is not None:
                    out[g.name] = self._scored[key]
            elif g.name in self.effects:
                out[g.name] = self.effects[g.name]
        return out


def grid_effects(grid: grids_.Grid, leave_out: set[str] = frozenset()) -> GridEffects | None:
    eff = additive.fit([grid], set(leave_out))
    if eff is None:
        return None
    z, _ = grids_.normalised(grid, leave_out)
    b = pd.Series(eff.b.to_numpy(), [t for _, t in eff.targets])
    resid = z.sub(eff.a.reindex(z.columns), axis=1).sub(b.reindex(z.index), axis=0)
    return GridEffects(grid.name, eff.a, eff.a_cov, resid)


def _features(grid, model: str | None, method: str) -> np.ndarray:
    f = encoders.closeness(grid.encoder, grid.method or USER_METHOD, model, method)
    return np.array([f[k] for k in FEATURES])


def _log_weights(feats: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """feats: grids × FEATURES (an unknown size distance: the mean of the known ones)."""
    f = feats.copy()
    col = f[:, 2]
    col[np.isnan(col)] = np.nanmean(col) if (~np.isnan(col)).any() else 0.0
    return f @ (theta * SIGNS)


def learn_theta(effects: dict[str, GridEffects], grid_list) -> np.ndarray:
    """θ by leave-one-grid-out over the catalogue grids (see the module's docstring); 0 with fewer than 3."""
    names = [g.name for g in grid_list if g.published and g.name in effects]
    if len(names) < 3:
        return THETAS[0]
    by_name = {g.name: g for g in grid_list}
    sources = sorted({s for n in names for s in effects[n].a.index})
    a = np.vstack([effects[n].a.reindex(sources).to_numpy(float) for n in names])
    losses = np.zeros(len(THETAS))
    for h_i, h in enumerate(names):
        others = [i for i in range(len(names)) if i != h_i]
        g = by_name[h]
        feats = np.vstack([_features(by_name[names[i]], g.encoder, g.method or USER_METHOD) for i in others])
        z, _ = grids_.normalised(g)
        z = z.reindex(columns=sources)
        rows = [(r, np.flatnonzero(~np.isnan(r))) for r in z.to_numpy(float)]
        for k, theta in enumerate(THETAS):
            w = np.exp(_log_weights(feats, theta))
            sub = a[others]
            have = ~np.isnan(sub)
            pooled = np.where(have, sub, 0.0).T @ w / np.maximum(have.T @ w, 1e-12)
            for r, m in rows:
                if len(m) >= 2:
                    p, y = pooled[m], r[m]
                    losses[k] += float(np.sum(((p - p.mean()) - (y - y.mean())) ** 2))
    near = np.flatnonzero(losses <= losses.min() * (1 + PARSIMONY))
    return THETAS[int(min(near, key=lambda k: (float(np.abs(THETAS[k]).sum()), k)))]


def prepare(grid_list, model: str | None, method: str = USER_METHOD) -> Pool:
    """Every grid's effects and its weight for a user whose encoder is `model`, adapted by `method`."""
    effects = {g.name: e for g in grid_list if (e := grid_effects(g)) is not None}
    theta = learn_theta(effects, grid_list)
    published = [g for g in grid_list if g.published]
    log_w = _log_weights(np.vstack([_features(g, model, method) for g in published]), theta) \
        if published else np.array([])
    w = dict(zip([g.name for g in published], np.exp(log_w - (log_w.max() if len(log_w) else 0.0))))
    same = {g.name for g in published if encoders.same(g.encoder, model) and
            (g.method or USER_METHOD).lower() == method.lower()}
    floor = SAME_FACTOR * max((v for n, v in w.items() if n not in same), default=0.0)
    w |= {n: max(w[n], floor) for n in same}
    top = max(w.values(), default=1.0)
    w |= {g.name: OWN_FACTOR * top for g in grid_list if not g.published}
    total = sum(w.values())
    return Pool(grid_list, effects, {n: v / total for n, v in w.items()}, theta)


def pooled_effects(effects: dict[str, GridEffects], weights: dict[str, float], candidates: list[str]):
    """candidate → (ā, variance, the grids that measured it); None for a candidate no grid measured."""
    out = {}
    for c in candidates:
        rows = [(weights[n], e.a[c], e.a_cov.at[c, c]) for n, e in effects.items() if c in e.a.index]
        if not rows:
            out[c] = None
            continue
        w, a, v = (np.array(x, dtype=float) for x in zip(*rows))
        mean = float(w @ a / w.sum())
        var = float((w ** 2) @ v / w.sum() ** 2 + w @ (a - mean) ** 2 / w.sum())
        out[c] = (mean, var, [n for n, e in effects.items() if c in e.a.index])
    return out


def pooled_cov(effects: dict[str, GridEffects], weights: dict[str, float], pooled: dict, candidates: list[str]):
    """Covariance of the pooled effects: Σ_g w_g² Cov_g(s, s') / (W_s W_s') over the grids that measured both, and
    on the diagonal the variance of pooled_effects (with the grids' disagreement τ²)."""
    cov = np.zeros((len(candidates), len(candidates)))
    total = {c: sum(weights[n] for n in pooled[c][2]) for c in candidates if pooled[c] is not None}
    for i, c in enumerate(candidates):
        for j, d in enumerate(candidates):
            if i == j and pooled[c] is not None:
                cov[i, i] = pooled[c][1]
            elif i != j and pooled[c] is not None and pooled[d] is not None:
                both = [n for n in pooled[c][2] if n in pooled[d][2]]
                cov[i, j] = sum(weights[n] ** 2 * effects[n].a_cov.at[c, d] for n in both) / (total[c] * total[d])
    return cov


def target_correction(effects: dict[str, GridEffects], weights: dict[str, float], target: str,
                      candidates: list[str]) -> tuple[dict[str, float], list[str]]:
    """candidate → c_t,s from the other grids' measurements of the target; the grids that measured it."""
    measured = [n for n, e in effects.items() if target in e.resid.index]
    mean_w = float(np.mean(list(weights.values()))) if weights else 1.0
    out = {}
    for c in candidates:
        rows = [(weights[n], effects[n].resid.at[target, c]) for n in measured
                if c in effects[n].resid.columns and not math.isnan(effects[n].resid.at[target, c])]
        if rows:
            w, r = (np.array(x, dtype=float) for x in zip(*rows))
            out[c] = float(w @ r / (w.sum() + KAPPA * mean_w))
    return out, measured


def describe(weights: dict[str, float], names) -> str:
    """"g1 31%, g2 12%, …", heaviest first."""
    shown = sorted(names, key=lambda n: (-weights[n], n))
    return ", ".join(f"{n} {100 * weights[n]:.0f}%" for n in shown)


def diversify(scores: np.ndarray, effects: dict[str, GridEffects], weights: dict[str, float], target: str,
              candidates: list[str]) -> tuple[np.ndarray, dict[int, float]]:
    """(scores with candidates 2..TOP re-chosen as described in 5. of the module's docstring; index → the score
    a raised pick had)."""
    if len(candidates) <= 2:
        return scores, {}
    measured = [n for n, e in effects.items() if target in e.resid.index]
    blocks, w = [], []
    for n in measured or list(effects):
        e = effects[n]
        tasks = [target] if measured else [u for u in e.resid.index if u != target]
        gains = e.resid.loc[tasks].reindex(columns=candidates).add(e.a.reindex(candidates), axis=1)
        blocks.append(gains.to_numpy(float))
        w += [weights[n]] * len(tasks)
    m, w = (np.vstack(blocks), np.array(w)) if blocks else (np.empty((0, len(candidates))), np.array([]))
    keep = (~np.isnan(m)).sum(axis=1) >= 2
    m, w = m[keep], w[keep]
    if not len(m):
        return scores, {}
    filled = np.where(np.isnan(m), np.nanmean(m, axis=1, keepdims=True), m)
    chosen = [int(np.argmax(scores))]
    while len(chosen) < min(TOP, len(candidates)):
        cover = np.round(np.maximum(filled[:, chosen].max(axis=1)[:, None], filled).T @ w / w.sum(), 12)
        chosen.append(max((j for j in range(len(candidates)) if j not in chosen),
                          key=lambda j: (cover[j], scores[j])))  # equal cover: the better score
    out, raised = scores.astype(float).copy(), {}
    floor = max(float(out[i]) for i in range(len(out)) if i not in chosen) if len(out) > len(chosen) else -np.inf
    for k in range(1, len(chosen)):
        j, previous = chosen[k], out[chosen[k - 1]]
        value = min(max(out[j], floor + STEP * (TOP - k)), previous - STEP * 0.5)
        if value != out[j]:
            raised[j] = float(out[j])
            out[j] = value
    return out, raised
