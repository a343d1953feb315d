"""`stilts study`: one at a time in a project, and its stages find this environment's `stilts` whatever PATH
says (a study started as .venv/bin/stilts, without the venv on PATH)."""

import os
import sys

import pytest
import yaml

from stilts import cli, stages
from tests.commands import git_dvc_init


def test_a_second_study_in_the_same_project_stops_in_one_line(make_params, tmp_path, capsys, monkeypatch):
    make_params()
    monkeypatch.setenv("STILTS_WORKER", "0")
    with stages.one_study(tmp_path):
        assert cli.main(["--params", str(tmp_path / "params.yaml"), "study"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "another `stilts study` is running in this project" in err
    assert not (tmp_path / "dvc.yaml").exists()  # it wrote nothing


@pytest.mark.slow
def test_dvc_stages_run_this_environments_stilts_without_it_on_path(tmp_path, monkeypatch):
    git_dvc_init(tmp_path)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(
        {"stages": {"grids": {"cmd": "stilts grids > grids.txt", "outs": ["grids.txt"]}}}))
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                               if p != os.path.dirname(sys.executable)))
    stages.dvc(tmp_path, "repro")
    assert "paper-2020" in (tmp_path / "grids.txt").read_text()
