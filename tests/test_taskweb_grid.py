"""benchmarks/taskweb_grid.py on a hand-made copy of TaskWeb's layout: run names, seeds, metric averaging."""

import csv
import json
import subprocess
import sys
from pathlib import Path

from tests.checkout_guard import CHECKOUT
from tests.commands import run


def _result(repo: Path, target: str, source: str, run: str, metrics: dict) -> None:
    path = repo / "data" / "taskweb" / "results" / target / source / run / "eval_results.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({f"eval_{k}": v for k, v in metrics.items()} | {"eval_loss": 0.7}))


def _convert(repo: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return run(repo, sys.executable, CHECKOUT / "benchmarks" / "taskweb_grid.py", repo, "roberta", out, *extra,
               check=False, timeout=120)


def test_runs_become_rows_with_each_targets_settings_and_metrics(tmp_path):
    repo = tmp_path / "TaskWeb"
    (repo / "configs").mkdir(parents=True)
    (repo / "configs" / "roberta_finetune.json").write_text(json.dumps({
        "rte": {"epochs": 10, "learning_rate": 1e-5, "batch_size": 8, "seed_list": {"default": [10, 15]}},
        "cb": {"epochs": 20, "learning_rate": 2e-5, "batch_size": 4},
    }))
    _result(repo, "rte", "qnli", "roberta-e10-lr1e5-b8-s10", {"accuracy": 71.5})  # percent: read as 0.715
    _result(repo, "rte", "qnli", "roberta-e10-lr1e5-b8-s15", {"accuracy": [0.70]})
    _result(repo, "rte", "mnli", "roberta-e10-lr1e5-b8-s10", {"accuracy": 0.8})  # seed 15 missing
    _result(repo, "rte", "mnli", "roberta-e99-lr1e5-b8-s15", {"accuracy": 0.1})  # other settings: not read
    _result(repo, "cb", "rte", "roberta-e20-lr2e5-b4-s42", {"accuracy": 0.9, "f1": 0.7})  # the 8th default seed
    out = tmp_path / "grid.csv"
    done = _convert(repo, out)
    assert done.returncode == 0, done.stderr
    rows = [(r["task"], r["source"], r["restart"], float(r["score"]), r["role"]) for r in csv.DictReader(out.open())]
    assert rows == [("cb", "rte", "7", 0.8, "target"), ("rte", "mnli", "0", 0.8, "target"),
                    ("rte", "qnli", "0", 0.715, "target"), ("rte", "qnli", "1", 0.7, "target")]
    assert "4 runs, 2 targets, 3 sources; (target, source) pairs missing a seed: 2" in done.stdout


def test_an_unknown_model_is_one_line_exit_2_and_writes_nothing(tmp_path):
    (tmp_path / "TaskWeb" / "configs").mkdir(parents=True)
    out = tmp_path / "grid.csv"
    done = _convert(tmp_path / "TaskWeb", out)
    assert done.returncode == 2 and not out.exists()
    assert done.stderr.strip().count("\n") == 0 and "roberta_finetune.json: no such file" in done.stderr
