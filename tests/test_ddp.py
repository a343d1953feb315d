"""The same training code under 2 CPU processes (torch.distributed, gloo) matches 1 process.

Dropout is off so both runs do the same arithmetic: 2 processes × batch 4 see, per optimizer step,
the same 8 examples as 1 process × batch 8, and DDP averages their gradients.
"""

import json
import shutil

import pytest
import yaml

from tests.commands import command_env, run, stilts
from tests.conftest import tiny_params_dict

pytestmark = pytest.mark.slow


def test_two_processes_match_one(tiny_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    cfg = json.loads((model / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (model / "config.json").write_text(json.dumps(cfg))
    train = {"epochs": 3, "lr": 3e-4, "head_dropout": 0.0, "batch_size": 8, "log_every": 4}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        tiny_params_dict(model, train=train, data={"generated_train": 128, "generated_validation": 64})))
    env = command_env(STILTS_WORKER="0", OMP_NUM_THREADS="1")
    prep = stilts(tmp_path, "prepare", "--task", "syn_tense", env=env)
    assert prep.returncode == 0
    one = stilts(tmp_path, "--set", "mlflow.experiment=one", "transfer", "--source", "none", "--task", "syn_tense",
                 env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    single = json.loads((tmp_path / "results/none/syn_tense/r0.json").read_text())
    shutil.rmtree(tmp_path / "results")
    two = run(tmp_path, "torchrun", "--nproc_per_node", "2", "-m", "stilts", "--set", "train.batch_size=4",
              "--set", "mlflow.experiment=two", "transfer", "--source", "none", "--task", "syn_tense", check=False,
              env=env | {"ACCELERATE_USE_CPU": "1"})
    assert two.returncode == 0, two.stderr[-2000:]
    double = json.loads((tmp_path / "results/none/syn_tense/r0.json").read_text())
    assert double["steps"] == single["steps"] and double["metrics"]["examples"] == 64
    assert abs(double["score"] - single["score"]) <= 2 / 64  # within two dev examples
