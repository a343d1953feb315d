"""A truncated or altered checkpoint, resume state or feature cache is found by the sizes and hashes recorded
when it was written: built again, or refused in one line naming the file; never loaded as it is."""

import json
import os
import shutil
from pathlib import Path

import pytest

from stilts import cli, io
from tests.test_full_disk import INTERMEDIATE, TRANSFER, failing_on, inject, prepared, project, run  # noqa: F401

pytestmark = pytest.mark.slow


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
    code, line = run(capsys, ["transfer", "--source", "syn_nli", "--task", "syn_rte"])
    assert code == 2 and line.startswith(f"stilts: error: {weights}: ") and "checkpoint is damaged" in line
    capsys.readouterr()
    assert cli.main(INTERMEDIATE) == 0
    assert f"stilts: {weights}:" in capsys.readouterr().err
    assert cli.main(["transfer", "--source", "syn_nli", "--task", "syn_rte"]) == 0
