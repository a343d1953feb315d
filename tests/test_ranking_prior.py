"""The prior and hybrid rankings: the source + target effect fit on hand-made grids, leave-one-target-out,
the harm prediction and its scoring, and `stilts rank --method prior/hybrid` end to end and on bad input."""

import math

import numpy as np
import pandas as pd
import pytest

from stilts.selection import evaluate, grids, harm, hybrid, prior

SOURCES = {"s1": 1.5, "s2": 0.9, "s3": 0.2, "s4": -0.4, "s5": -1.3, "s6": -2.0}  # true source effects
TARGETS = {"t1": (0.80, 0.02, 0.5), "t2": (0.55, 0.10, -0.3), "t3": (0.30, 0.04, 1.0), "t4": (0.65, 0.01, 0.0),
           "t5": (0.70, 0.05, -1.0)}  # baseline, scale (metric units per effect unit), target effect


def runs_of(scores: dict[tuple[str, str], float], restarts: int = 2, jitter: float = 0.0, seed: int = 0):
    """collect()'s table for a grid: (source, target) → mean score, `restarts` runs around it."""
    rng = np.random.default_rng(seed)
    rows = []
    for (s, t), v in scores.items():
        offsets = rng.normal(0, jitter, restarts) if jitter else np.zeros(restarts)
        offsets -= offsets.mean()  # the mean over restarts stays exactly v
        rows += [{"source": s, "task": t, "role": "target", "restart": k, "score": v + o}
                 for k, o in enumerate(offsets)]
    return pd.DataFrame(rows)


def additive_grid(with_baseline: bool = True, name: str = "g") -> grids.Grid:
    """score = baseline_t + scale_t · (a_s + b_t): every target on its own scale and offset."""
    scores = {(s, t): base + scale * (a + b) for s, a in SOURCES.items() for t, (base, scale, b) in TARGETS.items()}
    if with_baseline:
        scores |= {("none", t): base for t, (base, _, _) in TARGETS.items()}
    return grids.from_runs(name, runs_of(scores, jitter=0.01))


def true_order(exclude: str = "") -> list[str]:
    return [s for s in sorted(SOURCES, key=SOURCES.get, reverse=True) if s != exclude]


@pytest.mark.parametrize("with_baseline", [True, False])
def test_prior_recovers_the_source_ranking_of_an_additive_grid(with_baseline):
    g = additive_grid(with_baseline)
    assert g.targets == sorted(TARGETS) and (not g.baseline.empty) == with_baseline
    for target in TARGETS:
        table = prior.rank_target([g], target, list(SOURCES))
        assert evaluate.order(dict(zip(table["candidate"], table["score"]))) == true_order()
        assert (table["basis"] == "grids: g 100%").all() and table["p_best"].sum() == pytest.approx(1.0)
    # the effects differ from the truth only by the normalisation's scale and the ridge's shrinkage;
    # without the ridge the additive grid is fitted exactly
    truth = np.array(list(SOURCES.values()))
    for lam in (prior.LAMBDA, 0.0):
        eff = prior.fit([g], lam=lam)
        assert np.corrcoef(eff.a[list(SOURCES)].to_numpy(), truth)[0, 1] == pytest.approx(1.0, abs=1e-9)
    assert eff.sigma2 == pytest.approx(1e-6)  # the floor: no residual at all


def test_a_second_grid_on_another_scale_stacks_with_the_first():
    g1, g2 = additive_grid(True, "g1"), additive_grid(False, "g2")
    g2.means = g2.means * 100  # another metric scale, no baseline
    g2._normalised = None
    table = prior.rank_target([g1, g2], "t3", list(SOURCES))
    assert evaluate.order(dict(zip(table["candidate"], table["score"]))) == true_order()
    fitted = prior.fit([g1, g2], {"t3"}).targets
    assert set(fitted) == {(name, t) for name in ("g1", "g2") for t in TARGETS if t != "t3"}


@pytest.mark.parametrize("method", ["prior", "hybrid"])
def test_leave_one_target_out_never_reads_the_held_out_target(method):
    g = additive_grid()
    rank = (lambda gs: prior.rank_target(gs, "t2", list(SOURCES), baseline=0.55)) if method == "prior" else \
        (lambda gs: hybrid.rank_target(gs, "t2", list(SOURCES), {}, baseline=0.55))
    before = rank([g])
    changed = additive_grid()
    rng = np.random.default_rng(7)
    changed.means.loc["t2"] = rng.uniform(0, 1, len(changed.means.columns))  # its scores, scrambled
    changed.baseline["t2"] = 0.99
    changed._normalised = None
    after = rank([changed])
    pd.testing.assert_frame_equal(before, after)
    # the other targets do move the ranking (the comparison above could not pass by accident)
    other = additive_grid()
    other.means.loc["t1"] = rng.uniform(0, 1, len(other.means.columns))
    other._normalised = None
    assert not np.allclose(rank([other])["score"], before["score"])


