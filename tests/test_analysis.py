"""Statistics checked against hand-computed values on small synthetic tables."""

import numpy as np
import pandas as pd
import pytest

from stilts.analysis import correlate, degenerate, transfer


def runs(rows):
    return pd.DataFrame(rows, columns=["source", "task", "role", "restart", "score"])


def test_deltas_by_hand():
    df = runs([("none", "a", "target", 0, 0.60), ("none", "a", "target", 1, 0.70),
               ("x", "a", "target", 0, 0.80), ("x", "a", "target", 1, 0.90),
               ("y", "a", "target", 0, 0.50), ("y", "a", "target", 1, np.nan),
               ("none", "p", "probe", 0, 0.5), ("x", "p", "probe", 0, 0.4)])
    cells = transfer.cell_stats(df.dropna())
    x = cells.set_index(["source", "task"]).loc[("x", "a")]
    assert x["mean"] == pytest.approx(85.0) and x["baseline_mean"] == pytest.approx(65.0)
    assert x["delta"] == pytest.approx(20.0) and x["std"] == pytest.approx(np.std([80, 90], ddof=1))
    # Welch with equal variances and n=2 each: t = 20 / sqrt(50/2 + 50/2) = 2.828, df = 2
    from scipy import stats

    assert x["p"] == pytest.approx(2 * stats.t.sf(20 / np.sqrt(50), 2))
    half = stats.t.ppf(0.975, 2) * np.sqrt(50)
    assert (x["ci_low"], x["ci_high"]) == (pytest.approx(20 - half), pytest.approx(20 + half))
    y = cells.set_index(["source", "task"]).loc[("y", "a")]
    assert y["n"] == 1 and y["delta"] == pytest.approx(-15.0) and np.isnan(y["p"]) and not y["significant"]
    m = transfer.matrix(cells, ["a"], ["p"])
    assert list(m.columns) == ["a", "p", "avg_target"]
    assert m.loc["x", "p"] == pytest.approx(-10.0) and m.loc["x", "avg_target"] == pytest.approx(20.0)
    ps = transfer.per_source(cells)
    assert ps.loc["x", "wins"] == 1 and ps.loc["y", "losses"] == 1


def test_holm_by_hand_changes_the_verdict():
    p = [0.01, 0.04, 0.03, np.nan]
    adjusted, reject = correlate.holm(p, 0.05)
    # sorted 0.01, 0.03, 0.04 → 3·0.01 = 0.03, 2·0.03 = 0.06, max(0.06, 1·0.04) = 0.06
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06]) and np.isnan(adjusted[3])
    assert list(reject) == [True, False, False, False]  # 0.04 and 0.03 pass uncorrected, not after Holm


def test_correlations_over_models():
    rng = np.random.default_rng(0)
    rows = []
    for s in range(6):
        for r in range(3):
            t = rng.uniform(0.5, 0.9)
            rows += [(f"s{s}", "t1", "target", r, t), (f"s{s}", "t2", "target", r, 1 - t),
                     (f"s{s}", "p1", "probe", r, t + 0.01 * rng.normal()), (f"s{s}", "p2", "probe", r, 0.5)]
    rows += [("none", "t1", "target", 0, 0.1)]  # the baseline is not a model row
    c = correlate.correlations(runs(rows), ["t1", "t2"], ["p1", "p2"])
    sp = c[c["method"] == "spearman"].set_index(["task_a", "task_b"])
    assert sp.loc[("t1", "t2"), "rho"] == pytest.approx(-1.0) and sp.loc[("t1", "t2"), "n"] == 18
    assert sp.loc[("t1", "p1"), "significant"]
    assert np.isnan(sp.loc[("t1", "p2"), "rho"])  # a constant column has no rank correlation
    assert len(sp) == 5  # t1-t2, t1-p1, t1-p2, t2-p1, t2-p2


def test_degenerate_flags():
    df = pd.DataFrame({"source": ["a", "a", "b"], "task": ["t", "t", "t"], "score": [0.5, 0.8, 0.9],
                       "majority_score": [0.5, 0.5, 0.5], "pred_classes": [2, 1, 2]})
    out = degenerate.flag(df, 0.01)
    assert list(out["degenerate"]) == [True, True, False]
    by_source, _ = degenerate.rates(out)
    assert by_source.loc["a", "rate"] == 1.0 and by_source.loc["b", "rate"] == 0.0
