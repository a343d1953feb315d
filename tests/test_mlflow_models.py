"""Models and datasets in MLflow: checkpoints as logged models that load through pyfunc, datasets as run inputs,
the target cells' dev predictions as an artifact."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from stilts import cell_outputs, cells, config, data, predict, tracking
from stilts.errors import StiltsError
from stilts.io import read_json
from tests.conftest import tiny_params_dict

TRAIN = {"mixed_precision": "no", "max_steps": 6, "eval_every": 3}


@pytest.fixture(scope="module")
def fp32():
    """These cells train in fp32 (the pyfunc predicts in fp32); Accelerate keeps one precision per process."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()


@pytest.fixture(scope="module")
def chain(tiny_model, tmp_path_factory, fp32):
    """One intermediate → target chain for the module; mlflow's own API (search_logged_models, models:/ URIs)
    reads the tracking URI from the environment."""
    import mlflow

    with pytest.MonkeyPatch.context() as mp:
        params = _project(tiny_model, tmp_path_factory.mktemp("models"), mp)
        for t in ("syn_nli", "syn_rte"):
            data.prepare(params, t)
        inter = cells.intermediate(params, "syn_nli", 0)
        target = cells.transfer(params, "syn_nli", "syn_rte", 0)
        yield params, inter, target, mlflow.get_experiment_by_name("test").experiment_id


def _project(tiny_model, root, mp, **over):
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(tiny_params_dict(tiny_model, train=TRAIN, **over), sort_keys=False))
    params = config.load(params_file)
    mp.setenv("MLFLOW_TRACKING_URI", tracking.tracking_uri(params))
    return params


def _accuracy(frame, records) -> float:
    return float(np.mean([p == r["label"] for p, r in zip(frame["prediction"], records)]))


def test_checkpoint_is_a_logged_model_that_loads_like_its_dvc_path(chain):
    import mlflow

    params, inter, _, exp = chain
    (model,) = mlflow.search_logged_models(experiment_ids=[exp], output_format="list")
    assert model.status == "READY" and model.source_run_id == inter["mlflow_run_id"]
    assert model.tags["stilts.checkpoint"] == "models/intermediate/syn_nli/r0"
    assert model.params["task"] == "syn_nli" and model.params["restart"] == "0"
    linked = {m.key: m for m in model.metrics}
    assert linked["final_dev_accuracy"].value == pytest.approx(inter["metrics"]["accuracy"])
    assert linked["final_dev_accuracy"].dataset_name == "syn_nli/validation"
    run = mlflow.get_run(inter["mlflow_run_id"])
    assert [o.model_id for o in run.outputs.model_outputs] == [model.model_id]
    assert run.data.tags["stilts.model_id"] == model.model_id

    records = data.load_records(params, "syn_nli", "validation")
    ckpt = params.root / "models" / "intermediate" / "syn_nli" / "r0"
    direct = predict.load(ckpt).predict(records)
    via_mlflow = mlflow.pyfunc.load_model(f"models:/{model.model_id}").predict(records)
    assert via_mlflow["logits"].tolist() == direct["logits"].tolist()  # the same model, bit for bit
    assert list(via_mlflow["prediction"]) == list(direct["prediction"])
    # and it is the model the run reported: its dev accuracy is the run's
    assert _accuracy(via_mlflow, records) == pytest.approx(run.data.metrics["final_dev_accuracy"])
    # records without labels (what a user predicts on), as a DataFrame
    import pandas as pd

    unlabelled = pd.DataFrame([{k: v for k, v in r.items() if k != "label"} for r in records[:4]])
    loaded = mlflow.pyfunc.load_model(f"models:/{model.model_id}")
    # the same 4 records, batched as the direct path batches them (a batch padded to other lengths may differ
    # in the last bits on CPUs whose kernels depend on the shape)
    first4 = predict.load(ckpt).predict(records[:4])
    assert loaded.predict(unlabelled)["logits"].tolist() == first4["logits"].tolist()
    short = loaded.predict(unlabelled, params={"batch_size": 2, "max_length": 8})  # truncated inputs: other logits
    assert len(short) == 4 and short["logits"].tolist() != first4["logits"].tolist()


