"""Should I train an intermediate task at all? The target effect b_t of the prior's model, predicted
for a target from cheap facts about it, fitted on the other targets whose gains are against a baseline.

Facts (each used when the ranked target has it):
  headroom          −log(1 − s), s = the score of the target's first baseline run (lowest restart) in
                    the scored experiment or a prior grid, capped at 0.995: one run without an
                    intermediate task, no transfer run
  log_train_size    log of the training-set size the task registry records for the task
  task_type         the registry's task type, one indicator per type
A training target without a continuous fact gets the mean of those that have it. Ridge regression
(λ = 1 on the standardised facts, none on the intercept) of b on the facts; the predictive variance
is τ² (1 + xᵀ (XᵀX + Λ)⁻¹ x), τ² = residual sum of squares / (targets − effective parameters).
Without facts this is the mean target effect with its spread. Fewer than 2 baseline-anchored
targets: no prediction.
"""

from __future__ import annotations

import math

import numpy as np

from stilts.selection import ridge

LAMBDA = 1.0
CAP = 0.995
CONTINUOUS = ("headroom", "log_train_size")


def facts(task: str, baseline: float | None, train_size: int | None = None) -> dict:
    """`train_size`: the size counted in the task's data, for a task whose declaration does not state it."""
    from stilts.tasks import registry

    out = {}
    if baseline is not None and math.isfinite(baseline):
        out["headroom"] = -math.log(1.0 - min(baseline, CAP))
    if task in registry.names():
        t = registry.get(task)
        size = t.train_size or train_size
        if size:
            out["log_train_size"] = math.log(size)
        out["task_type"] = t.type
    return out


def _design(rows: list[dict], held_out: dict) -> tuple[np.ndarray, np.ndarray]:
    """Standardised continuous facts and type indicators, for the training rows and the held-out target."""
    cols_train, col_held = [], []
    for name in CONTINUOUS:
        if name not in held_out:
            continue
        values = np.array([r.get(name, np.nan) for r in rows], dtype=float)
        if np.isnan(values).all():
            continue
        values = np.where(np.isnan(values), np.nanmean(values), values)
        sd = values.std()
        if sd <= 0:
            continue
        cols_train.append((values - values.mean()) / sd)
        col_held.append((held_out[name] - values.mean()) / sd)
    if "task_type" in held_out:
        for kind in sorted({r.get("task_type") for r in rows} - {None}):
            cols_train.append(np.array([float(r.get("task_type") == kind) for r in rows]))
            col_held.append(float(held_out["task_type"] == kind))
    x = np.column_stack([np.ones(len(rows)), *cols_train])
    return x, np.array([1.0, *col_held])


def target_effect(eff, grid_list, target: str, baseline: float | None,
                  train_size: int | None = None) -> tuple[float, float] | None:
    """(predicted b_t, its predictive variance) for the ranked target, from the anchored targets of `eff`."""
    by_name = {g.name: g for g in grid_list}
    rows, b = [], []
    for (grid, task), name in zip(eff.targets, eff.b.index):
        if not eff.anchored[name]:
            continue
        first = by_name[grid].first_baseline
        rows.append(facts(task, float(first[task]) if task in first.index else None))
        b.append(float(eff.b[name]))
    if len(b) < 2:
        return None
    x, x_held = _design(rows, facts(target, baseline, train_size))
    y = np.array(b)
    beta, inv, tau2 = ridge.fit(x, y, np.array([0.0] + [LAMBDA] * (x.shape[1] - 1)))
    tau2 = tau2 if tau2 is not None else float(np.var(y))
    return float(x_held @ beta), max(tau2, 1e-6) * (1.0 + float(x_held @ inv @ x_held))
