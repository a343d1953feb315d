"""The MLproject through a real `mlflow run`: overrides, prerequisites (data, sweep), stale entry point runs."""

import shutil
import signal

import pytest
import yaml

from stilts import config, data, mlproject, sweep
from tests.checkout_guard import CHECKOUT
from tests.commands import mlflow_run, runs
from tests.conftest import tiny_params_dict

pytestmark = pytest.mark.slow
TRAIN = {"max_steps": 4, "batch_size": 8, "eval_every": 2, "log_every": 1, "save_interval_s": 0,
         "mixed_precision": "no"}


@pytest.fixture(scope="module")
def project(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("mlproject")
    shutil.copy2(CHECKOUT / "MLproject", root / "MLproject")
    shutil.copy2(CHECKOUT / "conda.yaml", root / "conda.yaml")
    raw = tiny_params_dict(tiny_model, train=TRAIN, mlflow={"experiment": "mlp"},
                           sweep={"enabled": False, "grid": {"lr": [1e-3, 2e-3]}, "overrides": {"max_steps": 2}})
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return root


def test_three_overrides_reach_the_run(project):
    out = mlflow_run(project, "-e", "transfer", "-P", "source=none", "-P", "task=syn_rte",
                     "-P", "overrides=train.max_steps=3 train.batch_size=4 train.log_every=3")
    assert out.returncode == 0, out.stderr[-3000:]
    cell = runs(project).query("`tags.stilts.cell` == 'none/syn_rte/r0'").iloc[0]
    assert (cell["params.train.max_steps"], cell["params.train.batch_size"], cell["params.train.log_every"]) == \
        ("3", "4", "3")
    assert cell["status"] == "FINISHED" and isinstance(cell["tags.mlflow.parentRunId"], str)


def test_task_outside_the_study_runs_its_sweep_first(project):
    assert "syn_copa" not in config.load(project / "params.yaml").all_tasks
    out = mlflow_run(project, "-e", "transfer", "-P", "source=none", "-P", "task=syn_copa",
                     "-P", "overrides=sweep.enabled=true")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "first `stilts prepare --task syn_copa`" in out.stdout
    assert "first `stilts sweep --task syn_copa`" in out.stdout
    df = runs(project)
    cell = df.query("`tags.stilts.cell` == 'none/syn_copa/r0' and `tags.stilts.role` == 'target'").iloc[0]
    assert cell["params.settings_source.lr"] == "sweep" and cell["status"] == "FINISHED"
    assert len(df.query("`tags.stilts.role` == 'sweep' and `tags.stilts.task` == 'syn_copa'")) == 3  # parent + 2 points

    # cached like `dvc repro`: nothing to do again until an input of the sweep (or of the data) changes
    a = mlproject._parse(["transfer", "--source", "none", "--task", "syn_copa", "--overrides", "sweep.enabled=true"])
    params = config.load(project / "params.yaml", ["sweep.enabled=true"])
    assert data.is_current(params, "syn_copa") and sweep.is_current(params, "syn_copa")
    assert mlproject.prerequisites(params, a) == []
    changed = config.load(project / "params.yaml", ["sweep.enabled=true", "sweep.grid.lr=[1e-3]"])
    assert mlproject.prerequisites(changed, a) == [["sweep", "--task", "syn_copa"]]
    regenerated = config.load(project / "params.yaml", ["sweep.enabled=true", "data.generated_train=70"])
    assert mlproject.prerequisites(regenerated, a) == [["prepare", "--task", "syn_copa"],
                                                        ["sweep", "--task", "syn_copa"]]


def test_killed_mlflow_run_leaves_no_running_run(project):
    args = ["-e", "transfer", "-P", "source=none", "-P", "task=syn_tense"]
    killed = mlflow_run(project, *args, fault="train_step:3:group")
    assert killed.returncode == -signal.SIGKILL
    before = runs(project).query("status == 'RUNNING'")
    entry = "transfer none syn_tense 0"
    assert sorted(before["tags.stilts.entry_point"].fillna(before["tags.stilts.cell"])) == \
        ["none/syn_tense/r0", entry]  # zombies: the entry point's run and the cell's
    old_parent = before.query(f"`tags.stilts.entry_point` == '{entry}'")["run_id"].iloc[0]
    again = mlflow_run(project, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    df = runs(project)
    assert (df["status"] == "RUNNING").sum() == 0
    assert df.set_index("run_id").loc[old_parent, "status"] == "KILLED"
    cell = df.query("`tags.stilts.cell` == 'none/syn_tense/r0'")
    assert list(cell["status"]) == ["FINISHED"] and cell["tags.stilts.resumed"].iloc[0] == "true"
    new_parent = df.query(f"`tags.stilts.entry_point` == '{entry}' and status == 'FINISHED'")["run_id"]
    assert list(cell["tags.mlflow.parentRunId"]) == list(new_parent)