def _tried(folder: Path, why: str) -> str:
    return f"{folder} ({why}"


def test_a_referenced_checkpoint_must_be_there_and_unchanged(chain, tmp_path, monkeypatch):
    import mlflow

    params, _, _, exp = chain
    monkeypatch.chdir(tmp_path)  # a working directory without the checkpoint
    (model,) = mlflow.search_logged_models(experiment_ids=[exp], output_format="list")
    uri, rel = f"models:/{model.model_id}", Path("models/intermediate/syn_nli/r0")
    ckpt = params.root / rel
    assert not list(Path(mlflow.artifacts.download_artifacts(uri)).rglob("*.safetensors"))  # no weights copied
    clone = tmp_path / "clone"
    shutil.copytree(ckpt, clone / rel)
    ckpt.rename(ckpt.with_name("away"))
    try:
        with pytest.raises(StiltsError) as gone:
            mlflow.pyfunc.load_model(uri)
        moved = mlflow.pyfunc.load_model(uri, model_config={"project_root": str(clone)})  # a clone elsewhere
        assert len(moved.predict(data.load_records(params, "syn_nli", "validation")[:2])) == 2
        (clone / rel / "head.safetensors").write_bytes(b"not the head")
        with pytest.raises(StiltsError) as neither:
            mlflow.pyfunc.load_model(uri, model_config={"project_root": str(clone)})
    finally:
        ckpt.with_name("away").rename(ckpt)
    assert str(gone.value).startswith(f"{rel}: no folder holds the checkpoint of this logged model; tried ")
    assert _tried(tmp_path / rel, "not there)") in str(gone.value)
    assert _tried(ckpt, "not there)") in str(gone.value) and f"`dvc pull {rel}`" in str(gone.value)
    assert _tried(clone / rel, "head.safetensors differs (logged sha256") in str(neither.value)
    assert _tried(ckpt, "not there)") in str(neither.value)
    # with the logged project's checkpoint back, the changed clone is passed over
    assert len(mlflow.pyfunc.load_model(uri, model_config={"project_root": str(clone)}).predict(
        data.load_records(params, "syn_nli", "validation")[:2])) == 2


def test_a_checkout_with_another_checkpoint_at_the_same_path_loads_the_logged_one(chain, tmp_path, monkeypatch):
    """Loading from inside another project (a checkout whose own study wrote models/intermediate/syn_nli/r0):
    its folder fails the logged hashes and is passed over; the model loads from the project it was logged in."""
    import mlflow

    params, _, _, exp = chain
    (model,) = mlflow.search_logged_models(experiment_ids=[exp], output_format="list")
    rel = Path("models/intermediate/syn_nli/r0")
    checkout = tmp_path / "checkout"
    shutil.copytree(params.root / rel, checkout / rel)
    config_json = checkout / rel / "config.json"
    config_json.write_text(config_json.read_text().replace("{", '{"_another_study": true, ', 1))
    monkeypatch.chdir(checkout)
    records = data.load_records(params, "syn_nli", "validation")
    expected = predict.load(params.root / rel).predict(records)["logits"].tolist()
    assert mlflow.pyfunc.load_model(f"models:/{model.model_id}").predict(records)["logits"].tolist() == expected
    (params.root / rel).rename(params.root / rel.with_name("away"))
    try:
        with pytest.raises(StiltsError) as none_match:
            mlflow.pyfunc.load_model(f"models:/{model.model_id}")
    finally:
        (params.root / rel.with_name("away")).rename(params.root / rel)
    assert _tried(checkout / rel, "config.json differs (logged sha256") in str(none_match.value)
    assert _tried(params.root / rel, "not there)") in str(none_match.value)