def test_a_candidate_outside_every_grid_gets_its_neighbours_effect_or_the_prior():
    eff = prior.fit([additive_grid()])
    e = np.eye(4)
    emb = {"s1": e[0], "s2": e[0] + 0.1 * e[1], "s3": e[1], "s5": e[2], "s6": e[2] + 0.1 * e[3],
           "new": e[0] + 0.05 * e[1]}
    scored, mean, cov = prior.candidate_effects(eff, ["s1", "new", "other"], emb)
    assert scored["new"][1] == "semb neighbours: s2, s1, s3"  # closest first
    assert scored["new"][0] == pytest.approx(eff.a[["s1", "s2", "s3"]].mean())
    assert scored["other"] == (0.0, "in no grid, no embedding: unseen-source prior")
    assert cov[2, 2] == pytest.approx(eff.prior_var) and cov[0, 1] == 0.0


def test_harm_uses_the_documented_facts_and_predicts_which_targets_gain():
    # the target effect falls with the baseline score (no headroom): high-baseline targets lose
    rng = np.random.default_rng(1)
    names = ["rte", "cb", "copa", "boolq", "wic", "wsc", "multirc", "record", "cosmosqa", "commonsenseqa"]
    base = dict(zip(names, rng.uniform(0.5, 0.97, len(names))))
    effect = {t: 2.0 - 3.0 * -math.log(1 - base[t]) / 2 for t in names}
    scores = {(s, t): base[t] + 0.02 * (a + effect[t]) for s, a in SOURCES.items() for t in names}
    g = grids.from_runs("g", runs_of(scores | {("none", t): base[t] for t in names}, restarts=1))
    assert harm.facts("rte", 0.6) == {"headroom": pytest.approx(-math.log(0.4)),
                                      "log_train_size": pytest.approx(math.log(2490)), "task_type": "classification"}
    assert harm.facts("not-a-task", None) == {}
    p, beats = [], []
    for t in names:
        table = prior.rank_target([g], t, list(SOURCES), baseline=base[t])
        p += list(table["p_beats_baseline"])
        beats += [scores[(c, t)] > base[t] for c in table["candidate"]]
        assert (table["gain_low"] < table["gain_high"]).all()
    assert evaluate.auroc(beats, p) > 0.95
    no_facts = [prior.rank_target([g], t, list(SOURCES))["p_beats_baseline"].iloc[0] for t in names]
    assert len(set(np.round(no_facts, 6))) > 1  # registry facts (size, type) still vary by target


def test_no_baseline_anywhere_means_no_harm_prediction():
    table = prior.rank_target([additive_grid(False)], "t1", list(SOURCES))
    assert table["p_beats_baseline"].isna().all() and table["p_best"].notna().all()


def test_auroc_and_brier_by_hand_and_pooled_in_the_mean_row():
    assert evaluate.auroc([True, False, True, False], [0.9, 0.8, 0.4, 0.1]) == pytest.approx(0.75)
    assert evaluate.auroc([True, False], [0.5, 0.5]) == pytest.approx(0.5)  # ties count half
    assert math.isnan(evaluate.auroc([True, True], [0.1, 0.2]))
    assert evaluate.brier([True, False], [0.8, 0.4]) == pytest.approx((0.04 + 0.16) / 2)
    ranking = pd.DataFrame({"target": ["x"] * 3 + ["y"] * 3, "candidate": ["a", "b", "c"] * 2, "method": "prior",
                            "score": [3, 2, 1, 3, 2, 1], "p_beats_baseline": [0.9, 0.6, 0.2, 0.7, 0.5, 0.1]})
    means = {("x", "a"): 0.8, ("x", "b"): 0.6, ("x", "c"): 0.5, ("x", "none"): 0.55,
             ("y", "a"): 0.4, ("y", "b"): 0.45, ("y", "c"): 0.3, ("y", "none"): 0.5}
    table = evaluate.evaluate(ranking, means).set_index(["target", "method"])
    assert table.loc[("x", "prior"), "auroc"] == 1.0 and math.isnan(table.loc[("y", "prior"), "auroc"])
    pooled_p, pooled_y = [0.9, 0.6, 0.2, 0.7, 0.5, 0.1], [True, True, False, False, False, False]
    assert table.loc[("mean", "prior"), "auroc"] == pytest.approx(evaluate.auroc(pooled_y, pooled_p))
    assert table.loc[("mean", "prior"), "brier"] == pytest.approx(evaluate.brier(pooled_y, pooled_p))
    assert table.loc[("x", "random"), "auroc"] == 0.5 and math.isnan(table.loc[("x", "random"), "brier"])


