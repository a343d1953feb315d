"""The analysis stage: MLflow → tables, heatmaps and report.md under reports/, logged as an analysis run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from stilts import tracking
from stilts.analysis import compare, correlate, degenerate, plots, provenance, rq4, transfer
from stilts.analysis.collect import SUPERSEDED, collect
from stilts.errors import StiltsError
from stilts.io import writing


@contextlib.contextmanager
def _staging(out: Path):
    """Write everything into a temporary folder first; move the files in only when all succeeded."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".staging-"))
    try:
        with writing(out):
            yield tmp
            for f in tmp.iterdir():
                os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _ordered(df: pd.DataFrame, role: str, preferred: list[str]) -> list[str]:
    present = list(dict.fromkeys(df.loc[df["role"] == role, "task"]))
    return [t for t in preferred if t in present] + sorted(t for t in present if t not in preferred)


def _fmt(df: pd.DataFrame, digits: int = 1, signed: bool = True) -> str:
    """A markdown table without extra dependencies."""
    if df.empty:
        return "_(no rows)_\n"
    cols = [df.index.name or ""] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, row in df.iterrows():
        cells = [f"{v:.{digits}f}" if isinstance(v, float) and np.isfinite(v) and not signed else
                 f"{v:+.{digits}f}" if isinstance(v, float) and np.isfinite(v) else
                 ("" if isinstance(v, float) else str(v)) for v in row]
        lines.append("| " + " | ".join([str(idx), *cells]) + " |")
    return "\n".join(lines) + "\n"


def _fmt_counts(df: pd.DataFrame) -> str:
    out = df.copy()
    out["rate"] = [f"{100 * v:.0f}%" for v in out["rate"]]
    out["runs"], out["degenerate"] = out["runs"].astype(int).astype(str), out["degenerate"].astype(int).astype(str)
    return _fmt(out)


def build(params, experiment: str | None = None) -> dict:
    """Compute every table of the analysis; returns them in a dict (nothing written)."""
    df = collect(params, experiment)
    if df.empty:
        raise StiltsError(f"mlflow experiment '{experiment or params.mlflow.experiment}' has no finished "
                          "target/probe runs to analyse")
    df = degenerate.flag(df, params.analysis.degenerate_margin)
    used = df if params.analysis.include_degenerate else df[~df["degenerate"]]
    targets = _ordered(df, "target", params.tasks.target)
    probes = _ordered(df, "probe", params.tasks.probe)
    cells = transfer.cell_stats(used, params.analysis.alpha)
    m = transfer.matrix(cells, targets, probes)
    by_source, by_task = degenerate.rates(df)
    corr = correlate.correlations(used, targets, probes, params.analysis.alpha)
    inter = tracking.search_runs(params, experiment, "tags.`stilts.role` = 'intermediate' and "
                                 "attributes.status = 'FINISHED'")
    if SUPERSEDED in inter:  # their checkpoints were trained again
        inter = inter[inter[SUPERSEDED].isna()]
    full = {}
    if not inter.empty and "params.data.train_examples" in inter:
        full = {s: int(n) for s, n in zip(inter["tags.stilts.source"], inter["params.data.train_examples"])
                if str(n).isdigit()}
    sizes = rq4.size_table(cells, full)
    return {"sizes": sizes, "intermediate_runs": inter, "runs": df, "cells": cells, "matrix": m,
            "per_source": transfer.per_source(cells), "correlations": corr,
            "degenerate_by_source": by_source, "degenerate_by_task": by_task, "targets": targets, "probes": probes}


