"""Exactly one FINISHED run per cell: a finished twin is restored, not retrained; a retrained cell supersedes."""

import json

import pytest

from stilts import cells, data, tracking


def _finished(params, cell: str):
    runs = tracking.search_runs(params)
    return runs[(runs["tags.stilts.cell"] == cell) & (runs["status"] == "FINISHED")]


@pytest.fixture
def baseline(make_params):
    params = make_params()
    data.prepare(params, "syn_rte")
    first = cells.transfer(params, "none", "syn_rte", 0)
    return params, first


def test_finished_twin_is_restored_without_training(baseline, monkeypatch):
    params, first = baseline
    out = cells.result_path(params, "none", "syn_rte", 0)
    out.unlink()  # as when a worker was lost after the cell finished, or `dvc repro` removed the output
    import stilts.train as train_mod

    def must_not_train(*a, **k):
        raise AssertionError("the cell trained again")

    monkeypatch.setattr(train_mod, "train", must_not_train)
    again = cells.transfer(params, "none", "syn_rte", 0)
    assert again["mlflow_run_id"] == first["mlflow_run_id"] and again["score"] == first["score"]
    assert json.loads(out.read_text())["fingerprint"] == first["fingerprint"]
    assert list(_finished(params, "none/syn_rte/r0")["run_id"]) == [first["mlflow_run_id"]]


def test_retrained_cell_supersedes_the_earlier_run(baseline, make_params):
    params, first = baseline
    params = make_params(train={"lr": 2e-3})  # other settings: the same cell must train again
    second = cells.transfer(params, "none", "syn_rte", 0)
    assert second["mlflow_run_id"] != first["mlflow_run_id"]
    assert list(_finished(params, "none/syn_rte/r0")["run_id"]) == [second["mlflow_run_id"]]
    old = tracking.search_runs(params).set_index("run_id").loc[first["mlflow_run_id"]]
    assert old["status"] == "KILLED" and old["tags.stilts.superseded_by"] == second["mlflow_run_id"]


def test_intermediate_without_its_checkpoint_retrains_and_supersedes(make_params):
    import shutil

    params = make_params()
    data.prepare(params, "syn_nli")
    first = cells.intermediate(params, "syn_nli", 0)
    shutil.rmtree(cells.checkpoint_dir(params, "syn_nli", 0))
    second = cells.intermediate(params, "syn_nli", 0)
    assert (cells.checkpoint_dir(params, "syn_nli", 0) / "stilts.json").is_file()
    assert list(_finished(params, "syn_nli/syn_nli/r0")["run_id"]) == [second["mlflow_run_id"]]
    assert second["mlflow_run_id"] != first["mlflow_run_id"]