def test_hybrid_learns_a_weight_for_a_signal_that_predicts_the_gains():
    # one source effect per target plus a target-specific part that only "semb" sees
    rng = np.random.default_rng(3)
    names = [f"t{i}" for i in range(8)]
    own = {(t, s): rng.normal() for t in names for s in SOURCES}
    scores = {(s, t): 0.5 + 0.02 * (0.3 * a + own[(t, s)]) for s, a in SOURCES.items() for t in names}
    g = grids.from_runs("g", runs_of(scores, restarts=1))
    signals = {"semb": {k: v + 0.1 * rng.normal() for k, v in own.items()}}
    w, _ = hybrid.weights([g], "t0", signals)
    assert w[1] > 0.5 and w[2] == 0.0
    with_semb = hybrid.rank_target([g], "t0", list(SOURCES), signals)
    best = max(SOURCES, key=lambda s: scores[(s, "t0")])
    assert evaluate.order(dict(zip(with_semb["candidate"], with_semb["score"])))[0] == best
    assert "semb x" in with_semb["basis"].iloc[0]


def test_hybrid_without_a_prior_grid_falls_back_and_says_so():
    signals = {"semb": {("t", "a"): 0.9, ("t", "b"): 0.1, ("t", "c"): 0.5}}
    table = hybrid.rank_target([], "t", ["a", "b", "c"], signals)
    assert list(table.sort_values("score", ascending=False)["candidate"]) == ["a", "c", "b"]
    assert table["basis"].iloc[0] == "no prior grid: mean of standardised semb"
    from stilts.errors import StiltsError

    with pytest.raises(StiltsError, match="hybrid has no signal for target 'u'"):
        hybrid.rank_target([], "u", ["a", "b"], signals)


# ---------------------------------------------------------------- stilts rank --method prior / hybrid

PRIOR_GRID = """restart,source,task,role,score
0,none,syn_rte,target,0.60
1,none,syn_rte,target,0.62
0,syn_nli,syn_rte,target,0.70
1,syn_nli,syn_rte,target,0.72
0,syn_sentiment,syn_rte,target,0.58
0,syn_bshift,syn_rte,target,0.50
0,none,syn_copa,target,0.55
0,syn_nli,syn_copa,target,0.66
0,syn_sentiment,syn_copa,target,0.60
0,syn_bshift,syn_copa,target,0.40
0,none,syn_subjnum,target,0.80
0,syn_nli,syn_subjnum,target,0.85
0,syn_sentiment,syn_subjnum,target,0.78
0,syn_bshift,syn_subjnum,target,0.70
0,none,syn_sentlen,target,0.30
0,syn_nli,syn_sentlen,target,0.33
0,syn_sentiment,syn_sentlen,target,0.31
0,syn_bshift,syn_sentlen,target,0.20
0,syn_nli,syn_tense,probe,0.90
"""


@pytest.fixture
def prior_project(make_params, tiny_model, tmp_path):
    from stilts.analysis.imports import import_results

    params = make_params(tasks={"intermediate": [], "target": ["syn_rte"], "probe": []},
                         rank={"encoder": str(tiny_model), "sample_size": 40})
    (tmp_path / "grid.csv").write_text(PRIOR_GRID)
    import_results(params, tmp_path / "grid.csv", "grid")
    (tmp_path / "baselines.csv").write_text("restart,source,task,role,score\n0,none,syn_rte,target,0.6\n")
    import_results(params, tmp_path / "baselines.csv", "only-baselines")
    return params


