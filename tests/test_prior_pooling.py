"""Pooling several grids for the prior: closeness features, weights learned leave-one-grid-out, the user's own
grid weighing most, disagreement widening the uncertainty, and the ranked target's own measurements in other
grids (never in the scored one)."""

import math

import numpy as np
import pandas as pd
import pytest

from stilts.selection import encoders, evaluate, grids, pooling, prior

A = {"s1": 1.5, "s2": 0.9, "s3": 0.2, "s4": -0.4, "s5": -1.3}  # the roberta grids' source effects
B = {"s1": -1.3, "s2": -0.4, "s3": 0.2, "s4": 0.9, "s5": 1.5}  # the t5 grids': the reverse
TARGETS = [f"t{i}" for i in range(6)]


def grid(name, effects, encoder, method="full fine-tuning", published=True, seed=0, targets=TARGETS, noise=0.05):
    rng = np.random.default_rng(seed)
    rows = []
    for i, t in enumerate(targets):
        for s, a in effects.items():
            v = 0.6 + 0.01 * i + 0.03 * (a + rng.normal(0, noise))
            rows += [{"source": s, "task": t, "role": "target", "restart": k, "score": v + d}
                     for k, d in enumerate((-0.002, 0.002))]
    return grids.from_runs(name, pd.DataFrame(rows), encoder, method, published)


def family_grids():
    return [grid("r-base", A, "roberta-base", seed=1), grid("r-large", A, "roberta-large", seed=2),
            grid("t-base", B, "google/t5-base-lm-adapt", seed=3), grid("t-large", B, "t5-large", seed=4)]


def order(table):
    return evaluate.order(dict(zip(table["candidate"], table["score"])))


def test_closeness_from_encoder_names():
    assert encoders.family("FacebookAI/roberta-large") == "roberta" and encoders.family("microsoft/deberta-v3-base") \
        == "deberta" and encoders.family("google/t5-base-lm-adapt") == "t5" and encoders.family("xyz") is None
    assert encoders.size("roberta-base") == 125 and encoders.size("my-bert-large-thing") == 350
    f = encoders.closeness("roberta-large", "adapters", "roberta-base", "full fine-tuning")
    assert f["same_encoder"] == 0 and f["same_family"] == 1 and f["same_method"] == 0
    assert f["size_distance"] == pytest.approx(math.log(355 / 125))
    assert math.isnan(encoders.closeness("x", "BitFit", "y", "BitFit")["size_distance"])


def test_weights_learned_leave_one_grid_out_follow_the_users_encoder_family():
    grid_list = family_grids()
    for model, truth in (("roberta-base", A), ("t5-small", B)):
        pool = pooling.prepare(grid_list, model)
        assert pool.theta[1] > 0  # same family: learned to matter (each family's grids predict each other)
        heavy = [n for n in pool.weights if pool.weights[n] == max(pool.weights.values())]
        assert all(n.startswith(model[0]) for n in heavy)
        table = prior.rank_target(grid_list, "new", list(truth), model=model, pool=pool)
        want, got = sorted(truth, key=truth.get, reverse=True), order(table)
        assert got[0] == want[0] and want[1] in got[:3]
        # the top 3 as a set: the other family's best (the last here) covers the grids that disagree
        assert want[-1] in got[:3] and "in the top 3 as a set" in table.set_index("candidate").at[want[-1], "basis"]
        assert table["basis"].iloc[0].startswith("grids: ") and "%" in table["basis"].iloc[0]


def test_equal_weights_when_closeness_predicts_nothing():
    grid_list = [grid(f"g{i}", A, enc, seed=i) for i, enc in enumerate(("roberta-base", "t5-base", "gpt2-medium"))]
    pool = pooling.prepare(grid_list, "bert-base-uncased")  # none measured with it
    assert list(pool.theta) == [0, 0, 0, 0]
    assert set(np.round(list(pool.weights.values()), 9)) == {round(1 / 3, 9)}


def test_the_users_own_grid_weighs_most():
    own = grid("my-study", B, "roberta-base", published=False, seed=9)
    pool = pooling.prepare([*family_grids(), own], "roberta-base")
    others = [w for n, w in pool.weights.items() if n != "my-study"]
    assert pool.weights["my-study"] == pytest.approx(pooling.OWN_FACTOR * max(others))
    assert pool.weights["my-study"] > 0.3


