"""A cell's saved training state on the DVC remote (`stilts.remote_state`): uploaded at each save, the newest
one downloaded where a cell starts without it, checked before use, removed when the cell finishes."""

import json
import shutil
from pathlib import Path

import pytest

from stilts import remote_state, resume
from stilts.io import file_records
from tests.commands import git_dvc_init, run


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = tmp_path / "project"
    root.mkdir()
    git_dvc_init(root)
    run(root, "dvc", "remote", "add", "-d", "store", tmp_path / "remote")
    monkeypatch.setenv(remote_state.ENV, "default")
    return root


def save_state(state_dir: Path, step: int, payload: bytes, run_id: str | None = None) -> None:
    """A state as `resume.save` leaves it: its files, and state.json recording their sizes and hashes."""
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "model.safetensors").write_bytes(payload)
    meta = {"loop": {"step": step, "run_id": run_id}, "files": file_records(state_dir)}
    (state_dir / "state.json").write_text(json.dumps(meta))


def remote_folder(tmp_path: Path, state_dir: Path) -> Path:
    return tmp_path / "remote" / "stilts" / "state" / state_dir.name


def test_saves_go_to_the_remote_and_the_newest_comes_back_elsewhere(project, tmp_path):
    state_dir = project / ".stilts" / "state" / "none__syn_rte__r0__target-abc"
    for step in (8, 16):
        save_state(state_dir, step, f"weights at {step}".encode())
        remote_state.push(state_dir)
    folder = remote_folder(tmp_path, state_dir)
    assert json.loads((folder / "latest.json").read_text())["step"] == 16
    assert len([p for p in folder.iterdir() if p.is_dir()]) == 1  # older saves are dropped

    shutil.rmtree(project / ".stilts")  # another machine: no local state, no .stilts/ yet
    remote_state.restore(state_dir, None, lambda run: None)
    assert (state_dir / "model.safetensors").read_bytes() == b"weights at 16"
    assert resume.read_loop(state_dir)["step"] == 16
    assert not list(state_dir.parent.glob(".*"))  # nothing half-written beside it

    save_state(state_dir, 24, b"weights at 24")  # a newer local save is kept
    remote_state.restore(state_dir, 24, lambda run: None)
    assert (state_dir / "model.safetensors").read_bytes() == b"weights at 24"

    remote_state.clear(state_dir)
    assert not folder.exists()


def test_an_altered_copy_is_discarded_not_loaded(project, tmp_path, capsys):
    state_dir = project / ".stilts" / "state" / "cell-abc"
    save_state(state_dir, 8, b"weights at 8")
    remote_state.push(state_dir)
    resume.clear(state_dir)
    copy = next(p for p in remote_folder(tmp_path, state_dir).iterdir() if p.is_dir()) / "model.safetensors"
    copy.write_bytes(b"weights at 9")  # same size, other contents
    remote_state.restore(state_dir, None, lambda run: None)
    resume.discard_damaged(state_dir)
    assert not state_dir.exists()
    assert "sha256 differs" in capsys.readouterr().err


def test_a_save_whose_run_still_runs_is_waited_for(project, tmp_path, monkeypatch):
    """The cell stopped on another worker may still be saving: the rerun waits until its run has ended."""
    monkeypatch.setenv("STILTS_STOP_GRACE_S", "5")
    state_dir = project / ".stilts" / "state" / "cell-abc"
    save_state(state_dir, 8, b"weights at 8", run_id="r1")
    remote_state.push(state_dir)
    resume.clear(state_dir)
    asked = []

    def status(run):  # the other worker saves step 12, then ends its run
        asked.append(run)
        if len(asked) == 2:
            save_state(project / "elsewhere" / state_dir.name, 12, b"weights at 12", run_id="r1")
            remote_state.push(project / "elsewhere" / state_dir.name)
        return "RUNNING" if len(asked) < 3 else "KILLED"

    remote_state.restore(state_dir, None, status)
    assert resume.read_loop(state_dir)["step"] == 12 and len(asked) == 3


def test_an_unreachable_remote_is_one_line_and_the_cell_goes_on(project, monkeypatch, capsys):
    monkeypatch.setenv(remote_state.ENV, "nosuchremote")
    state_dir = project / ".stilts" / "state" / "cell-abc"
    save_state(state_dir, 8, b"weights at 8")
    remote_state.push(state_dir)
    remote_state.push(state_dir)  # said once, not at every save
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("stilts: warning: cell-abc: the saved state was not copied")
    assert (state_dir / "state.json").is_file()


def test_off_without_the_variable(monkeypatch):
    monkeypatch.delenv(remote_state.ENV, raising=False)
    assert remote_state.remote_name() is None and remote_state.uploader(Path("x")) is None
