"""The per-task sweep: precedence (override > sweep > default), deterministic tie-break, stages, MLflow."""

import json

import pytest

from stilts import cells, data, pipeline, sweep, tracking
from stilts.errors import StiltsError

SWEEP = {"enabled": True, "grid": {"lr": [1e-3, 1e-4], "head_dropout": [0.1]}, "overrides": {"epochs": 1}}


def test_precedence_override_then_sweep_then_default(make_params):
    params = make_params(sweep=SWEEP, task_overrides={"syn_rte": {"head_dropout": 0.3, "batch_size": 4}},
                         train={"lr": 5e-5, "epochs": 2})
    path = sweep.result_path(params, "syn_rte")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"chosen": {"lr": 1e-4}}))
    settings, source = sweep.settings_for(params, "syn_rte")
    assert (settings.lr, settings.head_dropout, settings.batch_size, settings.epochs) == (1e-4, 0.3, 4, 2)
    assert (source["lr"], source["head_dropout"], source["batch_size"], source["epochs"]) == \
        ("sweep", "override", "override", "default")
    with pytest.raises(StiltsError, match="no sweep result for 'syn_tense'"):
        sweep.settings_for(params, "syn_tense")


def test_fixed_tasks_are_not_swept(make_params):
    params = make_params(sweep=SWEEP, task_overrides={"syn_nli": {"lr": 1e-5, "head_dropout": 0.2}})
    assert not sweep.needs_sweep(params, "syn_nli") and sweep.needs_sweep(params, "syn_rte")
    stages = pipeline.stages(params)
    assert "sweep-syn_nli" not in stages and "sweep-syn_rte" in stages
    assert "results/sweep/syn_rte.json" in stages["transfer-syn_nli-syn_rte-r0"]["deps"]
    assert "results/sweep/syn_nli.json" not in stages["intermediate-syn_nli-r0"]["deps"]
    settings, source = sweep.settings_for(params, "syn_nli")
    assert settings.lr == 1e-5 and source["lr"] == "override"


def test_tie_break_is_the_first_grid_point():
    assert sweep.choose([{"score": 0.5}, {"score": 0.7}, {"score": 0.7}]) == 1
    assert sweep.choose([{"score": 0.9}, {"score": 0.9}]) == 0


def test_grid_order_and_validation(make_params):
    params = make_params(sweep={"enabled": True, "grid": {"lr": [2e-5, 1e-5], "head_dropout": [0.1, 0.2]}})
    assert sweep.points(params) == [{"lr": 2e-5, "head_dropout": 0.1}, {"lr": 2e-5, "head_dropout": 0.2},
                                    {"lr": 1e-5, "head_dropout": 0.1}, {"lr": 1e-5, "head_dropout": 0.2}]
    with pytest.raises(StiltsError, match="unknown key 'sweep.grid.lrr'"):
        make_params(sweep={"enabled": True, "grid": {"lrr": [1e-5]}})


def test_sweep_run_writes_choice_logs_children_and_cells_use_it(make_params):
    params = make_params(sweep=SWEEP, train={"epochs": 2})
    data.prepare(params, "syn_rte")
    out = cells.sweep(params, "syn_rte")
    assert len(out["points"]) == 2 and out["chosen"]["lr"] in (1e-3, 1e-4)
    runs = tracking.search_runs(params)
    parent = runs[runs["tags.mlflow.runName"] == "sweep:syn_rte"]
    children = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]]
    assert len(children) == 2 and set(children["tags.stilts.role"]) == {"sweep"}
    assert set(children["params.train.epochs"]) == {"1"}  # sweep.overrides apply to sweep runs only
    cells.transfer(params, "none", "syn_rte", 0)
    runs = tracking.search_runs(params, filter_string="tags.`stilts.role` = 'target'")
    assert float(runs["params.train.lr"].iloc[0]) == out["chosen"]["lr"]
    assert runs["params.settings_source.lr"].iloc[0] == "sweep" and runs["params.train.epochs"].iloc[0] == "2"


def test_frozen_probes_also_sweep_the_frozen_lr(make_params):
    from stilts import sweep

    params = make_params(study={"restarts": 1, "probe_mode": "frozen"},
                         sweep={"enabled": True, "grid": {"lr": [2e-5, 1e-5]}})
    assert [p["lr"] for p in sweep.points(params, "syn_tense")] == [2e-5, 1e-5, 1e-3]  # syn_tense is a probe
    assert [p["lr"] for p in sweep.points(params, "syn_rte")] == [2e-5, 1e-5]
