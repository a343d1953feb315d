"""Tasks declared as files in the project: read, checked, listed, prepared and trained through the CLI."""

import json

import pytest
import yaml

from stilts import config
from stilts.tasks import registry
from tests.commands import run_cli
from tests.conftest import tiny_params_dict
from tests.task_files import DECLARED, declare

TRAIN = {"max_steps": 2, "batch_size": 8, "eval_every": 2, "log_every": 1, "save_interval_s": 0,
         "mixed_precision": "no"}


@pytest.fixture
def project(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("STILTS_WORKER", "0")
    monkeypatch.chdir(tmp_path)

    def make(targets=(), intermediate=(), **over):
        raw = tiny_params_dict(tiny_model, train=TRAIN, **over)
        raw["tasks"] = {"intermediate": list(intermediate), "target": list(targets)}
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        return tmp_path

    yield make
    registry.use_project(tmp_path / "no-tasks")  # later tests see the built-in tasks only


def test_each_declared_kind_trains_through_the_cli(project, capsys):
    root = project()
    for name in DECLARED:
        declare(root, name)
    project(targets=list(DECLARED), intermediate=["my_reviews"])
    code, out, _ = run_cli(capsys, "tasks")
    assert code == 0
    listed = {line.split()[0]: line for line in out.splitlines()}
    assert all(name in listed and "present" in listed[name] and "tasks/" in listed[name] for name in DECLARED)
    code, out, err = run_cli(capsys, "prepare")
    assert code == 0, err
    assert "labels read from the train split, sorted: neg, pos" in out  # my_reviews declares none
    meta = json.loads((root / "data/processed/my_reviews/meta.json").read_text())
    assert meta["labels"] == ["neg", "pos"] and meta["labels_from"] == "the train split, sorted"
    for name in DECLARED:
        code, out, err = run_cli(capsys, "transfer", "--source", "none", "--task", name)
        assert code == 0, err
        assert out.startswith(f"transfer none->{name} r0: dev {DECLARED[name][2]['metric']} = ")
    code, _, err = run_cli(capsys, "intermediate", "--task", "my_reviews")
    assert code == 0, err
    code, out, err = run_cli(capsys, "transfer", "--source", "my_reviews", "--task", "my_choices")
    assert code == 0 and out.startswith("transfer my_reviews->my_choices r0"), err
    code, out, err = run_cli(capsys, "analyze")
    assert code == 0, err
    matrix = (root / "reports" / "transfer_matrix.csv").read_text()
    assert "my_choices" in matrix.splitlines()[0]


def test_json_list_and_probing_role(project, capsys):
    root = project()
    path = declare(root, "my_reviews")
    (root / "data/raw/my_reviews").joinpath("train.json").write_text(json.dumps(
        [{"text": "good day", "sentiment": "pos"}, {"text": "bad day", "sentiment": "neg"}] * 8))
    (root / "data/raw/my_reviews").joinpath("dev.json").write_text(json.dumps(
        [{"text": "good show", "sentiment": "pos"}, {"text": "sad show", "sentiment": "neg"}] * 4))
    decl = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**decl, "format": "json", "files": {"train": "train.json",
                                                                         "validation": "dev.json"}}))
    project(targets=[])
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["tasks"]["probe"] = ["my_reviews"]
    raw["study"]["probe_mode"] = "frozen"
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    assert run_cli(capsys, "prepare")[0] == 0
    code, out, err = run_cli(capsys, "transfer", "--source", "none", "--task", "my_reviews")
    assert code == 0 and "dev accuracy" in out, err
    assert json.loads((root / "data/processed/my_reviews/meta.json").read_text())["counts"] == \
        {"train": 16, "validation": 8}


BAD = {
    "unknown type": ({"type": "classifcation"}, "tasks/my_reviews.yaml: 'type': unknown task type 'classifcation' "
                     "(did you mean 'classification'?)"),
    "unknown metric": ({"metric": "acuracy"}, "tasks/my_reviews.yaml: 'metric': unknown metric for classification "
                       "'acuracy' (did you mean 'accuracy'?)"),
    "unknown key": ({"feilds": {}}, "tasks/my_reviews.yaml: unknown key 'feilds' (did you mean 'fields'?)"),
    "column missing": ({"fields": {"text_a": "txt", "label": "sentiment"}},
                       "tasks/my_reviews.yaml: 'fields.text_a': column 'txt' is not in"),
    "file not found": ({"files": {"train": "train.csv", "validation": "valid.csv"}},
                       "tasks/my_reviews.yaml: 'files': not found: "),
    "unknown format": ({"format": "xlsx"}, "tasks/my_reviews.yaml: 'format': unknown format 'xlsx'"),
    "hub offline": ({"files": {}, "hub": "trec"}, "tasks/my_reviews.yaml: 'hub': 'trec' cannot be loaded offline"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_task_file_is_one_line_and_writes_nothing(project, capsys, case):
    root = project(targets=[])
    path = declare(root, "my_reviews")
    over, expected = BAD[case]
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **over}))
    code, _, err = run_cli(capsys, "prepare", "--task", "my_reviews")
    assert code == 2 and len(err.splitlines()) == 1
    assert expected in err, err
    assert not (root / "data" / "processed").exists() and not (root / "mlflow.db").exists()