def _report_md(r: dict, params, experiment: str) -> str:
    df, cells, m = r["runs"], r["cells"], r["matrix"]
    n_restarts = df.groupby(["source", "task"]).size()
    sig = m.copy().astype(object)
    sig_cells = cells.set_index(["source", "task"])["significant"] if not cells.empty else {}
    lines = [f"# stilts report — experiment `{experiment}`\n",
             f"{len(df)} finished runs: {df['source'].nunique()} sources (incl. baseline `none`), "
             f"{len(r['targets'])} targets, {len(r['probes'])} probes, "
             f"{int(n_restarts.min()) if len(n_restarts) else 0}–{int(n_restarts.max()) if len(n_restarts) else 0} "
             f"restarts per cell. Scores are dev-set major metrics; deltas are in points (×100) against the "
             f"baseline mean. `*` = Welch t-test across restarts, p < {params.analysis.alpha} (uncorrected).\n",
             provenance.line(r["provenance"])]
    lines.append("## RQ1 — Which intermediate tasks help which targets?\n")
    tm = m[[c for c in [*r["targets"], "avg_target"] if c in m.columns]]
    for src in sig.index:
        for task in sig.columns:
            key = (src, task)
            star = "*" if task != "avg_target" and key in sig_cells and bool(sig_cells[key]) else ""
            val = m.loc[src, task]
            sig.loc[src, task] = f"{val:+.1f}{star}" if pd.notna(val) else ""
    lines.append(_fmt(sig[[c for c in tm.columns]]) if not tm.empty else "_(no target runs)_\n")
    ps = r["per_source"]
    if not ps.empty:
        best = ps.index[0]
        lines.append(f"\nBest average transfer: **{best}** ({ps.loc[best, 'avg_delta']:+.1f} points over "
                     f"{len(r['targets'])} targets; {ps.loc[best, 'wins']} wins, {ps.loc[best, 'losses']} losses). "
                     f"Worst: **{ps.index[-1]}** ({ps['avg_delta'].iloc[-1]:+.1f}).\n")
        ps = ps.copy()
        for c in ("wins", "losses", "significant_wins", "significant_losses"):
            ps[c] = ps[c].astype(int).astype(str)
        lines.append(_fmt(ps, 1))
    lines.append("\n![transfer](transfer_heatmap.png)\n")
    lines.append("\n## RQ2 — Which skills does intermediate training change (probing)?\n")
    pm = sig[[c for c in r["probes"] if c in sig.columns]]
    pm = pm[(pm != "").any(axis=1)]  # sources without probing cells (data-size variants)
    lines.append(_fmt(pm) if not pm.empty else "_(no probing runs)_\n")
    lines.append("\n![probing](probing_heatmap.png)\n")
    lines.append(_rq3(r, params))
    lines.append(_rq4(r))
    base = df[df["source"] == "none"].groupby("task")["score"].agg(["mean", "std", "count"]) * [100, 100, 1]
    lines.append("\n## Baseline (no intermediate task)\n")
    base = base.rename(columns={"count": "n"})
    base["n"] = base["n"].astype(int).astype(str)
    lines.append(_fmt(base, signed=False))
    lines.append("\n## Degenerate runs\n")
    deg = df[df["degenerate"]]
    lines.append(f"{len(deg)} of {len(df)} runs ({100 * len(deg) / len(df):.1f}%) are degenerate (dev score ≤ "
                 f"majority/chance + {params.analysis.degenerate_margin:.2f}, or a single predicted class); "
                 f"they are {'included in' if params.analysis.include_degenerate else 'excluded from'} the "
                 f"numbers above (`analysis.include_degenerate`). Per source:\n")
    lines.append(_fmt_counts(r["degenerate_by_source"]))
    lines.append("\nPer task:\n")
    lines.append(_fmt_counts(r["degenerate_by_task"]))
    lines.append(r.get("ranking_section", ""))
    lines += r.get("compare_sections", [])
    lines.append("\n## Caveats\n")
    lines.append(f"- n per cell = number of restarts ({params.study.restarts} configured); with so few restarts the "
                 "t-test has little power, and no multiple-comparison correction is applied to the RQ1/RQ2 flags.\n"
                 "- Each (source, task, restart) cell's current run is used: the one its result file names, else the "
                 "latest finished run not tagged `stilts.superseded_by`.\n")
    return "\n".join(lines)


def _rq3(r: dict, params) -> str:
    corr = r["correlations"]
    sp = corr[corr["method"] == "spearman"] if not corr.empty else corr
    models = correlate.score_table(r["runs"][r["runs"]["source"] != "none"])
    out = ["\n## RQ3 — Do probing scores explain target scores?\n",
           f"Spearman correlation across the intermediate-trained models (one row per source × restart, "
           f"n = {len(models)}), each target against every other target and every probe; Holm–Bonferroni "
           f"over all {len(sp)} pairs at α = {params.analysis.alpha}. Pearson is in correlations.csv.\n"]
    if sp.empty or sp["rho"].isna().all():
        out.append("_Not enough intermediate-trained models (need ≥ 3 with varying scores) to correlate._\n")
        return "\n".join(out)
    for target in dict.fromkeys(sp["task_a"]):
        rows = sp[((sp["task_a"] == target) | (sp["task_b"] == target)) & sp["significant"]]
        if rows.empty:
            best = sp[(sp["task_a"] == target) | (sp["task_b"] == target)].dropna(subset=["rho"])
            top = best.loc[best["rho"].abs().idxmax()] if not best.empty else None
            note = (f" (strongest: {top['task_b'] if top['task_a'] == target else top['task_a']}, "
                    f"ρ = {top['rho']:+.2f}, Holm p = {top['p_holm']:.2f})") if top is not None else ""
            out.append(f"- **{target}**: no significant correlate{note}.")
        else:
            items = ", ".join(f"{(x.task_b if x.task_a == target else x.task_a)} (ρ = {x.rho:+.2f}, "
                              f"Holm p = {x.p_holm:.3f})" for x in rows.itertuples())
            out.append(f"- **{target}**: {items}.")
    out.append("\n![correlations](correlation_heatmap.png)\n")
    return "\n".join(out)


