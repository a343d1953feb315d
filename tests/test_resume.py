"""Kill a cell with SIGKILL at several points; the rerun resumes and ends exactly like an uninterrupted run."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from stilts.io import sha256_file
from tests.commands import runs_of, stilts, warm_env
from tests.conftest import tiny_params_dict

pytestmark = pytest.mark.slow
TRAIN = {"epochs": 2, "eval_every": 2, "log_every": 1, "batch_size": 8, "save_interval_s": 0}


def warm(root, *args, fault=None):
    """`stilts ARGS` through a warm cell server, killed at `fault` (STILTS_FAULT) when given."""
    env = warm_env(root, STILTS_WORKER_IDLE="20", **({"STILTS_FAULT": fault} if fault else {}))
    return stilts(root, *args, env=env, timeout=300)


@pytest.fixture(scope="module")
def reference(tiny_model, tmp_path_factory):
    """A prepared project and the results of uninterrupted runs."""
    root = tmp_path_factory.mktemp("resume") / "ref"
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict(tiny_model, train=TRAIN), sort_keys=False))
    assert warm(root, "prepare").returncode == 0
    assert warm(root, "intermediate", "--task", "syn_nli").returncode == 0
    assert warm(root, "transfer", "--source", "none", "--task", "syn_rte").returncode == 0
    return root


def fresh(reference, name):
    root = reference.parent / name
    shutil.copytree(reference / "data", root / "data")
    shutil.copy2(reference / "params.yaml", root / "params.yaml")
    return root


def score(root, source, task):
    return json.loads((root / "results" / source / task / "r0.json").read_text())["score"]


@pytest.mark.parametrize("fault", ["train_step:5", "eval:3", "state_write:2"])
def test_killed_transfer_resumes_to_the_same_result(reference, fault):
    root = fresh(reference, fault.replace(":", "-"))
    killed = warm(root, "transfer", "--source", "none", "--task", "syn_rte", fault=fault)
    assert killed.returncode == 128 + 9 and not (root / "results" / "none" / "syn_rte" / "r0.json").exists()
    again = warm(root, "transfer", "--source", "none", "--task", "syn_rte")
    assert again.returncode == 0, again.stderr
    assert score(root, "none", "syn_rte") == score(reference, "none", "syn_rte")
    runs = runs_of(root, "none/syn_rte/r0")
    assert list(runs["status"]) == ["FINISHED"]  # the killed run was resumed, not duplicated
    assert runs["tags.stilts.resumed"].iloc[0] == "true"
    assert not list((root / ".stilts" / "state").iterdir())  # state removed once the result is written


@pytest.mark.parametrize("fault", ["train_step:11", "checkpoint_write:1"])
def test_killed_intermediate_resumes_to_the_same_checkpoint(reference, fault):
    root = fresh(reference, "inter-" + fault.replace(":", "-"))
    killed = warm(root, "intermediate", "--task", "syn_nli", fault=fault)
    assert killed.returncode == 137
    assert not (root / "models" / "intermediate" / "syn_nli" / "r0").exists()  # nothing half-written
    again = warm(root, "intermediate", "--task", "syn_nli")
    assert again.returncode == 0, again.stderr
    ckpt = Path("models/intermediate/syn_nli/r0/model.safetensors")
    assert sha256_file(root / ckpt) == sha256_file(reference / ckpt)
    runs = runs_of(root, "syn_nli/syn_nli/r0")
    assert (runs["status"] == "FINISHED").sum() == 1 and set(runs["status"]) <= {"FINISHED", "KILLED"}


def test_finished_cell_is_not_retrained(reference):
    root = reference.parent / "done"
    shutil.copytree(reference, root)
    again = warm(root, "transfer", "--source", "none", "--task", "syn_rte")
    assert again.returncode == 0 and "already finished with these settings" in again.stdout
    assert len(runs_of(root, "none/syn_rte/r0")) == 1
    changed = warm(root, "--set", "train.lr=0.002", "transfer", "--source", "none", "--task", "syn_rte")
    assert changed.returncode == 0 and "already finished" not in changed.stdout


def test_kill_before_any_state_marks_the_old_run_killed(reference):
    root = fresh(reference, "early")
    assert warm(root, "transfer", "--source", "none", "--task", "syn_rte", fault="train_step:1").returncode == 137
    assert warm(root, "transfer", "--source", "none", "--task", "syn_rte").returncode == 0
    runs = runs_of(root, "none/syn_rte/r0")
    assert sorted(runs["status"]) == ["FINISHED", "KILLED"]
    assert score(root, "none", "syn_rte") == score(reference, "none", "syn_rte")
