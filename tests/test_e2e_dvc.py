"""A tiny study through `dvc repro` in a temporary project: runs, no-op rerun, selective rerun, remote."""

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.commands import git, git_dvc_init, ran, run
from tests.conftest import tiny_params_dict

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tiny_model, tmp_path_factory):
    """The study after its first `dvc repro`, and that command's output. Tests that change the study change a
    copy of it (`copy_of`): each sees the study as the first repro left it, whatever ran before."""
    root = tmp_path_factory.mktemp("study")
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict(tiny_model)))
    git_dvc_init(root)
    run(root, "stilts", "pipeline")
    first = run(root, "dvc", "repro")
    return root, first


def copy_of(project, tmp_path) -> Path:
    """The study, its git repository, DVC cache and MLflow store copied into the test's own folder (the runs
    a copy logs keep the artifact folder of the original's experiment)."""
    root = tmp_path / "study"
    shutil.copytree(project[0], root, symlinks=True)
    return root


def test_repro_runs_every_cell_and_tracks_it(project):
    from stilts import config, tracking

    root, first = project
    assert ran(first) == {"settings", "prepare-syn_nli", "prepare-syn_rte", "prepare-syn_tense",
                          "intermediate-syn_nli-r0",
                          "transfer-none-syn_rte-r0", "transfer-none-syn_tense-r0", "transfer-syn_nli-syn_rte-r0",
                          "transfer-syn_nli-syn_tense-r0", "analyze"}
    runs = tracking.search_runs(config.load(root / "params.yaml"))
    assert (runs["status"] == "FINISHED").all()
    roles = runs["tags.stilts.role"].value_counts().to_dict()
    assert roles == {"intermediate": 1, "target": 2, "probe": 2, "analysis": 1}
    assert set(runs["tags.stilts.dvc_stage"].dropna()) >= {"pipelines/syn_nli/dvc.yaml:transfer-syn_nli-syn_rte-r0",
                                                             "analyze"}
    assert all((root / "pipelines" / source / "dvc.lock").is_file() for source in ("none", "syn_nli"))
    matrix = (root / "reports" / "transfer_matrix.csv").read_text().splitlines()
    assert matrix[0] == "source,syn_rte,syn_tense,avg_target" and matrix[1].startswith("syn_nli,")
    assert "## RQ1" in (root / "reports" / "report.md").read_text()
    assert json.loads((root / "reports" / "summary.json").read_text())["runs"] == 4
    assert run(root, "dvc", "metrics", "show").returncode == 0


