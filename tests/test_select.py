"""`stilts select` end to end: a declared task and two candidates with data, tiny models, a budget of 4 training
runs; killed midway, the same command resumes to the same decisions and the same answer as a run never
stopped. Its record: the trail, one MLflow parent run over the cells, the ranking's `select` rows, report.md."""

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from tests.commands import command_env, ran, run, run_cli, runs, started
from tests.task_files import own_task_project
from tests.test_rank_to_study import TRAIN

SELECT = ["stilts", "select", "--target", "my_pairs", "--budget", "4"]
MARK = "STILTS_TEST_SELECTION"  # in the environment of every process of the selection that is killed


def _trail(root: Path) -> dict:
    return json.loads((root / "reports" / "select" / "my_pairs.json").read_text())


def _decisions(trail: dict) -> list:
    return [(s["run"], s["cost"], s["spent"], s["why"]) for s in trail["steps"]]


def _kill_after_second_decision(root: Path) -> int:
    """Start the selection; once its second run is decided (its cell is then starting), SIGKILL every process
    of it (the command, `dvc repro`, the stage), as when the machine dies."""
    path = root / "reports" / "select" / "my_pairs.json"
    with started(root, *SELECT, env=command_env(**{MARK: str(root)}), stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL, start_new_session=True) as proc:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if path.is_file() and len(_steps_with_runs(path)) >= 2:
                time.sleep(1.0)
                break
            time.sleep(0.2)
        marked = [p for p in psutil.process_iter() if _marked(p, str(root))]
        for p in marked:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(marked, timeout=10)
    return len(_trail(root)["steps"])


def _marked(p: psutil.Process, mark: str) -> bool:
    try:
        return p.pid != os.getpid() and p.environ().get(MARK) == mark
    except psutil.Error:
        return False


def _same(a: dict, b: dict) -> None:
    """Equal records: the same keys, text and None exactly, numbers to rounding."""
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], float):
            assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-9), k
        else:
            assert a[k] == b[k], k


def _steps_with_runs(path: Path) -> list:
    try:
        return [s for s in json.loads(path.read_text())["steps"] if s["run"]]
    except (ValueError, KeyError):  # written while read: the next poll reads it whole
        return []


@pytest.mark.slow
def test_select_killed_midway_resumes_to_the_same_decisions_and_answer(tiny_model, tmp_path):
    ref = own_task_project(tmp_path / "ref", tiny_model, TRAIN)
    out = run(ref, *SELECT).stdout
    reference = _trail(ref)
    assert reference["steps"][0]["run"] == {"arm": "none", "restart": 0} and reference["answer"]
    assert reference["answer"]["spent"] <= 4 and "select my_pairs: train " in out

    killed = own_task_project(tmp_path / "killed", tiny_model, TRAIN)
    assert _kill_after_second_decision(killed) == 2
    again = run(killed, *SELECT)
    resumed = _trail(killed)
    assert _decisions(resumed) == _decisions(reference)
    for a, b in zip(resumed["steps"], reference["steps"]):
        assert [r["arm"] for r in a["posterior"]] == [r["arm"] for r in b["posterior"]]
        for ra, rb in zip(a["posterior"], b["posterior"]):
            _same(ra, rb)
    _same(resumed["answer"], reference["answer"])
    assert "was decided before the last stop and has no result yet: it runs now" in again.stdout

    recorded = runs(killed)
    parent = recorded[recorded["tags.stilts.role"] == "selection"]
    assert len(parent) == 1 and parent["status"].iloc[0] == "FINISHED"
    assert parent["tags.stilts.answer"].iloc[0] == reference["answer"]["arm"]
    cells = recorded[recorded["tags.stilts.role"].isin(["target", "intermediate"]) & (recorded["status"] == "FINISHED")]
    trained = sum(1 for s in resumed["steps"] if s["run"]) + len({s["run"]["arm"] for s in resumed["steps"]
                                                                if s["run"] and s["run"]["arm"] != "none"})
    assert (cells["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]).sum() == trained
    ranking = pd.read_csv(killed / "reports" / "ranking.csv")
    assert "select" in set(ranking["method"])
    assert "The selection" in (killed / "reports" / "report.md").read_text()
    assert ran(run(killed, *SELECT)) == set()  # the same command once more: nothing left to run


def test_select_bad_input_is_one_line_and_writes_nothing(tiny_model, tmp_path, capsys, monkeypatch):
    from stilts import config
    from stilts.selection import select_record

    monkeypatch.setenv("STILTS_WORKER", "0")
    monkeypatch.chdir(tmp_path)
    own_task_project(tmp_path, tiny_model, TRAIN)
    before = sorted(p.name for p in tmp_path.iterdir())
    for argv, message in ((["--target", "my_pairz"], "target 'my_pairz' is not a known task"),
                          (["--target", "my_pairs", "--budget", "0"], "'select.budget' must be ≥ 1, got 0"),
                          (["--target", "my_pairs", "--confident", "1.5"], "'select.confident' must be in (0, 1)")):
        code, _, err = run_cli(capsys, "select", *argv)
        assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    # a trail started with other settings: the same command continues it, another is refused
    params = config.load(tmp_path / "params.yaml")
    params.select.target, params.select.budget = "my_pairs", 5
    arms = type("Arms", (), {"target": "my_pairs", "names": ["none", "qqp", "sst2"], "candidates": ["qqp", "sst2"]})()
    select_record.Trail.open(params, arms, tmp_path / "select-my_pairs.yaml").save()
    code, _, err = run_cli(capsys, "select", "--target", "my_pairs", "--budget", "4")
    errors = [ln for ln in err.splitlines() if ln.startswith("stilts")]  # not MLflow's own logs
    assert code == 2 and len(errors) == 1 and "started with other settings (budget 5 → 4)" in errors[0], err
