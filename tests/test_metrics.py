import math

import pytest

from stilts import metrics


def test_accuracy_and_f1_by_hand():
    pred, gold = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]
    # tp=2 fp=1 fn=1 → f1 = 4/6
    m = metrics.compute("acc_f1", pred, gold)
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["acc_f1"] == pytest.approx((0.6 + 2 / 3) / 2)


def test_macro_f1_by_hand():
    pred, gold = [0, 0, 1, 2, 2, 1], [0, 1, 1, 2, 0, 1]
    # class0: tp1 fp1 fn1 → .5 ; class1: tp2 fp0 fn1 → .8 ; class2: tp1 fp1 fn0 → 2/3
    assert metrics.compute("macro_f1", pred, gold)["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_mcc_by_hand_and_constant_prediction():
    pred, gold = [1, 1, 0, 0], [1, 0, 0, 0]
    # tp1 tn2 fp1 fn0 → (2-0)/sqrt(2*1*3*2)
    assert metrics.compute("mcc", pred, gold)["mcc"] == pytest.approx(2 / math.sqrt(12))
    assert metrics.compute("mcc", [1, 1, 1], [1, 0, 1])["mcc"] == 0.0


def test_unknown_metric_suggests():
    from stilts.errors import StiltsError

    with pytest.raises(StiltsError, match="did you mean 'accuracy'"):
        metrics.compute("acuracy", [1], [1])
