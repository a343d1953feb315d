"""A tiny intermediate → transfer chain: checkpoints, results, MLflow runs and their tags."""

import json
import subprocess

import pytest

from stilts import cells, data, tracking
from stilts.errors import StiltsError


@pytest.fixture
def chain(make_params):
    params = make_params()
    for t in ("syn_nli", "syn_rte"):
        data.prepare(params, t)
    cells.intermediate(params, "syn_nli", 0)
    cells.transfer(params, "syn_nli", "syn_rte", 0)
    cells.transfer(params, "none", "syn_rte", 0)
    return params


def test_outputs_and_runs(chain):
    params = chain
    ckpt = params.root / "models" / "intermediate" / "syn_nli" / "r0"
    assert {"model.safetensors", "head.safetensors", "config.json", "stilts.json"} <= {p.name for p in ckpt.iterdir()}
    assert not list(ckpt.glob("*.bin")) and not list(ckpt.glob("*.pt"))
    result = json.loads((params.root / "results" / "syn_nli" / "syn_rte" / "r0.json").read_text())
    assert result["source"] == "syn_nli" and result["role"] == "target" and 0 <= result["score"] <= 1

    runs = tracking.search_runs(params)
    assert len(runs) == 3 and set(runs["status"]) == {"FINISHED"}
    by_cell = {r["tags.stilts.cell"]: r for _, r in runs.iterrows()}
    inter = by_cell["syn_nli/syn_nli/r0"]
    assert inter["tags.stilts.role"] == "intermediate" and inter["tags.stilts.checkpoint"].endswith("syn_nli/r0")
    assert len(inter["tags.stilts.checkpoint_sha256"]) == 64
    tr = by_cell["syn_nli/syn_rte/r0"]
    assert (tr["tags.stilts.role"], tr["tags.stilts.source"], tr["tags.stilts.task"], tr["tags.stilts.restart"]) == \
        ("target", "syn_nli", "syn_rte", "0")
    assert tr["params.train.lr"] == "0.001" and tr["params.cell.seed"] == "1111002"
    assert tr["metrics.final_dev_score"] == pytest.approx(result["score"])
    assert by_cell["none/syn_rte/r0"]["tags.stilts.source"] == "none"


def _git(root, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args], cwd=root,
                          check=True, capture_output=True, text=True).stdout.strip()


def test_runs_carry_the_git_commit_only_where_there_is_one(make_params, tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # no repository above tmp_path counts
    params = make_params()

    def commit_tag():
        run = tracking.start_run(params, "cell", {"role": "target"})
        return run.client.get_run(run.id).data.tags.get("mlflow.source.git.commit")

    assert commit_tag() is None  # not a repository
    _git(tmp_path, "init", "-q")
    assert commit_tag() is None  # a repository with no commit yet: `git rev-parse HEAD` prints "HEAD"
    _git(tmp_path, "add", "params.yaml")
    _git(tmp_path, "commit", "-q", "-m", "params")
    head = _git(tmp_path, "rev-parse", "HEAD")
    assert len(head) == 40 and commit_tag() == head


def test_failure_marks_run_failed_and_writes_nothing(make_params, monkeypatch):
    params = make_params()
    data.prepare(params, "syn_rte")
    import stilts.train as train_mod

    def boom(*a, **k):
        raise RuntimeError("exploded")

    monkeypatch.setattr(train_mod, "train", boom)
    with pytest.raises(RuntimeError):
        cells.transfer(params, "none", "syn_rte", 0)
    runs = tracking.search_runs(params)
    assert list(runs["status"]) == ["FAILED"]
    assert "exploded" in runs["tags.stilts.error"].iloc[0]
    assert not (params.root / "results" / "none" / "syn_rte" / "r0.json").exists()


def test_child_run_under_mlflow_run(make_params, monkeypatch):
    params = make_params()
    parent = tracking.start_run(params, "entry-point", {"role": "entry"})
    monkeypatch.setenv("MLFLOW_RUN_ID", parent.id)
    child = tracking.start_run(params, "cell", {"role": "target"})
    assert child.id != parent.id
    runs = tracking.search_runs(params).set_index("run_id")
    assert runs.loc[child.id, "tags.mlflow.parentRunId"] == parent.id


def test_transfer_needs_its_checkpoint(make_params):
    params = make_params()
    data.prepare(params, "syn_rte")
    with pytest.raises(StiltsError, match="no intermediate checkpoint"):
        cells.transfer(params, "syn_nli", "syn_rte", 0)


def test_queries_leave_no_global_tracking_uri(make_params, monkeypatch):
    import os

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = make_params()
    tracking.start_run(params, "x", {"role": "target"}).finish()
    assert len(tracking.search_runs(params)) == 1
    assert "MLFLOW_TRACKING_URI" not in os.environ  # mlflow.set_tracking_uri would have set it
