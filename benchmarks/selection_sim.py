"""`stilts select`'s rule simulated on measured grids with per-restart results: what the final choice costs.

    python benchmarks/selection_sim.py --grid paper-2020 --grid taskweb-roberta-base [--grid NAME=CSV] \\
        [--reps 20] [--budgets 0,2,4,6,8,10] [--plot docs/x.png]

A grid is a name of the catalogue that is here (`stilts grids`; TaskWeb's after `stilts grids fetch taskweb`)
or NAME=CSV, a file in import-results format.

Each target of each grid is held out in turn. Its prior comes from the grid's other targets only (leave one
target out: selection.prior_belief.build, with the grid minus the target), and with --pool from whole other
grids of the catalogue too, pooled as `stilts rank` and `stilts select` pool them (other grids' measurements of
the target included; the held-out grid's never); its own results reach the rule only
as simulated runs: a run of an arm returns one of that cell's measured restarts, drawn without replacement
(in a seeded random order per repetition; once all were drawn, the order starts again). The baseline's first
simulated run is the headroom fact of the harm model. Truth = the cell's mean over all its restarts.

Policies, at each budget B (training runs; a candidate's first run costs its intermediate run too, later ones
reuse the checkpoint; the baseline costs one, also on a grid without baseline runs, where no policy sees its
result: on a real target both `stilts select` and `--write-study` train it; --free-baseline: it is not paid):
  select   the rule of `stilts select` (selection.rule): the baseline first, then the best plan of the next
           runs; answer = the arm with the highest expected score (once a candidate ran, among those that ran)
  prior    no run: the answer of the prior alone (B = 0)
  fixed    what `stilts rank --write-study --top K --restarts 1` trains: the baseline and the prior's top K
           candidates once each, K = the most that fit (2K + 1 ≤ B); answer = the best measured mean.
           `fixed+posterior`: the same runs, answered by the posterior
  random   arms in a seeded random order, one run each while the budget allows; answer = the best measured mean
  bound    not a policy: the truly best of the arms `fixed` runs (it reads the truth), what any answer from the
           baseline and the prior's top K can reach
Regret of an answer = (best true score − the answer's true score) / best true score, over the baseline and
the candidates. On grids with baselines: the AUROC of P(the answer beats the baseline) (for a "none" answer:
P(the best candidate beats it)) against whether that candidate truly beats it, and the accuracy of the "train
none" decision (the answer is none exactly when no candidate beats the baseline in truth).
Prints markdown tables; --csv writes one row per (grid, target, repetition, policy, budget).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from stilts.selection import belief as belief_
from stilts.selection import grids as grids_
from stilts.selection import pooling, prior_belief, published, rule
from stilts.selection.evaluate import auroc

BASELINE = "none"
OPTIONS = rule.Options()


class Cell:
    """A held-out target: its arms, their restarts, the truth, and the draws of one repetition."""

    def __init__(self, runs: pd.DataFrame, target: str, rep: int, grid: str):
        t = runs[(runs["task"] == target) & (runs["source"] != target)]
        self.restarts = {s: g.sort_values("restart")["score"].to_numpy(float) for s, g in t.groupby("source")}
        self.has_baseline = BASELINE in self.restarts
        self.candidates = sorted(s for s in self.restarts if s != BASELINE)
        self.arms = [BASELINE, *self.candidates]
        self.truth = np.array([self.restarts[a].mean() if a in self.restarts else -np.inf for a in self.arms])
        rng = np.random.default_rng(zlib.crc32(f"{grid}/{target}/{rep}".encode()))
        self.order = {a: rng.permutation(len(v)) for a, v in self.restarts.items()}
        self.rng = rng

    def draw(self, arm: int, k: int) -> float:
        """The k-th simulated run of an arm (k = 0, 1, …)."""
        values = self.restarts[self.arms[arm]]
        return float(values[self.order[self.arms[arm]][k % len(values)]])

    def regret(self, arm: int) -> float:
        best = self.truth.max()
        return float((best - self.truth[arm]) / best)


def _setting(name: str) -> tuple[str | None, str | None]:
    """(encoder, method) of a catalogue grid; (None, None) for a CSV."""
    entry = published.catalog().get(name) if name in published.names() else None
    return (entry.encoder, entry.method) if entry else (None, None)


def _grid(name: str, runs: pd.DataFrame, target: str) -> grids_.Grid:
    """The grid without the held-out target's runs (its prior sees only the other targets)."""
    encoder, method = _setting(name)
    return grids_.from_runs(name, runs[runs["task"] != target], encoder, method, published=encoder is not None)


