"""One current run per cell: a finished twin is restored, not retrained; a retrained cell supersedes the earlier
runs (tagged `stilts.superseded_by`, still FINISHED), and the analysis reads the current one."""

import json

import pytest

from stilts import cells, data, tracking


def _finished(params, cell: str):
    runs = tracking.search_runs(params)
    return runs[(runs["tags.stilts.cell"] == cell) & (runs["status"] == "FINISHED")]


def _current(params, cell: str) -> list[str]:
    """The cell's FINISHED runs that no later run superseded."""
    runs = _finished(params, cell)
    tag = runs["tags.stilts.superseded_by"] if "tags.stilts.superseded_by" in runs else None
    return list(runs["run_id"] if tag is None else runs[tag.isna()]["run_id"])


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


def test_retrained_cell_supersedes_the_earlier_run_which_stays_finished(baseline, make_params):
    from stilts.analysis.collect import collect

    params, first = baseline
    one = first["mlflow_run_id"]
    params = make_params(train={"lr": 2e-3})  # other settings: the same cell must train again
    two = cells.transfer(params, "none", "syn_rte", 0)["mlflow_run_id"]
    assert two != one
    runs = tracking.search_runs(params).set_index("run_id")
    assert runs.loc[one, "status"] == runs.loc[two, "status"] == "FINISHED"  # the first run did finish
    assert runs.loc[one, "tags.stilts.superseded_by"] == two and _current(params, "none/syn_rte/r0") == [two]
    assert list(collect(params)["run_id"]) == [two]
    out = cells.result_path(params, "none", "syn_rte", 0)
    out.unlink()  # without the result file, the tag says which run is current
    assert list(collect(params)["run_id"]) == [two]

    params = make_params()  # back to the first settings: the first run is restored and is current again
    assert cells.transfer(params, "none", "syn_rte", 0)["mlflow_run_id"] == one
    runs = tracking.search_runs(params).set_index("run_id")
    assert set(runs["status"]) == {"FINISHED"} and runs.loc[two, "tags.stilts.superseded_by"] == one
    assert _current(params, "none/syn_rte/r0") == [one] and list(collect(params)["run_id"]) == [one]
    out.write_text(json.dumps(json.loads(out.read_text()) | {"mlflow_run_id": two}))
    assert list(collect(params)["run_id"]) == [two]  # the result file's run wins over the tags


def test_intermediate_without_its_checkpoint_retrains_and_supersedes(make_params):
    import shutil

    params = make_params()
    data.prepare(params, "syn_nli")
    first = cells.intermediate(params, "syn_nli", 0)
    shutil.rmtree(cells.checkpoint_dir(params, "syn_nli", 0))
    second = cells.intermediate(params, "syn_nli", 0)
    assert (cells.checkpoint_dir(params, "syn_nli", 0) / "stilts.json").is_file()
    assert second["mlflow_run_id"] != first["mlflow_run_id"]
    # a FINISHED duplicate with the same fingerprint (as after a lost worker): tagged, not ended
    assert set(_finished(params, "syn_nli/syn_nli/r0")["run_id"]) == {first["mlflow_run_id"], second["mlflow_run_id"]}
    assert _current(params, "syn_nli/syn_nli/r0") == [second["mlflow_run_id"]]