def _rq4(r: dict) -> str:
    out = ["\n## RQ4 — Does intermediate data size, or forgetting, limit transfer?\n", "### Data size\n"]
    sizes = r["sizes"]
    if sizes.empty:
        out.append("No data-size sweep in this study (set `study.size_sweep_tasks` and `study.size_sweep_sizes`; "
                   "the paper used 1,250 · 2^k examples).\n")
    else:
        for task, g in sizes.groupby("source_task"):
            pts = ", ".join(f"{int(n):,} → {d:+.1f}" for n, d in zip(g["size"], g["avg_target_delta"]))
            trend = np.corrcoef(np.log2(g["size"]), g["avg_target_delta"])[0, 1] if len(g) > 2 else np.nan
            out.append(f"- **{task}** (examples → avg. target Δ): {pts}"
                       + (f"; correlation with log2(size) {trend:+.2f}" if np.isfinite(trend) else "") + ".")
        out.append("\n![size](size_sweep.png)\n")
    out.append("\n### Forgetting (masked-LM loss)\n")
    inter = r["intermediate_runs"]
    cols = ["metrics.mlm_loss_before", "metrics.mlm_loss_after"]
    if not inter.empty and all(c in inter for c in cols) and inter[cols].notna().all(axis=1).any():
        ok = inter.dropna(subset=cols)
        for src, g in ok.groupby("tags.stilts.source"):
            out.append(f"- **{src}**: MLM loss {g[cols[0]].mean():.3f} before → {g[cols[1]].mean():.3f} after "
                       f"intermediate training (n = {len(g)}).")
    else:
        out.append("No masked-LM losses were recorded: the encoder has no MLM head (the embedded MiniLM is a "
                   "sentence-embedding model), or MLM evaluation was not enabled, so forgetting of pretraining "
                   "cannot be measured here.\n")
    return "\n".join(out)


def run(params, experiment: str | None = None, out: Path | None = None, compare_with: tuple[str, ...] = ()) -> Path:
    """Write the reports (each file atomically) to `out`: reports/ for the study's experiment,
    reports/<experiment>/ for another one (e.g. imported results); `compare_with`: grids to set beside it."""
    experiment = experiment or params.mlflow.experiment
    r = build(params, experiment) | {"provenance": provenance.facts(params.root)}
    compared = {other: compare.build(params, r["cells"], experiment, other) for other in compare_with}
    r["compare_sections"] = [section for section, _ in compared.values()]
    if out is None:
        out = params.path("reports") if experiment == params.mlflow.experiment else params.path("reports") / experiment
    summary = {"runs": int(len(r["runs"])), "degenerate_runs": int(r["runs"]["degenerate"].sum()),
               "avg_target_delta": {s: (None if pd.isna(v) else round(float(v), 3))
                                    for s, v in r["matrix"].get("avg_target", pd.Series(dtype=float)).items()}}
    with _staging(out) as tmp:
        r["matrix"].to_csv(tmp / "transfer_matrix.csv", float_format="%.4f")
        r["cells"].to_csv(tmp / "transfer_cells.csv", index=False, float_format="%.6f")
        r["runs"].to_csv(tmp / "runs.csv", index=False)
        cols = ["source", "task", "role", "restart", "score", "majority_score", "pred_classes", "degenerate",
                "degenerate_reason", "run_id"]
        r["runs"][cols].to_csv(tmp / "degenerate.csv", index=False)
        marks = None
        if not r["cells"].empty:
            marks = r["cells"].pivot(index="source", columns="task", values="significant").reindex(
                index=r["matrix"].index, columns=r["matrix"].columns).fillna(False)
        targets_only = [c for c in [*r["targets"], "avg_target"] if c in r["matrix"].columns]
        probes_only = [c for c in r["probes"] if c in r["matrix"].columns]
        plots.heatmap(r["matrix"][targets_only], tmp / "transfer_heatmap.png", "Transfer to targets: Δ vs. baseline "
                      "(points)", None if marks is None else marks[targets_only])
        plots.heatmap(r["matrix"][probes_only], tmp / "probing_heatmap.png", "Probing: Δ vs. baseline (points)",
                      None if marks is None else marks[probes_only])
        r["correlations"].to_csv(tmp / "correlations.csv", index=False, float_format="%.6f")
        r["sizes"].to_csv(tmp / "size_sweep.csv", index=False, float_format="%.4f")
        for other, (_, shared) in compared.items():
            shared.to_csv(tmp / f"compare_{other}.csv", index=False, float_format="%.4f")
        rq4.plot(r["sizes"], tmp / "size_sweep.png")
        rho, sig = correlate.matrix(r["correlations"])
        plots.heatmap(rho, tmp / "correlation_heatmap.png", "Spearman ρ across models (* Holm-significant)", sig,
                      fmt="{:+.2f}", limit=1.0)
        from stilts.selection import select_record
        from stilts.selection.ranking_report import report_section

        r["ranking_section"] = report_section(out, tmp)  # from the rank stage's tables, when it ran
        r["ranking_section"] += select_record.report_section(params)  # a selection's trail, when there is one
        (tmp / "report.md").write_text(_report_md(r, params, experiment), encoding="utf-8")
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        (tmp / provenance.FILE).write_text(provenance.text(r["provenance"]))  # apart: it changes with each commit
    with tracking.tracked(params, "analysis", {"role": "analysis", "source": "-", "task": "-"}, experiment) as run_:
        run_.log_metrics({"runs": summary["runs"], "degenerate_runs": summary["degenerate_runs"]})
        for f in sorted(out.iterdir()):
            if f.is_file() and not f.name.startswith("."):
                run_.log_artifact(f, "reports")
    return out
