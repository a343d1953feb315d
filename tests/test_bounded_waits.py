"""Every process stilts waits on has a bound, and passing it is one line: a DVC remote or lock that never
answers, git, scontrol, a cell server that never listens. Every server here listens on 127.0.0.1."""

import fcntl
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from stilts import cli, stages, tracking, warm
from stilts.engine import cell, transport
from stilts.errors import StiltsError
from tests.conftest import tiny_params_dict

BIN = Path(sys.executable).parent


def _dvc(root: Path, *args: str) -> None:
    subprocess.run([str(BIN / "dvc"), *args], cwd=root, check=True, capture_output=True, timeout=300)


@pytest.fixture
def silent_remote():
    """An http server on 127.0.0.1 that accepts connections and never answers; yields (url, accepted)."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept():
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:  # closed
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/store", accepted
    server.close()
    for conn in accepted:
        conn.close()


def test_a_dvc_push_to_a_remote_that_never_answers_ends_at_the_bound(tmp_path, monkeypatch, silent_remote):
    url, accepted = silent_remote
    _dvc(tmp_path, "init", "-q", "--no-scm")
    (tmp_path / "model.bin").write_bytes(os.urandom(1024))
    _dvc(tmp_path, "add", "-q", "model.bin")
    _dvc(tmp_path, "remote", "add", "-d", "silent", url)
    monkeypatch.setenv("STILTS_DVC_TIMEOUT", "15")
    start = time.monotonic()
    with pytest.raises(StiltsError) as error:
        stages.dvc(tmp_path, "push", "--quiet")
    seconds = time.monotonic() - start
    assert str(error.value) == (f"{tmp_path}: `dvc push` did not end within 15 s (its remote or DVC's lock does "
                                f"not answer); stopped it (STILTS_DVC_TIMEOUT sets the bound)")
    assert accepted  # it reached the remote and waited there, until the bound
    assert 15 <= seconds < 25


def test_a_dvc_lock_held_meanwhile_fails_the_study_with_exit_2(tiny_model, tmp_path, monkeypatch, capsys):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict(tiny_model)))
    _dvc(tmp_path, "init", "-q", "--no-scm")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("STILTS_DVC_TIMEOUT", "5")
    lock = tmp_path / ".dvc" / "tmp" / "lock"
    lock.parent.mkdir(exist_ok=True)
    with open(lock, "a") as held:  # another dvc at work that does not end
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        start = time.monotonic()
        assert cli.main(["study", "--cluster", "local"]) == 2
        seconds = time.monotonic() - start
    err = capsys.readouterr().err
    assert err == (f"stilts: error: {tmp_path}: `dvc repro` did not end within 5 s (its remote or DVC's lock does "
                   f"not answer); stopped it (STILTS_DVC_TIMEOUT sets the bound)\n")
    assert seconds < 30


def test_the_dvc_bound_setting_is_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("STILTS_DVC_TIMEOUT", "an hour")
    with pytest.raises(StiltsError, match=r"^STILTS_DVC_TIMEOUT='an hour': must be a number of seconds > 0$"):
        stages.dvc(tmp_path, "status")


def _hanging(tmp_path: Path, monkeypatch, name: str) -> None:
    """`name` on PATH is a program that never ends."""
    fake = tmp_path / "bin" / name
    fake.parent.mkdir(exist_ok=True)
    fake.write_text("#!/bin/sh\nexec sleep 600\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")


def test_git_that_does_not_answer(tmp_path, monkeypatch, capsys):
    _hanging(tmp_path, monkeypatch, "git")
    monkeypatch.setattr(transport, "GIT_TIMEOUT_S", 1)
    monkeypatch.setattr(tracking, "GIT_TIMEOUT_S", 1)
    start = time.monotonic()
    with pytest.raises(StiltsError, match=rf"^{tmp_path}: `git rev-parse` did not end within 1 s; stopped it"):
        transport.git(tmp_path, "rev-parse", "HEAD")
    assert tracking.git_commit(tmp_path) is None
    assert time.monotonic() - start < 15
    assert capsys.readouterr().err == (f"stilts: {tmp_path}: `git rev-parse HEAD` did not end within 1 s; the run "
                                       "is not tagged with the commit\n")


def test_scontrol_that_does_not_answer_or_fails(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    _hanging(tmp_path, monkeypatch, "scontrol")
    monkeypatch.setattr(cell, "SCONTROL_TIMEOUT_S", 1)
    start = time.monotonic()
    cell.requeue_slurm_job()
    assert time.monotonic() - start < 15
    failing = tmp_path / "bin" / "scontrol"
    failing.write_text("#!/bin/sh\necho 'slurm_requeue error: Invalid job id specified' >&2\nexit 1\n")
    cell.requeue_slurm_job()
    assert capsys.readouterr().err.splitlines() == [
        "stilts: `scontrol requeue 41` did not end within 1 s (slurmctld does not answer); the job is not "
        "requeued and ends",
        "stilts: `scontrol requeue 41` failed: slurm_requeue error: Invalid job id specified; the job is not "
        "requeued and ends"]


def test_a_cell_server_that_never_listens_leaves_the_command_in_process(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setattr(warm, "START_S", 1)
    path = warm.socket_path()
    with open(path.with_suffix(".lock"), "a") as held:  # a server that is starting and never listens
        fcntl.flock(held, fcntl.LOCK_EX)
        assert warm._server(path, wait=False) is None  # `prestart` leaves it to the one starting, at once
        assert capsys.readouterr().err == ""
        start = time.monotonic()
        assert warm.run(["prepare", "--task", "syn_rte"]) is None  # the CLI then runs it in-process
        assert 1 <= time.monotonic() - start < 10
    assert capsys.readouterr().err == (f"stilts: the cell server did not start listening within 1 s (its log: "
                                       f"{path.with_suffix('.log')}); this command runs in-process\n")
