"""Disk faults at each file of a cell.

A full disk (ENOSPC) at each write: one line naming what could not be written, exit 2, the previous state
intact, the run FAILED with the reason, and the same command resumes once there is space again.
A truncated or altered checkpoint, resume state or feature cache is found by the sizes and hashes recorded
when it was written: built again, or refused in one line naming the file; never loaded as it is."""

import errno
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import yaml

from stilts import cli, io
from tests.commands import run_cli, runs_of
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


def code_and_error(capsys, argv) -> tuple[int, str]:
    """`stilts ARGV` in-process: its exit status and, when it failed, the last line it wrote to stderr."""
    code, _, err = run_cli(capsys, *argv)
    return code, err.splitlines()[-1] if code else ""


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
    code, line = code_and_error(capsys, TRANSFER)
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
    code, line = code_and_error(capsys, TRANSFER)
    assert code == 2 and ".stilts/state/none__syn_rte__r0" in line and "no space left" in line
    state = next((project / ".stilts" / "state").iterdir())
    assert json.loads((state / "state.json").read_text())["loop"]["step"] == 2  # the previous state
    assert [p.name for p in state.parent.iterdir()] == [state.name]  # no half-written one beside it
    runs = runs_of(project, "none/syn_rte/r0")
    assert list(runs["status"]) == ["FAILED"] and "no space left" in runs["tags.stilts.error"].iloc[0]
    inject.undo()
    assert cli.main(TRANSFER) == 0
    runs = runs_of(project, "none/syn_rte/r0")
    assert list(runs["status"]) == ["FINISHED"] and runs["tags.stilts.resumed"].iloc[0] == "true"


def test_full_disk_writing_the_checkpoint(project, inject, capsys):
    import safetensors.torch

    failing_on(inject, safetensors.torch, "save_file", lambda a, k: str(a[1]).endswith("head.safetensors"))
    code, line = code_and_error(capsys, INTERMEDIATE)
    assert code == 2 and "models/intermediate/syn_nli/r0: no space left" in line
    assert not (project / "models" / "intermediate" / "syn_nli").exists() or \
        not list((project / "models" / "intermediate" / "syn_nli").iterdir())
    assert list(runs_of(project, "syn_nli/syn_nli/r0")["status"]) == ["FAILED"]
    inject.undo()
    assert cli.main(INTERMEDIATE) == 0
    assert list(runs_of(project, "syn_nli/syn_nli/r0")["status"]) == ["FINISHED"]


def test_full_disk_writing_the_result(project, inject, capsys):
    def result_file(args, kwargs):
        return "results/none/syn_rte" in os.readlink(f"/proc/self/fd/{args[0]}")

    failing_on(inject, io.os, "fsync", result_file)
    code, line = code_and_error(capsys, TRANSFER)
    assert code == 2 and "results/none/syn_rte/r0.json: no space left" in line
    assert not (project / "results" / "none" / "syn_rte").exists() or \
        not list((project / "results" / "none" / "syn_rte").iterdir())
    assert list(runs_of(project, "none/syn_rte/r0")["status"]) == ["FAILED"]
    inject.undo()
    assert cli.main(TRANSFER) == 0
    assert list(runs_of(project, "none/syn_rte/r0")["status"]) == ["FINISHED"]


def test_full_disk_writing_an_mlflow_artifact(project, inject, capsys):
    from mlflow.tracking import MlflowClient

    failing_on(inject, MlflowClient, "log_text", lambda a, k: "predictions" in str(a[-1]))
    code, line = code_and_error(capsys, TRANSFER)
    assert code == 2 and "artifact predictions/dev.jsonl of run" in line and "no space left" in line
    runs = runs_of(project, "none/syn_rte/r0")
    assert list(runs["status"]) == ["FAILED"] and "no space left" in runs["tags.stilts.error"].iloc[0]
    inject.undo()
    assert cli.main(TRANSFER) == 0
    assert list(runs_of(project, "none/syn_rte/r0")["status"]) == ["FINISHED"]


def truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def alter(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def score(root: Path) -> dict:
    return json.loads((root / "results" / "none" / "syn_rte" / "r0.json").read_text())["metrics"]


def test_a_truncated_feature_cache_is_built_again(project, capsys):
    assert cli.main(TRANSFER) == 0
    arrow = next((project / "data" / "features" / "syn_rte").glob("*/train/data-*.arrow"))
    size = arrow.stat().st_size
    truncate(arrow)
    capsys.readouterr()
    assert cli.main(TRANSFER) == 0
    err = capsys.readouterr().err
    assert f"stilts: {arrow}: {size // 2} bytes, {size} when written" in err and "built again" in err
    assert arrow.stat().st_size == size


@pytest.mark.parametrize("damage", [truncate, alter], ids=["truncated", "altered"])
def test_a_damaged_resume_state_is_discarded_and_the_cell_starts_over(project, inject, capsys, damage):
    failing_on(inject, io.os, "fsync", lambda a, k: "results/none" in os.readlink(f"/proc/self/fd/{a[0]}"))
    assert cli.main(TRANSFER) == 2  # a full disk at the result: the cell's state stays
    inject.undo()
    state = next(p for p in (project / ".stilts" / "state").iterdir() if p.is_dir())
    damage(state / "model.safetensors")
    capsys.readouterr()
    assert cli.main(TRANSFER) == 0
    err = capsys.readouterr().err
    assert f"stilts: {state / 'model.safetensors'}:" in err and "discarded and the cell starts over" in err
    started_over = score(project)
    for done in (project / "results", project / "mlflow.db"):  # an uninterrupted run of the cell
        shutil.rmtree(done) if done.is_dir() else done.unlink()
    assert cli.main(TRANSFER) == 0
    assert started_over == score(project)


def test_a_truncated_checkpoint_is_refused_by_transfer_and_trained_again(project, capsys):
    assert cli.main(INTERMEDIATE) == 0
    weights = project / "models" / "intermediate" / "syn_nli" / "r0" / "model.safetensors"
    truncate(weights)
    code, line = code_and_error(capsys, ["transfer", "--source", "syn_nli", "--task", "syn_rte"])
    assert code == 2 and line.startswith(f"stilts: error: {weights}: ") and "checkpoint is damaged" in line
    capsys.readouterr()
    assert cli.main(INTERMEDIATE) == 0
    assert f"stilts: {weights}:" in capsys.readouterr().err
    assert cli.main(["transfer", "--source", "syn_nli", "--task", "syn_rte"]) == 0