class Sim:
    """One repetition for one held-out target; `shared`: the grid without the target (and the `others`: whole
    grids pooled into the prior), the pool and the priors built from them, by baseline fact (the same for every
    repetition)."""

    def __init__(self, name: str, runs: pd.DataFrame, target: str, rep: int, shared: dict, others=()):
        self.cell = Cell(runs, target, rep, name)
        if "grids" not in shared:
            encoder, method = _setting(name)
            shared["grids"], shared["priors"] = [_grid(name, runs, target), *others], {}
            shared["pool"] = pooling.prepare(shared["grids"], encoder, method or pooling.USER_METHOD)
        self.grid_list, self.pool, self.name = shared["grids"], shared["pool"], name
        self.target = target
        self._priors = shared["priors"]

    def prior(self, baseline: float | None) -> belief_.Prior:
        if baseline not in self._priors:
            self._priors[baseline] = prior_belief.build(self.grid_list, self.target, self.cell.candidates,
                                                        baseline=baseline, scored=self.name, pool=self.pool)
        return self._priors[baseline]

    def flags(self):
        n = len(self.cell.arms)
        allowed = np.ones(n, bool)
        allowed[0] = self.cell.has_baseline
        return allowed, allowed.copy()

    def belief(self, runs: list[tuple[int, float]]) -> belief_.Belief:
        first_base = next((v for a, v in runs if a == 0), None)
        return belief_.Belief(self.prior(first_base), runs)

    def select(self, budget: int) -> tuple[rule.Answer, int, str]:
        allowed, measurable = self.flags()
        runs, spent, counts = [], 0, np.zeros(len(self.cell.arms), int)
        has_ckpt = np.zeros(len(self.cell.arms), bool)
        while True:
            b = self.belief(runs)
            d = rule.choose(b, allowed, measurable, has_ckpt, budget - spent, OPTIONS)
            if d.arm is None:
                return rule.answer(b, allowed), spent, " ".join(self.cell.arms[a] for a, _ in runs)
            runs.append((d.arm, self.cell.draw(d.arm, counts[d.arm])))
            counts[d.arm] += 1
            has_ckpt[d.arm] = True
            spent += d.cost

    def fixed(self, budget: int) -> tuple[int | None, list]:
        """The --write-study design at this budget: (answer arm, its runs); None when not even K = 1 fits."""
        base = 1 if self.cell.has_baseline else 0
        k = min((budget - base) // 2, len(self.cell.candidates))
        if k < 1:
            return None, []
        top = np.argsort(-self.prior(None).mean, kind="stable")[:k] + 1  # the ranking's order; ties by name
        arms = ([0] if base else []) + list(top)
        runs = [(a, self.cell.draw(a, 0)) for a in arms]
        return max(arms, key=lambda a: (runs[arms.index(a)][1], -a)), runs

    def random(self, budget: int) -> int | None:
        arms = list(self.cell.rng.permutation(np.flatnonzero(self.flags()[1])))
        spent, measured = 0, {}
        for a in arms:
            cost = 1 if a == 0 else 2
            if spent + cost > budget:
                continue
            measured[a] = self.cell.draw(a, 0)
            spent += cost
        return max(measured, key=lambda a: (measured[a], -a)) if measured else None


def simulate(name: str, runs: pd.DataFrame, reps: int, budgets: list[int], only: set[str] | None = None,
             free_baseline: bool = False, others=()) -> pd.DataFrame:
    """One row per (target, repetition, policy, budget). On a grid without baseline runs, every policy pays the
    baseline's run as on a real target (`stilts select` runs it first, `--write-study` writes it) without seeing
    a result; `free_baseline`: it pays nothing for it."""
    rows = []
    targets = [t for t in sorted(runs.loc[runs["role"] == "target", "task"].unique()) if not only or t in only]
    for target in targets:
        shared: dict = {}
        for rep in range(reps):
            sim = Sim(name, runs, target, rep, shared, others)
            if len(sim.cell.candidates) < 2:
                continue
            cell = sim.cell
            truth_none_best = cell.has_baseline and int(np.argmax(cell.truth)) == 0
            base = {"grid": name, "target": target, "rep": rep, "none_is_best": truth_none_best}
            prior_answer = rule.answer(sim.belief([]), sim.flags()[0])
            rows.append(base | _answer_row("prior", 0, 0, cell, prior_answer))
            unseen = 0 if cell.has_baseline or free_baseline else 1  # the baseline's run, paid and not seen
            for budget in budgets:
                if budget <= unseen:
                    continue
                ans, spent, seq = sim.select(budget - unseen)
                rows.append(base | _answer_row("select", budget, spent + unseen, cell, ans) | {"runs": seq})
                arm, fixed_runs = sim.fixed(budget - unseen)
                if arm is not None:
                    cost = _cost(fixed_runs) + unseen
                    rows.append(base | {"policy": "fixed", "budget": budget, "spent": cost,
                                        "answer": cell.arms[arm], "regret": cell.regret(arm)})
                    best = min(cell.regret(a) for a, _ in fixed_runs)
                    rows.append(base | {"policy": "bound", "budget": budget, "spent": cost, "regret": best})
                    post = rule.answer(sim.belief(fixed_runs), sim.flags()[0])
                    rows.append(base | _answer_row("fixed+posterior", budget, cost, cell, post))
                arm = sim.random(budget - unseen)
                if arm is not None:
                    rows.append(base | {"policy": "random", "budget": budget, "answer": cell.arms[arm],
                                        "regret": cell.regret(arm)})
    return pd.DataFrame(rows)


def _cost(runs) -> int:
    return sum(1 if a == 0 else 2 for a, _ in runs)


def _answer_row(policy: str, budget: int, spent: int, cell: Cell, ans: rule.Answer) -> dict:
    versus = cell.arms.index(ans.versus)
    beats = bool(cell.truth[versus] > cell.truth[0]) if cell.has_baseline and versus > 0 else np.nan
    return {"policy": policy, "budget": budget, "spent": spent, "answer": ans.name, "regret": cell.regret(ans.arm),
            "p_beats": ans.p_beats, "truly_beats": beats, "answer_none": ans.arm == 0}


def _paired(rows: pd.DataFrame, budget: int) -> tuple[float, float]:
    """select − fixed at the budget: the mean over (target, repetition), and its standard error over targets."""
    at = rows[rows["budget"] == budget].pivot_table(index=["target", "rep"], columns="policy", values="regret")
    if "fixed" not in at:
        return math.nan, math.nan
    per_target = (at["select"] - at["fixed"]).groupby(level=0).mean()
    return float((at["select"] - at["fixed"]).mean()), float(per_target.std(ddof=1) / math.sqrt(len(per_target)))


def tables(rows: pd.DataFrame, budget: int) -> str:
    """At one budget: each grid's mean regret per policy, select / prior, select − fixed (± its standard error
    over targets), and on grids with baselines the AUROC of P(beats) and the accuracy of "train none"."""
    out = []
    at = rows[(rows["budget"] == budget) | (rows["policy"] == "prior")]
    mean = at.groupby(["grid", "policy"], sort=False)["regret"].mean().unstack()
    cols = [c for c in ("prior", "select", "fixed", "fixed+posterior", "random", "bound") if c in mean]
    out.append(f"mean regret of the final choice, budget {budget} (prior: 0 runs)\n")
    out.append("| grid | targets × repetitions | " + " | ".join(cols) + " | select / prior | select − fixed (± SE) |")
    out.append("|---" * (len(cols) + 4) + "|")
    for grid, row in mean[cols].iterrows():
        g = rows[rows["grid"] == grid]
        diff, se = _paired(g, budget)
        size = f"{g['target'].nunique()} × {g['rep'].nunique()}"
        out.append(f"| {grid} | {size} | " + " | ".join(f"{v:.4f}" for v in row)
                   + f" | {row['select'] / row['prior']:.2f} | {diff:+.4f} ± {se:.4f} |")
    sel = rows[(rows["policy"] == "select") & (rows["budget"] == budget)]
    for grid, g in sel.groupby("grid", sort=False):
        if g["truly_beats"].notna().any():
            h = g.dropna(subset=["truly_beats", "p_beats"])
            acc = float(((g["answer_none"]) == g["none_is_best"]).mean())
            roc = auroc(h["truly_beats"].astype(bool), h["p_beats"])
            out.append(f"\n{grid}: select at {budget}: AUROC of P(beats) {roc:.3f} "
                       f"({len(h)} answers, {int(h['truly_beats'].sum())} truly beat the baseline); 'train none' "
                       f"accuracy {acc:.3f} (answered none {int(g['answer_none'].sum())}, none truly best "
                       f"{int(g['none_is_best'].sum())}); runs spent {g['spent'].mean():.2f}")
    return "\n".join(out)


def curve_table(rows: pd.DataFrame) -> str:
    """Mean regret over the grids (each grid weighted equally) per policy and budget."""
    c = curve(rows)
    prior = c[c["policy"] == "prior"].groupby("grid")["regret"].first().mean()
    budgets = sorted(b for b in c["budget"].unique() if b > 0)
    out = ["| policy | 0 | " + " | ".join(str(b) for b in budgets) + " |", "|---" * (len(budgets) + 2) + "|"]
    for policy in ("select", "fixed", "fixed+posterior", "random"):
        p = c[c["policy"] == policy].groupby("budget")["regret"].mean()
        out.append(f"| {policy} | {prior:.4f} | " + " | ".join(f"{p[b]:.4f}" if b in p.index else "" for b in budgets)
                   + " |")
    return "\n".join(out)


def curve(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean regret by grid, policy and budget (prior at 0)."""
    return rows.groupby(["grid", "policy", "budget"])["regret"].mean().reset_index()


def plot(rows: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = curve(rows)
    grids = list(dict.fromkeys(c["grid"]))
    cols = min(4, len(grids))
    lines = (len(grids) + cols - 1) // cols
    fig, axes = plt.subplots(lines, cols, figsize=(3.4 * cols, 2.8 * lines), squeeze=False)
    for ax, grid in zip(axes.ravel(), grids):
        g = c[c["grid"] == grid]
        prior = float(g.loc[g["policy"] == "prior", "regret"].iloc[0])
        for policy, style in (("select", "o-"), ("fixed", "s--"), ("random", "^:")):
            p = g[g["policy"] == policy]
            ax.plot([0, *p["budget"]], [prior, *p["regret"]], style, label=policy, markersize=4)
        ax.axhline(prior / 2, color="grey", lw=0.8, ls="-.", label="prior / 2")
        ax.set_title(grid, fontsize=9)
        ax.set_xlabel("training runs")
        ax.set_ylabel("mean regret")
    for ax in axes.ravel()[len(grids):]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _catalogue_grid(name: str) -> grids_.Grid:
    encoder, method = _setting(name)
    return grids_.from_runs(name, published.runs(name), encoder, method, published=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", action="append", default=[], metavar="NAME[=CSV]",
                    help="a grid of the catalogue (`stilts grids`) or a CSV in import-results format")
    ap.add_argument("--rows", type=Path, action="append", default=[],
                    help="tables and plot from the rows of earlier runs (--csv) instead of simulating")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--budgets", default="2,4,6,8,10")
    ap.add_argument("--targets", help="only these targets (comma-separated)")
    ap.add_argument("--pool", action="append", default=[], metavar="NAME",
                    help="a catalogue grid added whole to every held-out target's prior, pooled as `stilts rank` "
                    "pools grids (the held-out grid's own pairs of the target are never used); repeatable")
    ap.add_argument("--csv", type=Path)
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--free-baseline", action="store_true", help="on grids without baseline runs, the policies pay "
                    "nothing for the baseline (default: its run is paid, as on a real target, and not seen)")
    args = ap.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    frames = []
    pooled = {n: _catalogue_grid(n) for n in args.pool}
    for spec in args.grid:
        name, _, path = spec.partition("=")
        runs = pd.read_csv(path) if path else published.runs(name)
        runs = runs[runs["role"] == "target"]
        start = time.perf_counter()
        only = set(args.targets.split(",")) if args.targets else None
        others = [g for n, g in pooled.items() if n != name]
        frames.append(simulate(name, runs, args.reps, budgets, only, args.free_baseline, others))
        print(f"{name}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    frames += [pd.read_csv(p) for p in args.rows]
    rows = pd.concat(frames, ignore_index=True)
    if args.csv:
        rows.to_csv(args.csv, index=False)
    for b in budgets:
        print(tables(rows, b) + "\n")
    print("mean regret over the grids by training runs (0: the prior alone)\n\n" + curve_table(rows))
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