def test_rank_prior_and_hybrid_end_to_end(prior_project, tmp_path, capsys, monkeypatch):
    from stilts import cli

    monkeypatch.setenv("STILTS_WORKER", "0")
    argv = ["--params", str(tmp_path / "params.yaml"), "rank", "--prior-experiment", "grid", "--experiment", "grid",
            "--targets", "syn_rte,syn_copa", "--candidates", "syn_nli,syn_sentiment,syn_bshift,syn_tense"]
    assert cli.main([*argv, "--method", "prior,hybrid"]) == 0
    printed = capsys.readouterr().out
    assert "syn_rte [prior]: syn_nli" in printed and "P(syn_nli beats the baseline)" in printed
    ranking = pd.read_csv(tmp_path / "reports" / "grid" / "ranking.csv")
    tense = ranking[(ranking["candidate"] == "syn_tense") & (ranking["method"] == "prior")]
    assert tense["basis"].str.startswith("semb neighbours: ").all()  # in no grid: scored from its neighbours
    assert ranking[ranking["method"] == "prior"]["p_beats_baseline"].between(0, 1).all()
    hyb = ranking[ranking["method"] == "hybrid"]
    assert hyb["basis"].str.contains("prior \\(grid\\) x").any() and hyb["basis"].str.contains("semb").all()
    table = pd.read_csv(tmp_path / "reports" / "grid" / "ranking_eval.csv")
    assert list(table.columns) == evaluate.COLUMNS
    assert {"prior", "hybrid", "random"} <= set(table["method"]) and "prior-within" not in set(table["method"])
    mean = table[(table["target"] == "mean") & (table["method"] == "prior")].iloc[0]
    assert 0 <= mean["auroc"] <= 1 and 0 <= mean["brier"] <= 1
    # scored against another experiment: the prior from `grid`, and for reference one fitted on that experiment
    assert cli.main([*argv[:5], "--experiment", "only-baselines", "--targets", "syn_rte", "--method", "prior"]) == 0
    from stilts.analysis import report
    from stilts.analysis.imports import import_results

    import_results(prior_project, tmp_path / "grid.csv", "grid2")
    assert cli.main([*argv[:5], "--experiment", "grid2", "--targets", "syn_rte,syn_copa", "--method", "prior"]) == 0
    cross = pd.read_csv(tmp_path / "reports" / "grid2" / "ranking_eval.csv")
    assert {"prior", "prior-within"} <= set(cross["method"])
    assert "Cross-grid: the prior from the prior grids against `prior-within`" in \
        (report.run(prior_project, "grid2") / "report.md").read_text()

    text = (report.run(prior_project, "grid") / "report.md").read_text()
    assert "| prior | " in text and "![regret per target and method](ranking_regret.png)" in text
    assert (tmp_path / "reports" / "grid" / "ranking_regret.png").is_file()


def test_rank_prior_on_grid_tasks_unknown_to_the_registry(make_params, tmp_path, capsys, monkeypatch):
    from stilts import cli
    from stilts.analysis.imports import import_results

    monkeypatch.setenv("STILTS_WORKER", "0")
    params = make_params(tasks={"intermediate": [], "target": ["syn_rte"], "probe": []})
    (tmp_path / "w.csv").write_text(PRIOR_GRID.replace("syn_bshift", "anli_r3").replace("syn_sentlen", "piqa"))
    import_results(params, tmp_path / "w.csv", "web")
    argv = ["--params", str(tmp_path / "params.yaml"), "rank", "--method", "prior", "--prior-experiment", "web",
            "--experiment", "web", "--targets", "piqa,syn_rte"]
    assert cli.main(argv) == 0  # candidates default to the grid's sources
    ranking = pd.read_csv(tmp_path / "reports" / "web" / "ranking.csv")
    assert set(ranking[ranking["target"] == "piqa"]["candidate"]) == {"syn_nli", "syn_sentiment", "anli_r3"}


def test_rank_prior_bad_input_is_one_line_exit_2_and_writes_nothing(prior_project, tmp_path, capsys, monkeypatch):
    from stilts import cli

    monkeypatch.setenv("STILTS_WORKER", "0")
    argv = ["--params", str(tmp_path / "params.yaml"), "rank", "--method", "prior", "--candidates", "syn_nli"]

    def run(*args):
        code = cli.main([*argv, *args])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, err
        assert not (tmp_path / "reports").exists()
        return err

    assert "prior experiment 'paper' does not exist" in run("--targets", "syn_rte", "--prior-experiment", "paper")
    assert "prior experiment 'only-baselines' holds no transfer runs" in run(
        "--targets", "syn_rte", "--prior-experiment", "only-baselines")
    assert "target 'rtee' is in no prior grid (grid) and is not a known task (did you mean 'rte'?)" in run(
        "--targets", "rtee", "--prior-experiment", "grid")
    assert "unknown method 'prio' (did you mean 'prior'?)" in run("--targets", "syn_rte", "--method", "prio")
