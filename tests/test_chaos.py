"""benchmarks/chaos.py on a tiny study: SIGKILLed once in each phase (prepare, sweep, training, checkpoint write,
MLflow logging, DVC commit, analysis), each time resumed with `stilts study`, it ends with the same results and
reports as an uninterrupted run, one current FINISHED run per cell, no RUNNING run, `dvc status` clean and no
temporary left; every phase was hit by a kill."""

import re
import sys
from pathlib import Path

import pytest
import yaml

from tests.commands import git, git_dvc_init, run
from tests.conftest import tiny_params_dict

pytestmark = [pytest.mark.slow, pytest.mark.long, pytest.mark.timeout(1800)]  # chaos.py: 1500 s at most
CHAOS = Path(__file__).resolve().parents[1] / "benchmarks" / "chaos.py"
PHASES = ("prepare", "sweep", "training", "checkpoint write", "MLflow logging", "DVC commit", "analysis")


def test_a_tiny_study_killed_anywhere_ends_like_an_uninterrupted_one(tiny_model, tmp_path):
    root = tmp_path / "study"
    root.mkdir()
    params = tiny_params_dict(tiny_model, sweep={"enabled": True, "grid": {"head_dropout": [0.1, 0.2]}},
                              train={"epochs": 2, "eval_every": 4, "save_interval_s": 0})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / ".gitignore").write_text("/mlflow.db*\n/mlruns/\n/.stilts/\n")
    git_dvc_init(root)
    run(root, "stilts", "pipeline")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "study")
    out = run(CHAOS.parent, sys.executable, CHAOS, "--project", root, "--kills", str(len(PHASES)), "--seed", "3",
              check=False, timeout=1500)
    print(out.stdout[-5000:], out.stderr[-3000:])
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "chaos: ok"
    kills = [re.match(r"kill +\d+: aimed (.+?) +landed (.+?) +in ", ln).groups() for ln in out.stdout.splitlines()
             if ln.startswith("kill ")]
    assert sorted(aimed for aimed, _ in kills) == sorted(PHASES)  # each phase aimed at once
    assert {landed for _, landed in kills} == set(PHASES)  # and each one hit
