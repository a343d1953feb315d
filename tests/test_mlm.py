"""RQ4 forgetting: MLM loss before/after intermediate training, MLM mixing, and models without an MLM head."""

import pytest

from stilts import cells, config, data, mlm, tracking
from stilts.errors import StiltsError


def test_mixing_ratio_by_hand():
    assert mlm.mixing_ratio(1000, 500, cap=2 ** 14) == 0.5
    assert mlm.mixing_ratio(100_000, 50_000, cap=16384) == 1.0  # both capped at K
    assert mlm.mixing_ratio(400, 50_000, cap=800) == 2.0


def test_no_mlm_head_is_reported_not_fatal(make_params):
    params = make_params()
    data.prepare(params, "syn_nli")
    cells.intermediate(params, "syn_nli", 0)
    run = tracking.search_runs(params).iloc[0]
    assert "no trained MLM head" in run["tags.stilts.mlm_unavailable"]
    before = run.get("metrics.mlm_loss_before")
    assert before is None or before != before  # absent, or NaN
    params = make_params(mlm={"tasks": ["syn_nli"]})
    with pytest.raises(StiltsError, match="MLM mixing for 'syn_nli' needs a masked-LM head"):
        cells.intermediate(params, "syn_nli", 0)


def test_mlm_mixing_logs_losses_before_and_after(tiny_mlm_model, make_params, tmp_path):
    params = make_params(model={"name": str(tiny_mlm_model)},
                         mlm={"tasks": ["syn_nli"], "corpus_examples": 64, "eval_examples": 16})
    data.prepare(params, "syn_nli")
    summary = cells.intermediate(params, "syn_nli", 0)
    assert summary["mlm_loss_before"] > 0 and summary["mlm_loss_after"] > 0
    assert summary["mlm_loss_after"] != summary["mlm_loss_before"]
    run = tracking.search_runs(params).iloc[0]
    assert run["tags.stilts.mlm_mixing"] == "true" and float(run["tags.stilts.mlm_ratio"]) == 1.0  # 64 : 64
    assert run["metrics.mlm_loss_after"] == pytest.approx(summary["mlm_loss_after"])
    # the checkpoint is still a plain encoder that transfer cells load
    data.prepare(params, "syn_rte")
    assert 0 <= cells.transfer(params, "syn_nli", "syn_rte", 0)["score"] <= 1


def test_mlm_tasks_must_be_intermediate(tmp_path, tiny_model):
    with pytest.raises(StiltsError, match="'mlm.tasks\\[0\\]' 'syn_rte' is not in tasks.intermediate"):
        config.from_dict({"tasks": {"intermediate": ["syn_nli"], "target": ["syn_rte"]},
                          "mlm": {"tasks": ["syn_rte"]}})
