"""This grid beside another (`stilts analyze --compare NAME`): the transfer cells both measured (same
intermediate task, same target or probe), how their effects rank together, and which intermediate tasks help
or hurt in each.

The other grid is an MLflow experiment (a study, imported results) or a shipped grid (`stilts grids`). Effects
are each grid's own deltas against its own baseline, in points, so grids measured on different scales and
encoders compare by rank: Spearman's ρ over the shared (source, task) cells, with a percentile bootstrap
interval over cells.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from stilts.analysis import transfer
from stilts.errors import StiltsError

BOOTSTRAP = 2000


def other_runs(params, name: str) -> pd.DataFrame:
    """The other grid's runs (analysis.collect's table): an experiment with runs, else a shipped grid."""
    from stilts import tracking
    from stilts.analysis.collect import collect
    from stilts.selection import published

    if tracking.experiment_exists(params, name):
        runs = collect(params, name)
        if not runs.empty:
            return runs
    if name in published.names():
        return published.runs(name)
    raise StiltsError(f"analyze --compare: '{name}' is neither an MLflow experiment with finished runs in "
                      f"{tracking.tracking_uri(params)} nor a shipped grid (`stilts grids`)")


def _rho_interval(a: np.ndarray, b: np.ndarray, alpha: float, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(BOOTSTRAP):
        i = rng.integers(0, len(a), len(a))
        if np.ptp(a[i]) > 0 and np.ptp(b[i]) > 0:
            draws.append(stats.spearmanr(a[i], b[i]).statistic)
    if not draws:
        return np.nan, np.nan
    return float(np.quantile(draws, alpha / 2)), float(np.quantile(draws, 1 - alpha / 2))


def compare(cells: pd.DataFrame, other_cells: pd.DataFrame, alpha: float = 0.05) -> dict:
    """Shared cells (both deltas with their intervals), ρ per role with its interval, agreement of signs, and
    each shared source's mean effect over the shared targets in both grids."""
    cols = ["source", "task", "role", "delta", "ci_low", "ci_high", "significant"]
    shared = cells[cols].merge(other_cells[cols], on=["source", "task"], suffixes=("", "_other"))
    shared = shared.dropna(subset=["delta", "delta_other"]).sort_values(["role", "task", "source"])
    out = {"shared": shared.reset_index(drop=True), "roles": {}}
    for role, g in shared.groupby("role"):
        a, b = g["delta"].to_numpy(float), g["delta_other"].to_numpy(float)
        res = {"n": len(g), "rho": np.nan, "p": np.nan, "ci": (np.nan, np.nan),
               "same_sign": float(np.mean(np.sign(a) == np.sign(b)))}
        if len(g) >= 3 and np.ptp(a) > 0 and np.ptp(b) > 0:
            sp = stats.spearmanr(a, b)
            res.update(rho=float(sp.statistic), p=float(sp.pvalue), ci=_rho_interval(a, b, alpha))
        out["roles"][role] = res
    t = shared[shared["role"] == "target"]
    out["per_source"] = t.groupby("source")[["delta", "delta_other"]].mean().sort_values("delta", ascending=False)
    return out


def section(result: dict, name: str, other: str, alpha: float) -> str:
    """The report's markdown section."""
    shared = result["shared"]
    lines = [f"\n## Beside `{other}`\n"]
    if shared.empty:
        lines.append(f"`{name}` and `{other}` measured no (intermediate task, target or probe) cell in common.\n")
        return "\n".join(lines)
    ci = f"{100 * (1 - alpha):.0f}%"
    lines.append(f"Cells both grids measured: {len(shared)} ({shared['source'].nunique()} intermediate tasks: "
                 f"{', '.join(sorted(shared['source'].unique()))}; tasks: {', '.join(dict.fromkeys(shared['task']))}). "
                 f"Δ = mean over restarts minus the grid's own baseline mean, in points; [{ci} interval across "
                 f"restarts, Welch]; `*` p < {alpha}.\n")
    table = ["| source | task | role | Δ here | Δ in " + other + " |", "|---|---|---|---|---|"]
    for r in shared.itertuples():
        table.append(f"| {r.source} | {r.task} | {r.role} | {_delta(r.delta, r.ci_low, r.ci_high, r.significant)} | "
                     f"{_delta(r.delta_other, r.ci_low_other, r.ci_high_other, r.significant_other)} |")
    lines.append("\n".join(table) + "\n")
    for role, res in result["roles"].items():
        if np.isnan(res["rho"]):
            lines.append(f"- {role}s: {res['n']} shared cells, too few (or constant) to rank; the sign of Δ "
                         f"agrees in {100 * res['same_sign']:.0f}%.")
        else:
            lines.append(f"- {role}s: Spearman ρ = {res['rho']:+.2f} over {res['n']} shared cells ({ci} bootstrap "
                         f"interval {res['ci'][0]:+.2f} to {res['ci'][1]:+.2f}; p = {res['p']:.2f}); the sign of Δ "
                         f"agrees in {100 * res['same_sign']:.0f}% of them.")
    ps = result["per_source"]
    if not ps.empty:
        lines.append("\nMean Δ over the shared targets, per intermediate task (points):\n")
        lines.append("| source | here | in " + other + " |\n|---|---|---|")
        lines += [f"| {s} | {r.delta:+.1f} | {r.delta_other:+.1f} |" for s, r in ps.iterrows()]
    return "\n".join(lines) + "\n"


def _delta(d: float, lo: float, hi: float, significant: bool) -> str:
    interval = f" [{lo:+.1f}, {hi:+.1f}]" if np.isfinite(lo) and np.isfinite(hi) else ""
    return f"{d:+.1f}{'*' if significant else ''}{interval}"


def build(params, cells: pd.DataFrame, name: str, other: str) -> tuple[str, pd.DataFrame]:
    """(markdown section, shared-cells table) for the report."""
    from stilts.analysis import degenerate

    runs = other_runs(params, other)
    for col in ("majority_score", "pred_classes"):  # a grid may not record them: then nothing is flagged
        runs[col] = runs[col] if col in runs else np.nan
    runs = degenerate.flag(runs, params.analysis.degenerate_margin)
    if not params.analysis.include_degenerate:
        runs = runs[~runs["degenerate"]]
    result = compare(cells, transfer.cell_stats(runs, params.analysis.alpha), params.analysis.alpha)
    return section(result, name, other, params.analysis.alpha), result["shared"]