def test_second_repro_does_nothing_and_one_lr_change_reruns_its_cells(project, tmp_path):
    root = copy_of(project, tmp_path)
    again = run(root, "dvc", "repro")
    assert ran(again) == set()
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["task_overrides"] = {"syn_rte": {"lr": 5e-4}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    run(root, "stilts", "pipeline")
    changed = run(root, "dvc", "repro")
    assert ran(changed) == {"settings", "transfer-none-syn_rte-r0", "transfer-syn_nli-syn_rte-r0", "analyze"}


def test_dvc_remote_round_trip(project, tmp_path):
    root = copy_of(project, tmp_path)
    run(root, "dvc", "remote", "add", "-f", "-d", "store", str(tmp_path / "remote"))
    run(root, "dvc", "push")
    before = {p: p.read_bytes() for p in (root / "results").rglob("*.json")}
    shutil.rmtree(root / "results"), shutil.rmtree(root / "models"), shutil.rmtree(root / ".dvc" / "cache")
    run(root, "dvc", "pull")
    assert {p: p.read_bytes() for p in (root / "results").rglob("*.json")} == before
    assert (root / "models" / "intermediate" / "syn_nli" / "r0" / "model.safetensors").is_file()
    assert ran(run(root, "dvc", "repro")) == set()


def test_a_task_override_by_exp_run_or_by_an_edit_reruns_only_that_tasks_cells(project, tmp_path):
    """A key no stage listed when `stilts pipeline` wrote them reaches exactly its task's cells (and the
    analysis): through `dvc exp run -S '+...'`, and through an edit of params.yaml and `dvc repro`."""
    root = copy_of(project, tmp_path)
    # what the repository's own .gitignore keeps out of git (DVC's own .gitignore files go with a `dvc pull`)
    (root / ".gitignore").write_text("".join(f"/{p}\n" for p in ("mlflow.db", "mlflow.db.lock", "mlruns/", ".stilts/",
                                                                   "data/", "models/", "results/", "reports/")))
    run(root, "git", "add", "-A")  # experiments start from a commit
    git(root, "commit", "-qm", "study")
    tense = {"settings", "transfer-none-syn_tense-r0", "transfer-syn_nli-syn_tense-r0", "analyze"}
    exp = run(root, "dvc", "exp", "run", "-S", "+task_overrides.syn_tense.epochs=2")
    assert ran(exp) == tense and "1 settings file(s) changed" in exp.stdout  # the others kept their bytes
    assert ran(run(root, "dvc", "repro")) == set()
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert params["task_overrides"]["syn_tense"] == {"epochs": 2}
    params["task_overrides"]["syn_rte"] = {"epochs": 2}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    assert ran(run(root, "dvc", "repro")) == {"settings", "transfer-none-syn_rte-r0", "transfer-syn_nli-syn_rte-r0",
                                             "analyze"}
    assert ran(run(root, "dvc", "repro")) == set()


def test_sweep_stage_feeds_its_task_and_a_grid_change_reruns_only_that(project, tmp_path):
    from stilts import config, tracking

    root = copy_of(project, tmp_path)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["task_overrides"] = {"syn_rte": {"lr": 5e-4}, "syn_nli": {"lr": 1e-3, "head_dropout": 0.1},
                                "syn_tense": {"lr": 1e-3, "head_dropout": 0.1}}  # fixed: not swept
    # neither grid value is the default (0.1): the swept cells' settings change, so they train again (a cell
    # whose settings come out equal restores its finished run instead, tests/test_one_run_per_cell.py)
    params["sweep"] = {"enabled": True, "grid": {"head_dropout": [0.2, 0.3]}, "overrides": {"epochs": 1}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    run(root, "stilts", "pipeline")
    first = ran(run(root, "dvc", "repro"))  # the new override keys also rerun (and skip) the fixed tasks' stages
    swept = {"sweep-syn_rte", "transfer-none-syn_rte-r0", "transfer-syn_nli-syn_rte-r0", "analyze"}
    assert swept | {"settings"} <= first and not any(s.startswith("sweep-") for s in first - swept)
    chosen = json.loads((root / "results" / "sweep" / "syn_rte.json").read_text())["chosen"]
    runs = tracking.search_runs(config.load(root / "params.yaml"))
    cells = runs[(runs["tags.stilts.task"] == "syn_rte") & (runs["tags.stilts.role"] == "target")]
    latest = cells.sort_values("start_time").groupby("tags.stilts.cell").tail(1)
    assert set(latest["params.settings_source.head_dropout"]) == {"sweep"}
    assert set(latest["params.train.head_dropout"].astype(float)) == {chosen["head_dropout"]}
    assert set(latest["params.settings_source.lr"]) == {"override"}
    params["sweep"]["grid"] = {"head_dropout": [0.25, 0.3]}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    run(root, "stilts", "pipeline")
    assert ran(run(root, "dvc", "repro")) == swept | {"settings"}


def _rte(folder: Path, n: int) -> None:
    """A few RTE rows in the official jsonl layout."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, size in (("train.jsonl", n), ("val.jsonl", n // 2)):
        rows = [{"premise": f"The cat sat on mat {i}.", "hypothesis": f"A cat sat {'down' if i % 2 else 'up'}.",
                 "label": "entailment" if i % 2 else "not_entailment", "idx": i} for i in range(size)]
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_study_on_a_local_cluster_stops_at_bad_input_and_reruns_only_what_is_left(tiny_model, tmp_path):
    """`stilts study --cluster local --jobs 2`: cells side by side, recorded in dvc.lock. A cell failing on
    bad input (RTE's files missing) stops new starts, what ran is recorded, the study exits 2 with the cell's
    one-line error; after the fix, the rerun does only what is left."""
    root = tmp_path / "parallel"
    root.mkdir()
    params = tiny_params_dict(tiny_model, tasks={"intermediate": ["syn_nli"], "target": ["syn_rte", "rte"],
                                                 "probe": ["syn_tense"]}, data={"raw_dir": "raw"})
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    git_dvc_init(root)
    first = run(root, "stilts", "study", "--cluster", "local", "--jobs", "2", check=False)
    assert first.returncode == 2, first.stderr
    assert "12 of 13 stages to run on the local cluster: 2 workers × 1 cell" in first.stdout
    error = first.stderr.strip().splitlines()[-1]
    assert error.startswith("stilts: error: stage 'prepare-rte' failed (exit 2): task 'rte': data not found")
    recorded = int(re.search(r"(\d+) stages ran and are recorded", first.stdout).group(1))
    started = {p.stem for p in (root / ".stilts" / "logs").glob("*.log")}
    assert len(started) == recorded + 1 and recorded < 8  # no new starts after the failure; all that ran is kept
    _rte(root / "raw" / "rte", 24)
    second = run(root, "stilts", "study", "--cluster", "local", "--jobs", "2")
    assert f"{12 - recorded} of 13 stages to run" in second.stdout and f"{12 - recorded} stages ran" in second.stdout
    assert ran(run(root, "dvc", "repro")) == set()  # everything was recorded in dvc.lock
    assert (root / "results" / "syn_nli" / "rte" / "r0.json").is_file()