def test_grids_that_disagree_widen_the_uncertainty():
    one = grid("one", A, "roberta-base", seed=1)
    agree = grid("agree", A, "roberta-base", seed=2)
    disagree = grid("disagree", B, "roberta-base", seed=3)
    same = pooling.prepare([one, agree], "roberta-base")
    split = pooling.prepare([one, disagree], "roberta-base")
    v_same = pooling.pooled_effects(same.effects, same.weights, ["s1"])["s1"][1]
    v_split = pooling.pooled_effects(split.effects, split.weights, ["s1"])["s1"][1]
    assert v_split > 10 * v_same


def test_other_grids_measurements_of_the_target_count_but_never_the_scored_grids():
    targets = [*TARGETS, "rte"]
    scored, other = grid("scored", A, "roberta-base", seed=1, targets=targets), \
        grid("other", A, "roberta-base", seed=2, targets=targets)

    def with_rte(g, values):
        g = grids.Grid(g.name, g.means.copy(), g.baseline, g.first_baseline, g.encoder, g.method, g.published)
        g.means.loc["rte"] = [values[s] for s in g.means.columns]
        return g

    def rank(grid_list, scored_name):
        return prior.rank_target(grid_list, "rte", list(A), model="roberta-base", scored=scored_name)

    before = rank([scored, other], "scored")
    assert "rte itself measured in other" in before["basis"].iloc[0]
    scrambled = with_rte(scored, {"s1": 0.1, "s2": 0.9, "s3": 0.5, "s4": 0.3, "s5": 0.7})
    pd.testing.assert_frame_equal(before, rank([scrambled, other], "scored"))  # the scored grid's rte: unused
    reversed_rte = with_rte(other, {s: 0.6 - 0.1 * a for s, a in A.items()})
    moved = rank([scored, reversed_rte], "scored")
    assert order(moved) != order(before)  # another grid's rte: counts
    assert "rte itself" not in rank([scored, reversed_rte], None)["basis"].iloc[0]
    pd.testing.assert_frame_equal(rank([scored, other], None), rank([scrambled, reversed_rte], None))


def test_a_grid_measured_with_the_users_encoder_weighs_at_least_twice_any_other():
    grid_list = [grid(f"g{i}", A, enc, seed=i) for i, enc in enumerate(("roberta-base", "t5-base", "gpt2-medium"))]
    pool = pooling.prepare(grid_list, "FacebookAI/roberta-base")
    assert pool.weights["g0"] == pytest.approx(pooling.SAME_FACTOR * max(pool.weights["g1"], pool.weights["g2"]))


def test_the_top_3_covers_targets_that_want_different_candidates():
    """Half the targets want s1 then s2, half want s5; s2 scores second overall but never wins where s1 loses."""
    effects_a = {"s1": 1.5, "s2": 1.4, "s3": 0.2, "s4": -0.4, "s5": -1.3}
    effects_b = {"s1": 1.5, "s2": 1.4, "s3": 0.2, "s4": -0.4, "s5": 2.5}
    def mixed(name, shift):
        rows = []
        for i, t in enumerate(TARGETS):
            eff = effects_a if (i + shift) % 2 else effects_b
            rows += [{"source": s, "task": t, "role": "target", "restart": 0, "score": 0.6 + 0.03 * a}
                     for s, a in eff.items()]
        return grids.from_runs(name, pd.DataFrame(rows), "roberta-base", None, True)

    two = [mixed("one", 0), mixed("two", 1)]  # the top 3 is chosen as a set when two grids or more are pooled
    table = prior.rank_target(two, "new", list(effects_a), model="roberta-base")
    assert order(table)[:2] == ["s1", "s5"]  # s5 wins half the targets; s2 only where s1 wins too
    assert table.set_index("candidate").at["s1", "score"] > table.set_index("candidate").at["s5", "score"]
    alone = prior.rank_target(two[:1], "new", list(effects_a), model="roberta-base")
    assert order(alone)[:2] == ["s1", "s2"]  # one grid: each candidate by its own score
