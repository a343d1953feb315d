"""`stilts select`'s posterior, rule and prior adapter on hand-made inputs (no training), and the study layout
a selection writes (its own restarts per source, one intermediate run per candidate)."""

import math

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.special import ndtr
from scipy.stats import norm

from stilts.errors import StiltsError
from stilts.selection import belief, grids, lookahead, prior, prior_belief, rule
from tests.test_ranking_prior import SOURCES, TARGETS, runs_of


def one_point_prior(mean, cov, spread=0.05, ratio=1.0) -> belief.Prior:
    names = [f"c{i}" for i in range(len(mean))]
    scale = belief.Scale(np.array([spread]), np.array([ratio]), np.array([1.0]))
    return belief.Prior(names, np.asarray(mean, float), np.asarray(cov, float), scale, True)


def test_the_expected_maximum_of_two_lines_is_the_closed_form():
    a, b = np.array([0.3, -0.2]), np.array([0.5, 1.7])
    mu, sd = a[0] - a[1], abs(b[0] - b[1])
    exact = a[1] + mu * ndtr(mu / sd) + sd * norm.pdf(mu / sd) - a.max()
    assert rule.expected_improvement_of_max(a, b) == pytest.approx(exact, rel=1e-12)
    # a line dominated everywhere adds nothing; equal slopes leave only the highest line
    assert rule.expected_improvement_of_max(np.array([0.0, 1.0]), np.array([0.5, 0.5])) == pytest.approx(0.0)
    lines = (np.array([0.1, 0.0, -0.3, 0.2]), np.array([-1.0, 0.2, 1.5, 0.3]))
    z = np.random.default_rng(0).standard_normal(400_000)
    monte_carlo = (lines[0][:, None] + lines[1][:, None] * z).max(axis=0).mean() - lines[0].max()
    assert rule.expected_improvement_of_max(*lines) == pytest.approx(monte_carlo, abs=3e-3)


def test_one_support_point_gives_the_conjugate_gaussian_update():
    p = one_point_prior([0.5, -0.5], [[1.0, 0.3], [0.3, 1.0]], spread=0.04, ratio=0.5)
    runs = [(1, 0.62), (1, 0.60), (0, 0.55)]
    b = belief.Belief(p, runs)
    # the same model written out: w = L + S z, y = H w + e
    s, noise = 0.04, (0.5 * 0.04) ** 2
    mean = np.r_[belief.LEVEL_MEAN, belief.LEVEL_MEAN + s * p.mean]
    cov = np.full((3, 3), belief.LEVEL_VAR)
    cov[1:, 1:] += s * s * p.cov
    h = np.zeros((3, 3))
    h[[0, 1, 2], [1, 1, 0]] = 1
    gain = cov @ h.T @ np.linalg.inv(h @ cov @ h.T + noise * np.eye(3))
    post = mean + gain @ (np.array([v for _, v in runs]) - h @ mean)
    assert b.mean() == pytest.approx(post, abs=1e-10)
    assert b.counts.tolist() == [1, 2, 0]
    assert b.gain()[0] == 0 and 0 < b.p_beats()[1] < 1 and b.p_beats()[0] == 0


def test_the_weights_follow_the_spread_the_runs_show():
    scale = belief.Scale(np.array([0.01, 0.1]), np.array([0.5, 0.5]), np.array([0.5, 0.5]))
    p = belief.Prior(["a", "b"], np.zeros(2), np.eye(2), scale, True)
    wide = belief.Belief(p, [(0, 0.5), (1, 0.7), (2, 0.3), (1, 0.72), (2, 0.33)])
    narrow = belief.Belief(p, [(0, 0.5), (1, 0.51), (2, 0.49), (1, 0.512), (2, 0.493)])
    assert wide.weights[1] > 0.9 and narrow.weights[0] > 0.9
    assert wide.spread()[0] > narrow.spread()[0]


def test_the_rule_runs_the_baseline_first_then_plans_and_stops_when_the_budget_is_spent():
    p = one_point_prior([0.2, 0.1, -1.0], np.eye(3))
    allowed, ckpt = np.ones(4, bool), np.zeros(4, bool)
    first = rule.choose(belief.Belief(p, []), allowed, allowed, ckpt, 6, rule.Options())
    assert first.arm == 0 and first.cost == 1 and "baseline" in first.why
    second = rule.choose(belief.Belief(p, [(0, 0.5)]), allowed, allowed, ckpt, 5, rule.Options())
    assert second.arm in (1, 2) and second.cost == 2 and "plan" in second.why
    # a candidate's later runs reuse its checkpoint: one run each; a budget no run fits in stops
    ckpt[1:] = True
    assert rule.choose(belief.Belief(p, [(0, 0.5)]), allowed, allowed, ckpt, 1, rule.Options()).cost == 1
    ckpt[:] = False
    candidates_only = np.array([False, True, True, True])
    spent = rule.choose(belief.Belief(p, [(0, 0.5)]), allowed, candidates_only, ckpt, 1, rule.Options())
    assert spent.arm is None and "budget is spent" in spent.why
    # a second baseline run fits, but cannot change the answer
    useless = rule.choose(belief.Belief(p, [(0, 0.5)]), allowed, allowed, ckpt, 1, rule.Options())
    assert useless.arm is None and "can change the answer" in useless.why


