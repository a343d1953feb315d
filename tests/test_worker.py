"""The warm fork server: same results and exit codes as running in-process, much less start-up."""

import contextlib
import os
import socket
from pathlib import Path

import yaml

from tests.commands import BIN, command_env, started, stilts
from tests.conftest import tiny_params_dict


def test_worker_runs_commands_and_propagates_errors(tiny_model, tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict(tiny_model)))
    env = command_env(STILTS_WORKER="1", STILTS_WORKER_IDLE="15", XDG_RUNTIME_DIR=str(tmp_path))
    first = stilts(tmp_path, "prepare", "--task", "syn_tense", env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "prepared syn_tense" in first.stdout
    assert list((tmp_path / f"stilts-{os.getuid()}").glob("worker-*.sock"))
    sockets = sorted((tmp_path / f"stilts-{os.getuid()}").glob("worker-*.sock"))
    second = stilts(tmp_path, "prepare", "--task", "syn_rte", env=env, timeout=300)
    assert second.returncode == 0 and "prepared syn_rte" in second.stdout
    assert sorted((tmp_path / f"stilts-{os.getuid()}").glob("worker-*.sock")) == sockets  # the same server
    bad = stilts(tmp_path, "prepare", "--task", "syn_rtee", env=env, timeout=300)
    assert bad.returncode == 2
    assert "unknown task 'syn_rtee' (did you mean 'syn_rte'?)" in bad.stderr
    cell = stilts(tmp_path, "transfer", "--source", "none", "--task", "syn_tense", "--restart", "0", env=env,
                  timeout=300)
    assert cell.returncode == 0, cell.stderr
    assert (tmp_path / "results" / "none" / "syn_tense" / "r0.json").is_file()


def _servers(base: Path) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"stilts.worker" in args and any(a.startswith(str(base).encode()) for a in args):
            pids.append(int(cmdline.parent.name))
    return pids


def test_clients_starting_together_start_one_server(tiny_model, tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict(tiny_model)))
    env = command_env(STILTS_WORKER="1", STILTS_WORKER_IDLE="10", XDG_RUNTIME_DIR=str(tmp_path))
    with contextlib.ExitStack() as stack:
        procs = [stack.enter_context(started(tmp_path, BIN / "stilts", "prepare", "--task", t, env=env))
                 for t in ("syn_tense", "syn_rte", "syn_nli")]
        for p in procs:
            p.communicate(timeout=300)
    assert [p.returncode for p in procs] == [0, 0, 0]
    base = tmp_path / f"stilts-{os.getuid()}"
    assert len(_servers(base)) == 1  # one imported the libraries; the others waited for its socket
    (sock,) = base.glob("worker-*.sock")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # what `stilts pipeline` does before `dvc repro`
    probe.connect(str(sock))
    probe.close()
    again = stilts(tmp_path, "prepare", "--task", "syn_rte", env=env, timeout=300)
    assert again.returncode == 0
    assert "Traceback" not in sock.with_suffix(".log").read_text()
