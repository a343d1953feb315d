"""From a user's task to its ranking with the shipped grid, to the study the ranking writes, which runs its
K + 1 cells, to the ranking scored against them."""

import pandas as pd
import pytest
import yaml

from stilts.selection import published
from tests.commands import ran, run
from tests.task_files import own_task_project

pytestmark = pytest.mark.slow
TRAIN = {"max_steps": 2, "batch_size": 8, "eval_every": 2, "log_every": 1, "save_interval_s": 0,
         "mixed_precision": "no"}


def test_rank_write_the_study_run_it_and_score_the_recommendation(tiny_model, tmp_path):
    root = own_task_project(tmp_path, tiny_model, TRAIN)

    out = run(root, "stilts", "rank", "--targets", "my_pairs", "--write-study", "study.yaml", "--top", "2",
             "--restarts", "1").stdout
    ranking = pd.read_csv(root / "reports" / "ranking.csv")
    present = ranking[ranking["data"] == "present"].sort_values("rank")["candidate"].tolist()
    shipped = {s for name in published.available() for s in published.runs(name)["source"]} - {"none"}
    assert sorted(present) == ["qqp", "sst2"] and len(ranking) == len(shipped)  # every shipped candidate, two with data
    assert f"wrote study.yaml: {', '.join(present)} and the baseline on my_pairs, 1 restart(s): 5 training runs" in out
    study = yaml.safe_load((root / "study.yaml").read_text())
    assert study["tasks"] == {"intermediate": present, "target": ["my_pairs"], "probe": []}
    assert study["study"]["restarts"] == 1 and study["rank"]["targets"] == ["my_pairs"]

    first = run(root, "stilts", "--params", "study.yaml", "study")
    cells = {"intermediate-sst2-r0", "intermediate-qqp-r0", "transfer-none-my_pairs-r0", "transfer-sst2-my_pairs-r0",
             "transfer-qqp-my_pairs-r0"}
    assert cells | {"rank", "analyze"} <= ran(first)
    scored = pd.read_csv(root / "reports" / "ranking_eval.csv")
    prior = scored[(scored["target"] == "my_pairs") & (scored["method"] == "prior")].iloc[0]
    assert prior["first"] == present[0] and prior["n_candidates"] == 2
    assert 0 <= prior["first_p_beats"] <= 1 and pd.notna(prior["first_measured_gain"])
    assert prior["first_beats"] == float(prior["first_measured_gain"] > 0)
    measured = pd.read_csv(root / "reports" / "ranking.csv").dropna(subset=["measured_gain"])
    assert set(measured["candidate"]) == {"qqp", "sst2"}
    report = (root / "reports" / "report.md").read_text()
    assert "Predicted and measured" in report and f"| my_pairs | prior | 1 | {present[0]} |" in report
    assert ran(run(root, "dvc", "repro")) == set()
