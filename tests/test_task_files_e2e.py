"""Declared tasks through `dvc repro` (an edit of a task file re-runs its cells only) and `mlflow run`."""

import json
import shutil

import pytest
import yaml

from tests.checkout_guard import CHECKOUT
from tests.commands import git_dvc_init, mlflow_run, ran, run
from tests.conftest import tiny_params_dict
from tests.task_files import DECLARED, declare

pytestmark = pytest.mark.slow
TRAIN = {"max_steps": 2, "batch_size": 8, "eval_every": 2, "log_every": 1, "save_interval_s": 0,
         "mixed_precision": "no"}


@pytest.fixture(scope="module")
def study(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("declared")
    for name in DECLARED:
        declare(root, name)
    raw = tiny_params_dict(tiny_model, train=TRAIN)
    raw["tasks"] = {"intermediate": ["my_reviews"], "target": ["my_pairs", "my_scores", "my_choices"]}
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    git_dvc_init(root)
    run(root, "stilts", "pipeline")
    return root, run(root, "dvc", "repro")


def test_repro_trains_every_declared_task(study):
    root, first = study
    cells = {f"transfer-{s}-{t}-r0" for s in ("none", "my_reviews") for t in ("my_pairs", "my_scores", "my_choices")}
    assert ran(first) == {f"prepare-{n}" for n in DECLARED} | {"settings", "intermediate-my_reviews-r0",
                                                                "analyze"} | cells
    assert "- tasks\n" in (root / "dvc.yaml").read_text()  # the task files: a dependency of the settings stage
    settings = json.loads((root / "data" / "settings" / "train" / "my_scores.json").read_text())
    assert settings["task"]["type"] == "regression" and settings["task"]["fields"]["label"] == "score"


def test_second_repro_does_nothing_and_a_task_file_edit_reruns_its_cells_only(study):
    root, _ = study
    assert ran(run(root, "dvc", "repro")) == set()
    path = root / "tasks" / "my_pairs.yaml"
    decl = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**decl, "description": "pairs, described"}))
    assert ran(run(root, "dvc", "repro")) == {"settings"}  # a description is no setting: no task's settings change
    path.write_text(yaml.safe_dump({**decl, "metric": "accuracy"}))
    assert ran(run(root, "dvc", "repro")) == {"settings", "prepare-my_pairs", "transfer-none-my_pairs-r0",
                                             "transfer-my_reviews-my_pairs-r0", "analyze"}


def test_mlflow_run_trains_a_declared_task(tiny_model, tmp_path):
    root = tmp_path / "mlp"
    root.mkdir()
    shutil.copy2(CHECKOUT / "MLproject", root / "MLproject")
    shutil.copy2(CHECKOUT / "conda.yaml", root / "conda.yaml")
    declare(root, "my_choices")
    raw = tiny_params_dict(tiny_model, train=TRAIN, mlflow={"experiment": "mlp"})
    raw["tasks"] = {"target": ["my_choices"]}
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    out = mlflow_run(root, "-e", "transfer", "-P", "source=none", "-P", "task=my_choices")
    assert out.returncode == 0, out.stderr[-2000:]
    assert (root / "results" / "none" / "my_choices" / "r0.json").is_file()
    assert (root / "data" / "processed" / "my_choices" / "meta.json").is_file()


def test_a_study_of_declared_tasks_on_a_local_dask_cluster(tiny_model, tmp_path):
    """The Dask engine's workers run each stage as its own `stilts` command: they read the task files too."""
    root = tmp_path / "dask"
    root.mkdir()
    declare(root, "my_reviews")
    declare(root, "my_scores")
    raw = tiny_params_dict(tiny_model, train=TRAIN)
    raw["tasks"] = {"intermediate": ["my_reviews"], "target": ["my_scores"]}
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    git_dvc_init(root)
    out = run(root, "stilts", "study", "--cluster", "local", "--jobs", "2")
    assert "stages ran and are recorded" in out.stdout
    assert (root / "results" / "my_reviews" / "my_scores" / "r0.json").is_file()
    assert ran(run(root, "dvc", "repro")) == set()