def test_dev_label_unseen_in_train_and_builtin_name_clash(project, capsys):
    root = project(targets=[])
    declare(root, "my_reviews")
    dev = root / "data/raw/my_reviews/dev.csv"
    dev.write_text(dev.read_text() + "zz,a fine day,neutral\n")
    code, _, err = run_cli(capsys, "prepare", "--task", "my_reviews")
    assert code == 2 and err.endswith("tasks/my_reviews.yaml: 'labels' is not given, and validation labels "
                                      "['neutral'] never occur in train (declare 'labels', or fix the data)")
    assert not (root / "data" / "processed").exists()
    (root / "tasks" / "my_reviews.yaml").rename(root / "tasks" / "rte.yaml")
    code, _, err = run_cli(capsys, "tasks")
    assert code == 2 and "tasks/rte.yaml: task 'rte' is already a built-in task" in err


def test_tasks_dir_is_a_params_key(project, capsys):
    root = project()
    declare(root, "my_scores")
    (root / "tasks").rename(root / "decl")
    with pytest.raises(Exception, match="unknown task 'my_scores'"):
        config.from_dict({"tasks": {"target": ["my_scores"]}}, "params.yaml", root)
    params = config.from_dict({"tasks": {"target": ["my_scores"]}, "data": {"tasks_dir": "decl"}}, "params.yaml",
                               root)
    assert registry.get("my_scores").type == "regression" and params.tasks.target == ["my_scores"]


def test_one_schema_every_builtin_task_is_a_task_file_that_passes_the_checks(tmp_path, monkeypatch):
    """The built-in tasks are the package's task files, read by the loader that reads a project's, with every
    check; the cached parse gives the same tasks as parsing the files afresh, and a stale cache is not used."""
    from stilts.tasks import files, paper

    paths = sorted(files.BUILTIN_DIR.glob("*.yaml"))
    fresh = files.load_dir(files.BUILTIN_DIR, (), project=False)  # parses every file, with the task-file checks
    assert list(fresh) == [p.stem for p in paths] and len(fresh) == 58
    assert files.load_builtin() == fresh and {t.name: t for t in registry.all_tasks() if registry.builtin(t.name)} \
        == fresh
    assert all(t.declared_in == "" for t in fresh.values())  # a built-in is not one of the project's files
    assert {n for role in paper.SUITE.values() for n in role} <= set(fresh)
    assert fresh["wsc"].convert.__name__ == "wsc_row" and fresh["syn_copa"].generator == "syn_copa"
    import shutil

    monkeypatch.setattr(files, "BUILTIN_DIR", tmp_path / "builtin")
    shutil.copytree(paths[0].parent, files.BUILTIN_DIR, ignore=shutil.ignore_patterns("__pycache__"))
    assert files.load_builtin() == fresh
    cache = files.BUILTIN_DIR / "__pycache__" / "tasks.json"
    stale = json.loads(cache.read_text())
    stale["mappings"]["rte.yaml"]["metric"] = "acc_f1"
    stale["stamp"][0][1] += 1  # as if a file had changed since the cache was written
    cache.write_text(json.dumps(stale))
    assert files.load_builtin() == fresh and json.loads(cache.read_text())["stamp"] != stale["stamp"]


def test_every_task_type_names_the_metrics_that_read_it():
    from stilts import metrics, tasktypes
    from stilts.tasks import files

    assert set(files.TYPE_METRICS) == set(tasktypes.TYPES)
    assert {m for ms in files.TYPE_METRICS.values() for m in ms} <= set(metrics.names())


def test_a_task_file_names_a_conversion_function(project, capsys):
    """A project's task file may name one of the conversion functions the built-in tasks use."""
    root = project()
    (root / "tasks").mkdir()
    (root / "tasks" / "my_wsc.yaml").write_text((files_dir() / "wsc.yaml").read_text())
    registry.use_project(root / "tasks")
    assert registry.get("my_wsc").convert is registry.get("wsc").convert
    (root / "tasks" / "my_wsc.yaml").write_text((files_dir() / "wsc.yaml").read_text().replace("wsc_row", "wsc_rows"))
    code, _, err = run_cli(capsys, "tasks")
    assert code == 2 and len(err.splitlines()) == 1
    assert "tasks/my_wsc.yaml: 'convert': unknown conversion function 'wsc_rows' (did you mean 'wsc_row'?)" in err


def files_dir():
    from stilts.tasks.files import BUILTIN_DIR

    return BUILTIN_DIR