def test_the_rule_stops_when_the_baseline_shows_that_every_candidate_hurts():
    p = one_point_prior([-0.5, -0.4], np.eye(2), spread=0.05, ratio=0.2)
    allowed = np.ones(3, bool)
    runs = [(0, 0.80), (0, 0.80), (1, 0.60), (2, 0.61), (1, 0.60), (2, 0.61)]
    b = belief.Belief(p, runs)
    d = rule.choose(b, allowed, allowed, np.ones(3, bool), 10, rule.Options(confident=0.9999))
    assert d.arm is None and "likely to beat the baseline" in d.why
    answer = rule.answer(b, allowed)
    assert answer.name == "none" and answer.versus in ("c0", "c1") and answer.p_beats < 0.05


def test_a_certain_answer_stops_the_selection_and_the_decisions_are_reproducible():
    p = one_point_prior([2.0, -2.0], np.eye(2) * 0.01, ratio=0.1)
    allowed = np.ones(3, bool)
    b = belief.Belief(p, [(0, 0.5), (1, 0.62), (1, 0.62)])
    d = rule.choose(b, allowed, allowed, np.ones(3, bool), 5, rule.Options())
    assert d.arm is None and "is the best" in d.why and rule.answer(b, allowed).name == "c0"
    q = one_point_prior([0.1, 0.0, 0.05], np.eye(3))
    runs = [(0, 0.5), (1, 0.52)]
    picks = {rule.choose(belief.Belief(q, runs), np.ones(4, bool), np.ones(4, bool), np.zeros(4, bool), 5,
                         rule.Options(seed=3)).why for _ in range(3)}
    assert len(picks) == 1


def test_a_plan_of_several_candidates_values_exploration_a_single_run_undervalues():
    mean, cov = np.array([0.0, 0.0, 0.0]), np.eye(3)
    draws = lookahead._draws(3, 0)
    one = lookahead.value(mean, cov, 1.0, np.ones(3, bool), {0: 1}, draws)
    two = lookahead.value(mean, cov, 1.0, np.ones(3, bool), {0: 1, 1: 1}, draws)
    assert two > one > 0
    plans = lookahead.plans([0, 1, 2], {0: 1, 1: 2, 2: 2}, 4)
    costs = [sum(c + r - 1 for a, r in p.items() for c in [{0: 1, 1: 2, 2: 2}[a]]) for p in plans]
    assert max(costs) == 4 and {0: 1, 1: 1} in plans and {1: 3} in plans and {1: 1, 2: 1} in plans
    assert {1: 2, 2: 1} not in plans and {0: 1, 1: 1, 2: 1} not in plans


def test_a_repeat_of_a_trained_candidate_is_always_planned_and_valued_as_the_answer_can_use_it():
    # arm 1 ran (its checkpoint: a repeat costs 1) and is certain-looking; nine unrun arms have higher μ + 2 sd
    k = 11
    mean, cov = np.r_[0.0, 0.5, np.full(k - 2, 0.45)], np.diag(np.r_[1.0, 0.01, np.full(k - 2, 1.0)])
    cost = {a: (1 if a <= 1 else 2) for a in range(k)}
    measurable, allowed = np.r_[False, np.ones(k - 1, bool)], np.r_[False, np.ones(k - 1, bool)]
    ran = np.zeros(k, bool)
    ran[1] = True
    plan, gain = lookahead.best_plan(mean, cov, 0.01, allowed, measurable, cost, 1, ran=ran)
    assert plan == {1: 1} and gain >= 0
    # an unrun arm's value counts only the answers it makes possible: after it alone, the answer is it or arm 1
    draws = lookahead._draws(1, 0)
    assert lookahead.value(mean, cov, 0.01, allowed, {2: 1}, draws, ran) == pytest.approx(
        lookahead.value(mean[:3], cov[:3, :3], 0.01, np.array([False, True, True]), {2: 1}, draws))


def _grid(target_rows: dict[str, float] | None = None) -> grids.Grid:
    scores = {(s, t): base + scale * (a + b) for s, a in SOURCES.items() for t, (base, scale, b) in TARGETS.items()}
    scores |= {("none", t): base for t, (base, _, _) in TARGETS.items()}
    scores |= {(s, "t1"): v for s, v in (target_rows or {}).items()}
    return grids.from_runs("g", runs_of(scores, restarts=3, jitter=0.01, seed=1))