def test_copied_checkpoint_loads_without_the_project(tiny_model, tmp_path, monkeypatch, fp32):
    import mlflow

    params = _project(tiny_model, tmp_path, monkeypatch, mlflow={"experiment": "copied", "log_models": "copy"})
    data.prepare(params, "syn_nli")
    cells.intermediate(params, "syn_nli", 0)
    exp = mlflow.get_experiment_by_name("copied").experiment_id
    (model,) = mlflow.search_logged_models(experiment_ids=[exp], output_format="list")
    records = data.load_records(params, "syn_nli", "validation")
    ckpt = params.root / "models" / "intermediate" / "syn_nli" / "r0"
    expected = predict.load(ckpt).predict(records)["logits"].tolist()
    shutil.rmtree(ckpt)
    assert list(Path(mlflow.artifacts.download_artifacts(f"models:/{model.model_id}")).rglob("model.safetensors"))
    assert mlflow.pyfunc.load_model(f"models:/{model.model_id}").predict(records)["logits"].tolist() == expected


def test_runs_list_their_datasets_and_targets_their_dev_predictions(chain):
    import mlflow

    params, inter, target, exp = chain
    for summary, task in ((inter, "syn_nli"), (target, "syn_rte")):
        meta = read_json(params.root / "data" / "processed" / task / "meta.json")
        inputs = mlflow.get_run(summary["mlflow_run_id"]).inputs.dataset_inputs
        got = {i.dataset.name: (i.dataset.digest, {t.key: t.value for t in i.tags}) for i in inputs}
        assert got == {f"{task}/{s}": (meta["data_hash"][:36], {"mlflow.data.context": s, "stilts.task": task})
                       for s in ("train", "validation")}
        profile = json.loads(inputs[0].dataset.profile)
        assert profile["data_hash"] == meta["data_hash"] and profile["source"] == "generated"
        assert profile["source_files"] == meta["source_files"] and profile["generator"]["name"] == task
    # artifacts (models, predictions) beside the sqlite store, whatever the working directory
    assert mlflow.get_experiment(exp).artifact_location == (params.root / "mlruns" / "test").resolve().as_uri()
    # filtering runs by dataset, as the UI does
    found = mlflow.search_runs([exp], "dataset.name = 'syn_rte/train'", output_format="list")
    assert [r.info.run_id for r in found] == [target["mlflow_run_id"]]

    lines = mlflow.artifacts.load_text(f"runs:/{target['mlflow_run_id']}/{cell_outputs.DEV_PREDICTIONS}").splitlines()
    rows = [json.loads(x) for x in lines]
    records = data.load_records(params, "syn_rte", "validation")
    assert [r["idx"] for r in rows] == [r["idx"] for r in records]
    assert [r["gold"] for r in rows] == [r["label"] for r in records]
    assert np.mean([r["prediction"] == r["gold"] for r in rows]) == pytest.approx(target["score"])


def test_a_run_killed_after_its_checkpoint_was_written_is_completed(tiny_model, tmp_path, monkeypatch, fp32):
    """On a project of its own: the module's chain stays as its cells left it, whatever order the tests run in."""
    import mlflow

    params = _project(tiny_model, tmp_path, monkeypatch, mlflow={"experiment": "killed"})
    data.prepare(params, "syn_nli")
    first = cells.intermediate(params, "syn_nli", 0)
    exp = mlflow.get_experiment_by_name("killed").experiment_id
    client = mlflow.MlflowClient(tracking.tracking_uri(params))
    # as if SIGKILLed between the checkpoint's rename and logging its model: RUNNING, no model
    (model,) = mlflow.search_logged_models(experiment_ids=[exp], output_format="list")
    client.delete_logged_model(model.model_id)
    client.update_run(first["mlflow_run_id"], "RUNNING")
    again = cells.intermediate(params, "syn_nli", 0)  # the checkpoint is kept (same settings), the run completed
    assert again["mlflow_run_id"] == first["mlflow_run_id"]
    run = mlflow.get_run(first["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    (model,) = mlflow.search_logged_models(experiment_ids=[exp], output_format="list")
    assert model.source_run_id == run.info.run_id and model.status == "READY"
