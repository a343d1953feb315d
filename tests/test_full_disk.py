"""A full disk (ENOSPC) at each write of a cell: one line naming what could not be written, exit 2, the previous
state intact, the run FAILED with the reason, and the same command resumes once there is space again."""

import errno
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import yaml

from stilts import cli, config, tracking
from tests.conftest import tiny_params_dict

pytestmark = pytest.mark.slow
TRAIN = {"epochs": 2, "eval_every": 2, "log_every": 1, "batch_size": 8, "save_interval_s": 0}
TRANSFER = ["transfer", "--source", "none", "--task", "syn_rte"]
INTERMEDIATE = ["intermediate", "--task", "syn_nli"]


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture(scope="module")
def prepared(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("disk") / "ref"
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict(tiny_model, train=TRAIN), sort_keys=False))
    return root


@pytest.fixture
def project(prepared, tmp_path, monkeypatch):
    root = tmp_path / "p"
    root.mkdir()
    shutil.copy2(prepared / "params.yaml", root / "params.yaml")
    monkeypatch.chdir(root)
    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "STILTS_FAULT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("STILTS_WORKER", "0")
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    assert cli.main(["prepare"]) == 0
    yield root
    for s, h in handlers.items():
        signal.signal(s, h)


@pytest.fixture
def inject():
    """Where the disk is full: undone (`inject.undo()`) when space is freed."""
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def run(capsys, argv) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(argv)
    return code, capsys.readouterr().err.strip().splitlines()[-1] if code else ""


def cell_runs(root: Path, cell: str):
    runs = tracking.search_runs(config.load(root / "params.yaml"))
    return runs[runs["tags.stilts.cell"] == cell]


def failing_on(inject, owner, name: str, when):
    """Make `owner.name` raise ENOSPC when `when(args, kwargs)` says so."""
    real = getattr(owner, name)

    def fake(*args, **kwargs):
        if when(args, kwargs):
            enospc()
        return real(*args, **kwargs)

    inject.setattr(owner, name, fake)


def test_full_disk_writing_the_feature_cache(project, inject, capsys):
    import datasets

    failing_on(inject, datasets.Dataset, "save_to_disk", lambda a, k: True)
    code, line = run(capsys, TRANSFER)
    assert code == 2 and "data/features/syn_rte" in line and "no space left on device" in line
    assert not [p for p in (project / "data" / "features").rglob("*") if p.name.startswith(".")]  # no temp left
    inject.undo()
    assert cli.main(TRANSFER) == 0


def test_full_disk_writing_the_resume_state_keeps_the_previous_one(project, inject, capsys):
    import safetensors.torch

    saves = []

    def second_state(args, kwargs):
        saves.append(args[1])
        return ".stilts/state" in str(args[1]) and len(saves) > 3  # the 2nd state (3 files a state)

    failing_on(inject, safetensors.torch, "save_file", second_state)
    code, line = run(capsys, TRANSFER)
    assert code == 2 and ".stilts/state/none__syn_rte__r0" in line and "no space left" in line
    state = next((project / ".stilts" / "state").iterdir())
    assert json.loads((state / "state.json").read_text())["loop"]["step"] == 2  # the previous state
    assert [p.name for p in state.parent.iterdir()] == [state.name]  # no half-written one beside it
    runs = cell_runs(project, "none/syn_rte/r0")
    assert list(runs["status"]) == ["FAILED"] and "no space left" in runs["tags.stilts.error"].iloc[0]
    inject.undo()
    assert cli.main(TRANSFER) == 0
    runs = cell_runs(project, "none/syn_rte/r0")
    assert list(runs["status"]) == ["FINISHED"] and runs["tags.stilts.resumed"].iloc[0] == "true"


def test_full_disk_writing_the_checkpoint(project, inject, capsys):
    import safetensors.torch

    failing_on(inject, safetensors.torch, "save_file", lambda a, k: str(a[1]).endswith("head.safetensors"))
    code, line = run(capsys, INTERMEDIATE)
    assert code == 2 and "models/intermediate/syn_nli/r0: no space left" in line
    assert not (project / "models" / "intermediate" / "syn_nli").exists() or \
        not list((project / "models" / "intermediate" / "syn_nli").iterdir())
    assert list(cell_runs(project, "syn_nli/syn_nli/r0")["status"]) == ["FAILED"]
    inject.undo()
    assert cli.main(INTERMEDIATE) == 0
    assert list(cell_runs(project, "syn_nli/syn_nli/r0")["status"]) == ["FINISHED"]


def test_full_disk_writing_the_result(project, inject, capsys):
    from stilts import io

    def result_file(args, kwargs):
        return "results/none/syn_rte" in os.readlink(f"/proc/self/fd/{args[0]}")

    failing_on(inject, io.os, "fsync", result_file)
    code, line = run(capsys, TRANSFER)
    assert code == 2 and "results/none/syn_rte/r0.json: no space left" in line
    assert not (project / "results" / "none" / "syn_rte").exists() or \
        not list((project / "results" / "none" / "syn_rte").iterdir())
    assert list(cell_runs(project, "none/syn_rte/r0")["status"]) == ["FAILED"]
    inject.undo()
    assert cli.main(TRANSFER) == 0
    assert list(cell_runs(project, "none/syn_rte/r0")["status"]) == ["FINISHED"]


def test_full_disk_writing_an_mlflow_artifact(project, inject, capsys):
    from mlflow.tracking import MlflowClient

    failing_on(inject, MlflowClient, "log_text", lambda a, k: "predictions" in str(a[-1]))
    code, line = run(capsys, TRANSFER)
    assert code == 2 and "artifact predictions/dev.jsonl of run" in line and "no space left" in line
    runs = cell_runs(project, "none/syn_rte/r0")
    assert list(runs["status"]) == ["FAILED"] and "no space left" in runs["tags.stilts.error"].iloc[0]
    inject.undo()
    assert cli.main(TRANSFER) == 0
    assert list(cell_runs(project, "none/syn_rte/r0")["status"]) == ["FINISHED"]
