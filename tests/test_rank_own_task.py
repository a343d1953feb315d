"""Ranking a task nobody measured: a declared task against the shipped grid, and a target measured only in the
scored experiment."""

import pandas as pd
import pytest
import yaml

from stilts import cli
from stilts.analysis.imports import import_results
from stilts.tasks import registry
from tests.conftest import tiny_params_dict
from tests.task_files import declare

SHIPPED_SOURCES = {"ccg", "commonsenseqa", "cosmosqa", "hellaswag", "mnli", "qamr", "qasrl", "qqp", "scitail",
                   "socialiqa", "sst2"} | {"cola", "mrpc", "stsb"}  # the paper's grid, then stilts' MiniLM grid


def _project(root, tiny_model, monkeypatch):
    monkeypatch.setenv("STILTS_WORKER", "0")
    monkeypatch.chdir(root)
    declare(root, "my_pairs", train=30)
    raw = tiny_params_dict(tiny_model)
    raw["tasks"] = {"target": ["my_pairs"]}
    (root / "params.yaml").write_text(yaml.safe_dump(raw))


def test_a_declared_task_is_ranked_from_the_shipped_grid(tiny_model, tmp_path, capsys, monkeypatch):
    from stilts import config
    from stilts.selection import guidance

    _project(tmp_path, tiny_model, monkeypatch)
    assert cli.main(["rank", "--targets", "my_pairs"]) == 0
    out = capsys.readouterr().out
    ranking = pd.read_csv(tmp_path / "reports" / "ranking.csv")
    assert set(ranking["candidate"]) == SHIPPED_SOURCES and ranking["p_beats_baseline"].between(0, 1).all()
    assert ranking["data"].str.startswith("needed in ").all() and "needs data" in out
    assert "my_pairs: no baseline run yet; `stilts transfer --source none --task my_pairs` gives one" in out
    assert "no prior grid was measured with your encoder" in out and "prior: grid weights for model.name=" in out
    assert "\n  cosmosqa from grids: " in out  # the first candidate's grids and their weights
    assert guidance.train_sizes(config.load(tmp_path / "params.yaml"), ["my_pairs"]) == {"my_pairs": 30}
    before = ranking.set_index("candidate")["p_beats_baseline"]

    # a baseline run of the target (here: imported into the study's experiment): headroom is used, the note goes
    (tmp_path / "base.csv").write_text("restart,source,task,role,score\n0,none,my_pairs,target,0.95\n")
    import_results(config.load(tmp_path / "params.yaml"), tmp_path / "base.csv", "test")
    assert cli.main(["rank", "--targets", "my_pairs"]) == 0
    assert "no baseline run yet" not in capsys.readouterr().out
    after = pd.read_csv(tmp_path / "reports" / "ranking.csv").set_index("candidate")["p_beats_baseline"]
    assert not (after - before).abs().lt(1e-6).all()


def test_a_target_measured_only_in_the_scored_experiment_is_rankable(tiny_model, tmp_path, capsys, monkeypatch):
    from stilts import config

    _project(tmp_path, tiny_model, monkeypatch)
    assert "anli_r3" not in registry.names()
    rows = ["restart,source,task,role,score"] + [f"0,{s},anli_r3,target,{v}" for s, v in
                                                 (("cosmosqa", 0.40), ("hellaswag", 0.45), ("socialiqa", 0.38))]
    (tmp_path / "web.csv").write_text("\n".join(rows) + "\n")
    import_results(config.load(tmp_path / "params.yaml"), tmp_path / "web.csv", "web")
    argv = ["rank", "--targets", "anli_r3", "--candidates", "cosmosqa,hellaswag,socialiqa", "--experiment", "web",
            "--prior-experiment", "paper-2020"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    table = pd.read_csv(tmp_path / "reports" / "web" / "ranking_eval.csv")
    assert set(table[table["target"] == "anli_r3"]["method"]) >= {"prior", "random"}


def test_a_targets_measured_cells_show_as_measured_and_join_the_prior_for_others(tiny_model, tmp_path, capsys,
                                                                               monkeypatch):
    from stilts import config

    _project(tmp_path, tiny_model, monkeypatch)
    rows = ["restart,source,task,role,score"] + [f"0,{s},my_pairs,target,{v}" for s, v in
                                                 (("none", 0.50), ("cosmosqa", 0.40), ("sst2", 0.60), ("qqp", 0.55))]
    (tmp_path / "own.csv").write_text("\n".join(rows) + "\n")
    import_results(config.load(tmp_path / "params.yaml"), tmp_path / "own.csv", "test")  # the study's experiment
    assert cli.main(["rank", "--targets", "my_pairs"]) == 0
    assert "note: prior grids: minilm-real, paper-2020, test" in capsys.readouterr().out
    ranking = pd.read_csv(tmp_path / "reports" / "ranking.csv").set_index("candidate")
    assert ranking.loc["sst2", "measured_gain"] == pytest.approx(0.10) and ranking.loc["sst2", "measured_beats"] == 1
    assert ranking.loc["cosmosqa", "measured_beats"] == 0 and ranking["measured_gain"].notna().sum() == 3
    alone = ranking["score"]
    # for another target the study's cells are one more grid: its sources' effects move
    assert cli.main(["rank", "--targets", "rte"]) == 0
    with_own = _prior_scores(tmp_path)
    assert cli.main(["rank", "--targets", "rte", "--prior-experiment", "paper-2020"]) == 0
    paper_only = _prior_scores(tmp_path)
    assert with_own["sst2"] - with_own["cosmosqa"] > paper_only["sst2"] - paper_only["cosmosqa"]
    assert len(alone) == len(SHIPPED_SOURCES)


def _prior_scores(root) -> pd.Series:
    ranking = pd.read_csv(root / "reports" / "ranking.csv")
    return ranking[ranking["method"] == "prior"].set_index("candidate")["score"]