def test_the_prior_never_reads_the_targets_own_runs():
    a = prior_belief.build([_grid()], "t1", list(SOURCES), baseline=0.8)
    b = prior_belief.build([_grid({"s1": 0.1, "s6": 0.99})], "t1", list(SOURCES), baseline=0.8)
    assert a.mean == pytest.approx(b.mean) and a.cov == pytest.approx(b.cov)
    assert a.scale.spread == pytest.approx(b.scale.spread) and a.anchored
    # its marginals are the ranking's: P(z > 0) is prior.rank_target's p_beats_baseline
    from stilts.selection import prior

    table = prior.rank_target([_grid()], "t1", list(SOURCES), baseline=0.8).set_index("candidate")
    beats = ndtr(a.mean / np.sqrt(np.diag(a.cov)))
    assert beats == pytest.approx(table.loc[list(SOURCES), "p_beats_baseline"].to_numpy(), abs=1e-9)


def test_the_prior_is_the_rankings_pooled_one_and_reads_other_grids_measurements_of_the_target():
    import dataclasses

    own = _grid()
    other = dataclasses.replace(_grid({"s1": 0.99}), name="h", _normalised=None)
    a = prior_belief.build([own, other], "t1", list(SOURCES), baseline=0.8, scored="g")
    b = prior_belief.build([_grid({"s1": 0.1, "s6": 0.99}), other], "t1", list(SOURCES), baseline=0.8, scored="g")
    assert a.mean == pytest.approx(b.mean) and a.cov == pytest.approx(b.cov)  # the scored grid's pairs: never
    c = prior_belief.build([own, dataclasses.replace(_grid(), name="h", _normalised=None)], "t1", list(SOURCES),
                           baseline=0.8, scored="g")
    i = list(SOURCES).index("s1")
    assert a.mean[i] - c.mean[i] > 0.1  # grid h measured s1 high on t1: the prior says so
    eff = prior.fit([own], {"t1"})
    assert prior_belief.level(eff, eff.a.reindex(list(SOURCES)).to_numpy(), list(SOURCES)) == pytest.approx(0.0)


def test_restart_noise_is_pooled_per_target_and_scales_the_support():
    runs = pd.DataFrame({"source": ["a", "a", "b", "b", "none"], "task": "t", "role": "target",
                         "restart": [0, 1, 0, 1, 0], "score": [0.5, 0.7, 0.4, 0.4, 0.3]})
    assert grids.restart_noise(runs)["t"] == pytest.approx(0.02 / 2)
    scale = prior_belief.scale([_grid()], "t1")
    assert scale.weight.sum() == pytest.approx(1.0) and (scale.spread > 0).all() and (scale.noise_ratio > 0).all()
    no_restarts = grids.from_runs("one", runs_of({(s, t): 0.5 + 0.01 * i for i, s in enumerate(SOURCES)
                                                  for t in TARGETS}, restarts=1))
    assert set(prior_belief.scale([no_restarts], "t1").noise_ratio) == set(prior_belief.DEFAULT_NOISE_RATIOS)


def test_a_selection_study_has_restarts_per_source_and_one_intermediate_run_per_candidate(tmp_path):
    from stilts import config, pipeline

    raw = {"tasks": {"intermediate": ["syn_nli"], "target": ["syn_rte"]},
           "study": {"restarts": 1, "source_restarts": {"none": 2, "syn_nli": 3}, "intermediate_restarts": 1}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    p = config.load(tmp_path / "p.yaml")
    stages = pipeline.stages(p)
    assert {n for n in stages if n.startswith(("intermediate-", "transfer-"))} == {
        "intermediate-syn_nli-r0", "transfer-none-syn_rte-r0", "transfer-none-syn_rte-r1",
        "transfer-syn_nli-syn_rte-r0", "transfer-syn_nli-syn_rte-r1", "transfer-syn_nli-syn_rte-r2"}
    assert "models/intermediate/syn_nli/r0" in stages["transfer-syn_nli-syn_rte-r2"]["deps"]
    assert p.intermediate_restart(2) == 0 and p.restarts_of("none") == 2
    for bad, message in (({"source_restarts": {"mnli": 2}}, "study.source_restarts.mnli"),
                         ({"intermediate_restarts": -1}, "study.intermediate_restarts")):
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**raw, "study": {**raw["study"], **bad}}))
        with pytest.raises(StiltsError, match=message.replace(".", r"\.")):
            config.load(tmp_path / "bad.yaml")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**raw, "select": {"budget": 0}}))
    with pytest.raises(StiltsError, match=r"select\.budget"):
        config.load(tmp_path / "bad.yaml")


def test_the_rules_normal_cdf_is_scipys():
    assert all(math.isclose(rule._cdf(z), ndtr(z), rel_tol=1e-12) for z in (-3.0, -0.2, 0.0, 1.7))
