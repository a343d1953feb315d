import pytest
import yaml

from stilts import config
from stilts.errors import StiltsError


def load(tmp_path, raw, overrides=None):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(raw) if isinstance(raw, dict) else raw)
    return config.load(p, overrides)


@pytest.mark.parametrize("raw, message", [
    ({"trian": {}}, "unknown key 'trian' (did you mean 'train'?)"),
    ({"train": {"lrr": 1e-5}}, "unknown key 'train.lrr' (did you mean 'train.lr'?)"),
    ({"train": {"batch_size": "big"}}, "'train.batch_size' must be int"),
    ({"train": {"lr": -1.0}}, "'train.lr' must be > 0"),
    ({"study": {"restarts": 0}}, "'study.restarts' must be ≥ 1"),
    ({"tasks": {"target": ["syn_rtee"]}}, "unknown task 'syn_rtee' (did you mean 'syn_rte'?)"),
    ({"tasks": {"target": "syn_rte"}}, "'tasks.target' must be a list"),
    ({"task_overrides": {"syn_rte": {"lr": 1e-5, "epoch": 2}}}, "unknown key 'task_overrides.syn_rte.epoch'"),
    ({"task_overrides": {"syn_rtx": {"lr": 1e-5}}}, "unknown task 'syn_rtx'"),
    ({"train": {"mixed_precision": "fp8"}}, "'train.mixed_precision' must be one of"),
    ({"study": {"restarts": True}}, "'study.restarts' must be int"),
])
def test_bad_params_name_the_key(tmp_path, raw, message):
    with pytest.raises(StiltsError) as e:
        load(tmp_path, raw)
    assert message in str(e.value)
    assert str(tmp_path / "params.yaml") in str(e.value)
    assert "\n" not in str(e.value)


def test_invalid_yaml_names_the_line(tmp_path):
    with pytest.raises(StiltsError, match=r"params.yaml:[23]: invalid YAML"):
        load(tmp_path, "train:\n  lr: [1\n")


def test_defaults_and_overrides(tmp_path):
    p = load(tmp_path, {"tasks": {"target": ["syn_rte"]}, "train": {"lr": "1e-5"}},
             ["train.epochs=7", "task_overrides.syn_rte.lr=3e-6", "tasks.probe=[syn_tense]"])
    assert p.train.lr == 1e-5 and p.train.epochs == 7
    assert p.tasks.probe == ["syn_tense"]
    assert p.train_for("syn_rte").lr == 3e-6 and p.train_for("syn_rte").epochs == 7
    assert p.train_for("syn_copa").lr == 1e-5


def test_bad_override_syntax(tmp_path):
    with pytest.raises(StiltsError, match="must look like key.path=value"):
        load(tmp_path, {}, ["train.lr"])


def test_repo_params_are_valid():
    from pathlib import Path

    p = config.load(Path(__file__).parents[1] / "params.yaml")
    assert len(p.tasks.intermediate) >= 2 and len(p.tasks.target) >= 2 and len(p.tasks.probe) >= 2
    assert p.study.restarts >= 2


def test_roles_of_unlisted_tasks(tmp_path):
    p = load(tmp_path, {"tasks": {"target": ["syn_rte"]}})
    assert p.role_of("syn_rte") == "target"
    assert p.role_of("syn_bshift") == "probe"  # declared as a probe
    assert p.role_of("syn_copa") == "target"


def test_profiles_validate():
    from pathlib import Path

    for profile in sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")):
        p = config.load(profile)
        assert p.tasks.target and p.study.restarts >= 1
