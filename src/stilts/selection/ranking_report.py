"""What `stilts rank` prints, and report.md's "Which intermediate task?" section with its regret plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stilts.selection.rank import RANKING, RANKING_EVAL, WITHIN

PLOT = "ranking_regret.png"
MEASURES = ("regret_at_1", "regret_at_3", "ndcg", "spearman", "auroc", "brier")
HEADERS = ("Regret@1", "Regret@3", "NDCG", "Spearman", "AUROC", "Brier")


def _fmt(x) -> str:
    return "" if pd.isna(x) else f"{x:.3f}"


def _top_line(target: str, method: str, g: pd.DataFrame) -> str:
    lacks = g["data"].ne("present") if "data" in g else pd.Series(False, g.index)
    top = ", ".join(f"{c} ({s:.3f}{', needs data' if x else ''})"
                    for c, s, x in zip(g["candidate"][:3], g["score"][:3], lacks[:3]))
    line = f"{target} [{method}]: {top}"
    first = g.iloc[0]
    if "p_beats_baseline" in g and pd.notna(first["p_beats_baseline"]):
        line += (f"  · P({first['candidate']} beats the baseline) {first['p_beats_baseline']:.2f}, normalised gain "
                 f"{first['gain_low']:+.2f}…{first['gain_high']:+.2f} (80%), P(best) {first['p_best']:.2f}")
    if method == "prior" and str(first.get("basis", "")).startswith("grids: "):  # which grids, how much each
        line += f"\n  {first['candidate']} from {first['basis']}"
    return line


def summary(result: dict) -> str:
    """What `stilts rank` prints: the top 3 per target and method, and the scores against the grid."""
    lines = [_top_line(t, m, g) for (t, m), g in result["ranking"].groupby(["target", "method"], sort=False)]
    lines += [f"note: {n}" for n in result.get("notes", [])]
    table = result["evaluation"]
    if table.empty:
        lines.append(f"not scored: experiment '{result['experiment']}' holds no transfer results for two or more "
                     "ranked candidates of any target")
        return "\n".join(lines)
    lines.append(f"against experiment '{result['experiment']}' (mean over targets; AUROC, Brier over all pairs):")
    for row in table[table["target"] == "mean"].itertuples():
        lines.append(f"  {row.method:<12} " + "  ".join(f"{h.lower()} {_fmt(getattr(row, m))}"
                                                          for m, h in zip(MEASURES, HEADERS)))
    return "\n".join(lines)


def plot(table: pd.DataFrame, path: Path) -> None:
    """Regret@1 and Regret@3 per target (and their mean), one bar per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = list(dict.fromkeys(table["target"]))
    methods = list(dict.fromkeys(table["method"]))
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 0.55 * len(targets) * 2 + 2), 3.4), sharey=False)
    width = 0.8 / len(methods)
    for ax, measure, title in zip(axes, ("regret_at_1", "regret_at_3"), ("Regret@1", "Regret@3")):
        for i, method in enumerate(methods):
            rows = table[table["method"] == method].set_index("target")
            values = [100 * rows.at[t, measure] if t in rows.index else np.nan for t in targets]
            ax.bar(np.arange(len(targets)) + (i - (len(methods) - 1) / 2) * width, values, width, label=method,
                   color="0.75" if method == "random" else None)
        ax.set_xticks(range(len(targets)), targets, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{title} (%; lower is better)", fontsize=9, loc="left")
        ax.tick_params(axis="y", labelsize=8)
    axes[1].legend(fontsize=7, frameon=False)
    fig.savefig(path, dpi=120, bbox_inches="tight", pad_inches=0.08)
    plt.close(fig)


def _methods_table(table: pd.DataFrame) -> list[str]:
    lines = ["| method | " + " | ".join(HEADERS) + " |", "|---" * (len(HEADERS) + 1) + "|"]
    for row in table[table["target"] == "mean"].itertuples():
        lines.append(f"| {row.method} | " + " | ".join(_fmt(getattr(row, m)) for m in MEASURES) + " |")
    return lines


def _cross_grid(table: pd.DataFrame) -> list[str]:
    """The prior from other grids against the prior fitted on the scored grid itself."""
    mean = table[table["target"] == "mean"].set_index("method")
    if WITHIN not in mean.index or "prior" not in mean.index:
        return []
    a, b = mean.loc["prior"], mean.loc[WITHIN]
    parts = [f"{h} {_fmt(a[m])} vs {_fmt(b[m])}" for m, h in zip(MEASURES[:4], HEADERS[:4])]
    return [f"\nCross-grid: the prior from the prior grids against `{WITHIN}`, the prior fitted on this experiment "
            f"itself (both leave-one-target-out, same targets and candidates): " + "; ".join(parts) + ".\n"]


def _predicted_and_measured(ranking: pd.DataFrame) -> list[str]:
    """The ranking's predictions next to what the experiment measured, for every measured pair."""
    if "measured_gain" not in ranking or ranking["measured_gain"].isna().all():
        return []
    rows = ranking[ranking["measured_gain"].notna()].sort_values(["target", "method", "rank"], kind="stable")
    lines = ["\nPredicted and measured (the prediction never saw the target's own runs; the predicted gain is "
             "normalised by the spread of gains on other targets, the measured one is in the target's metric):\n",
             "| target | method | rank | candidate | P(beats baseline) | predicted gain (80%) | measured gain | "
             "beat the baseline |", "|---|---|---|---|---|---|---|---|"]
    for r in rows.itertuples():
        interval = "" if pd.isna(r.gain_low) else f"{r.gain_low:+.2f}…{r.gain_high:+.2f}"
        lines.append(f"| {r.target} | {r.method} | {r.rank} | {r.candidate} | {_fmt(r.p_beats_baseline)} | "
                     f"{interval} | {r.measured_gain:+.4f} | {'yes' if r.measured_beats else 'no'} |")
    return lines


def report_section(out: Path, plot_dir: Path | None = None) -> str:
    """report.md's "Which intermediate task?" section from the tables in `out` (if a ranking ran); the
    regret plot goes to `plot_dir`."""
    lines = ["\n## Which intermediate task? (ranking without the grid)\n"]
    if not (out / RANKING).is_file():
        lines.append("No ranking in this study: set `rank.targets` in params (a `rank` stage), or run `stilts rank "
                     "--targets T1,T2`. It ranks candidate intermediate tasks for each target from measured grids "
                     "(prior), dataset similarity (semb), LogME on each candidate checkpoint's features (logme), or "
                     "all of them (hybrid).\n")
        return "\n".join(lines)
    ranking = pd.read_csv(out / RANKING)
    lines.append("Top 3 candidates per target (rank 1 first; `reports/ranking.csv` has every score, where it came "
                 "from, and the harm prediction):\n")
    lines.append("| target | method | 1 | 2 | 3 | P(1 beats baseline) |\n|---|---|---|---|---|---|")
    for (target, method), g in ranking.sort_values("rank", kind="stable").groupby(["target", "method"], sort=False):
        top = list(g["candidate"][:3]) + [""] * (3 - min(3, len(g)))
        p = g["p_beats_baseline"].iloc[0] if "p_beats_baseline" in g else np.nan
        lines.append(f"| {target} | {method} | " + " | ".join(top) + f" | {_fmt(p)} |")
    lines += _predicted_and_measured(ranking)
    table = pd.read_csv(out / RANKING_EVAL) if (out / RANKING_EVAL).is_file() else pd.DataFrame()
    if table.empty:
        lines.append("\nNot scored: the experiment holds no transfer results for these target/candidate pairs.\n")
        return "\n".join(lines)
    lines.append("\nAgainst the measured grid (mean score over restarts after each candidate), mean over targets: "
                 "Regret@k = (best measured − best measured among the top k) / best; NDCG with gains = measured "
                 "mean − the lowest candidate's; Spearman of scores vs measured means; AUROC and Brier of "
                 "P(beats the baseline) over all (candidate, target) pairs; `random` = the exact expectation of a "
                 "random order. Lower regret and Brier, higher NDCG, Spearman and AUROC are better.\n")
    lines += _methods_table(table)
    lines += _cross_grid(table)
    if plot_dir is not None:
        plot(table, plot_dir / PLOT)
        lines.append(f"\n![regret per target and method]({PLOT})\n")
    lines.append("\nPer target:\n")
    lines.append("| target | method | " + " | ".join(HEADERS) + " | candidates |\n" + "|---" * (len(HEADERS) + 3) + "|")
    for row in table.itertuples():
        n = "" if pd.isna(row.n_candidates) else f"{row.n_candidates:g}"
        lines.append(f"| {row.target} | {row.method} | " + " | ".join(_fmt(getattr(row, m)) for m in MEASURES)
                     + f" | {n} |")
    return "\n".join(lines) + "\n"
