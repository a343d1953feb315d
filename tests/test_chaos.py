"""benchmarks/chaos.py on a tiny study: SIGKILLed once in each phase (prepare, sweep, training, checkpoint write,
MLflow logging, DVC commit, analysis), each time resumed with `stilts study`, it ends with the same results and
reports as an uninterrupted run, one current FINISHED run per cell, no RUNNING run, `dvc status` clean and no
temporary left; every phase was hit by a kill."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_params_dict

pytestmark = [pytest.mark.slow, pytest.mark.long]
BIN = Path(sys.executable).parent
CHAOS = Path(__file__).resolve().parents[1] / "benchmarks" / "chaos.py"
PHASES = ("prepare", "sweep", "training", "checkpoint write", "MLflow logging", "DVC commit", "analysis")


def test_a_tiny_study_killed_anywhere_ends_like_an_uninterrupted_one(tiny_model, tmp_path):
    root = tmp_path / "study"
    root.mkdir()
    params = tiny_params_dict(tiny_model, sweep={"enabled": True, "grid": {"head_dropout": [0.1, 0.2]}},
                              train={"epochs": 2, "eval_every": 4, "save_interval_s": 0})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / ".gitignore").write_text("/mlflow.db*\n/mlruns/\n/.stilts/\n")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["stilts", "pipeline"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-q", "-m", "study"]):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    out = subprocess.run([sys.executable, str(CHAOS), "--project", str(root), "--kills", str(len(PHASES)), "--seed",
                          "3"], cwd=CHAOS.parent, env=env, capture_output=True, text=True, timeout=1500)
    print(out.stdout[-5000:], out.stderr[-3000:])
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "chaos: ok"
    kills = [re.match(r"kill +\d+: aimed (.+?) +landed (.+?) +in ", ln).groups() for ln in out.stdout.splitlines()
             if ln.startswith("kill ")]
    assert sorted(aimed for aimed, _ in kills) == sorted(PHASES)  # each phase aimed at once
    assert {landed for _, landed in kills} == set(PHASES)  # and each one hit
