"""Disk faults at each file of a cell.

A full disk (ENOSPC) part-way through each write, with an earlier good version of the output there: one line
naming what could not be written, exit 2, the earlier version byte for byte and no temporary beside it, the
run FAILED with the reason, and the same command resumes once there is space again.
A truncated or altered checkpoint, resume state or feature cache is found by the sizes and hashes recorded
when it was written: built again, or refused in one line naming the file; never loaded as it is."""

import json
import shutil
import signal
from pathlib import Path

import pytest
import yaml

from stilts import cli
from tests import disk_full
from tests.commands import run_cli, runs_of
from tests.conftest import tiny_params_dict
from tests.disk_full import enospc

pytestmark = pytest.mark.slow
TRAIN = {"epochs": 2, "eval_every": 2, "log_every": 1, "batch_size": 8, "save_interval_s": 0}
TRANSFER = ["transfer", "--source", "none", "--task", "syn_rte"]
INTERMEDIATE = ["intermediate", "--task", "syn_nli"]


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


def other_settings(root: Path) -> None:
    """Another learning rate: the cells train again and write their outputs again."""
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["train"]["lr"] = 2e-3
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def saved_file(args, kwargs) -> str:
    return str(args[1] if len(args) > 1 else kwargs["filename"])  # safetensors' save_file(tensors, filename)


def test_full_disk_writing_the_feature_cache_keeps_the_one_written_before(project, inject, capsys):
    import datasets

    features, good = project / "data" / "features" / "syn_rte", {}

    def after_the_first_split(path: str) -> bool:
        written = list(features.glob("*/train"))
        if written and not good:
            good[written[0]] = disk_full.snapshot(written[0])
        return bool(written)

    disk_full.library_writes(inject, datasets.Dataset, "save_to_disk", lambda a, k: a[1], after_the_first_split)
    code, line = code_and_error(capsys, TRANSFER)
    assert code == 2 and "data/features/syn_rte" in line and "no space left on device" in line
    [(train, before)] = good.items()
    assert disk_full.snapshot(train) == before  # byte for byte
    assert [p.name for p in train.parent.iterdir()] == ["train"]  # no half-written split, no temporary
    inject.undo()
    assert cli.main(TRANSFER) == 0


@pytest.mark.parametrize("file", ["model.safetensors", "state.json"])
def test_full_disk_writing_the_resume_state_keeps_the_previous_one(project, inject, capsys, file):
    import safetensors.torch

    states, good = project / ".stilts" / "state", {}

    def a_later_state(path: str) -> bool:  # a file of the 2nd state, with the 1st saved
        saved = sorted(p for p in states.glob("*/state.json") if not p.parent.name.startswith("."))
        if not saved or "/.stilts/state/." not in path or Path(path).name != file:
            return False
        good.setdefault(saved[0].parent, disk_full.snapshot(saved[0].parent))
        return True

    if file == "state.json":  # written by Python, the tensors by safetensors
        disk_full.python_writes(inject, a_later_state)
    else:
        disk_full.library_writes(inject, safetensors.torch, "save_file", saved_file, a_later_state)
    code, line = code_and_error(capsys, TRANSFER)
    assert code == 2 and ".stilts/state/none__syn_rte__r0" in line and "no space left" in line
    [(state, before)] = good.items()
    assert disk_full.snapshot(state) == before
    assert json.loads((state / "state.json").read_text())["loop"]["step"] == 2  # the previous state
    assert [p.name for p in state.parent.iterdir()] == [state.name]  # no half-written one beside it
    runs = runs_of(project, "none/syn_rte/r0")
    assert list(runs["status"]) == ["FAILED"] and "no space left" in runs["tags.stilts.error"].iloc[0]
    inject.undo()
    assert cli.main(TRANSFER) == 0
    runs = runs_of(project, "none/syn_rte/r0")
    assert list(runs["status"]) == ["FINISHED"] and runs["tags.stilts.resumed"].iloc[0] == "true"


def test_full_disk_writing_the_checkpoint_keeps_the_previous_one(project, inject, capsys):
    import safetensors.torch

    assert cli.main(INTERMEDIATE) == 0
    models = project / "models" / "intermediate" / "syn_nli"
    before = disk_full.snapshot(models)
    other_settings(project)
    disk_full.library_writes(inject, safetensors.torch, "save_file", saved_file,
                             lambda p: p.endswith("head.safetensors"))
    code, line = code_and_error(capsys, INTERMEDIATE)
    assert code == 2 and "models/intermediate/syn_nli/r0: no space left" in line
    assert disk_full.snapshot(models) == before  # byte for byte, and no temporary beside it
    assert sorted(runs_of(project, "syn_nli/syn_nli/r0")["status"]) == ["FAILED", "FINISHED"]
    inject.undo()
    assert cli.main(INTERMEDIATE) == 0
    assert disk_full.snapshot(models) != before
    assert sorted(runs_of(project, "syn_nli/syn_nli/r0")["status"]) == ["FINISHED", "FINISHED"]


def test_full_disk_writing_the_result_keeps_the_previous_one(project, inject, capsys):
    assert cli.main(TRANSFER) == 0
    results = project / "results" / "none" / "syn_rte"
    before = disk_full.snapshot(results)
    other_settings(project)
    disk_full.python_writes(inject, lambda p: p.startswith(f"{results}/"))
    code, line = code_and_error(capsys, TRANSFER)
    assert code == 2 and "results/none/syn_rte/r0.json: no space left" in line
    assert disk_full.snapshot(results) == before
    assert sorted(runs_of(project, "none/syn_rte/r0")["status"]) == ["FAILED", "FINISHED"]
    inject.undo()
    assert cli.main(TRANSFER) == 0
    assert disk_full.snapshot(results) != before


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
    disk_full.python_writes(inject, lambda p: "/results/none/" in p)
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
