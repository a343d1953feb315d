"""The cell server's socket folder is used only when it is this user's own and closed to others."""

import os

import pytest
import yaml

from stilts import warm
from tests.commands import command_env, stilts
from tests.conftest import tiny_params_dict


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("STILTS_WORKER", "1")
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(warm, "_WARNED", [])
    return tmp_path


def test_a_fresh_folder_is_private_and_used(runtime):
    assert warm.enabled()
    base = runtime / f"stilts-{os.getuid()}"
    assert oct(base.stat().st_mode & 0o777) == "0o700" and warm.socket_path().parent == base


def test_a_folder_open_to_others_is_refused_once(runtime, capsys):
    base = runtime / f"stilts-{os.getuid()}"
    base.mkdir()
    base.chmod(0o755)
    assert not warm.enabled() and not warm.enabled()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is open to others (mode 0755; it must be 0700)" in err
    with pytest.raises(OSError, match="unsafe cell server folder"):
        warm.socket_path()


def test_a_folder_of_another_user_is_refused(runtime, monkeypatch, capsys):
    me = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: me + 1)  # the folder below then belongs to someone else
    (runtime / f"stilts-{me + 1}").mkdir(mode=0o700)
    assert not warm.enabled()
    assert f"belongs to uid {me}, not to you (uid {me + 1})" in capsys.readouterr().err


def test_a_symlinked_folder_is_refused(runtime, tmp_path_factory, capsys):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    elsewhere.chmod(0o700)
    (runtime / f"stilts-{os.getuid()}").symlink_to(elsewhere)
    assert not warm.enabled()
    assert "is not a directory (a symlink or a file)" in capsys.readouterr().err


def test_cells_run_in_process_when_the_folder_is_unsafe(tiny_model, tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict(tiny_model)))
    base = tmp_path / f"stilts-{os.getuid()}"
    base.mkdir()
    base.chmod(0o777)
    env = command_env(STILTS_WORKER="1", XDG_RUNTIME_DIR=str(tmp_path))
    out = stilts(tmp_path, "prepare", "--task", "syn_tense", env=env, timeout=300)
    assert out.returncode == 0 and "prepared syn_tense" in out.stdout
    assert out.stderr.count("not using the cell server") == 1 and "cells run in-process" in out.stderr
    assert not list(base.iterdir())  # no socket, no log, no start marker
