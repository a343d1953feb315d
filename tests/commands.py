"""What the tests share to drive a project: its commands (the venv's `stilts`, `dvc`, `git`, ...) run with a time
bound, the CLI run in-process, and what the project recorded (its MLflow runs, the stages DVC ran)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

BIN = Path(sys.executable).parent  # the venv's commands
COMMAND_TIMEOUT = 600  # seconds a command may run before it fails its test (within the test's own bound)


def command_env(**extra: str) -> dict[str, str]:
    """The environment of a command a test starts: the venv's commands first on PATH, no network, no DVC
    analytics, warm cell servers that exit 30 s after their last cell (unless the caller's environment or
    `extra` says otherwise), and `extra`. conftest.py has removed the caller's MLflow run and server and any fault."""
    return {"STILTS_WORKER_IDLE": "30", **os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "DVC_NO_ANALYTICS": "1", **extra}


def warm_env(root: Path, **extra: str) -> dict[str, str]:
    """`command_env` for cells run by warm cell servers of the test's own (their sockets beside the project)."""
    return command_env(STILTS_WORKER="1", XDG_RUNTIME_DIR=str(root.parent), **extra)


def _tail(text: str | bytes | None) -> str:
    return (text.decode(errors="replace") if isinstance(text, bytes) else text or "")[-3000:]


def run(cwd, *cmd, check: bool = True, env: dict | None = None, timeout: float = COMMAND_TIMEOUT, **options):
    """`cmd` in `cwd` with its output captured (text), in `env` (default: `command_env()`), with subprocess.run's
    other `options`. Past `timeout` seconds it is killed and the test fails naming it; with `check`, so does a
    non-zero exit."""
    cmd = [str(c) for c in cmd]
    try:
        out = subprocess.run(cmd, cwd=cwd, env=command_env() if env is None else env, capture_output=True,
                             text=True, timeout=timeout, **options)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{cmd} still ran after {timeout} s and was killed:\n{_tail(e.stdout)}\n"
                             f"{_tail(e.stderr)}") from None
    if check and out.returncode:
        raise AssertionError(f"{cmd} failed ({out.returncode}):\n{_tail(out.stdout)}\n{_tail(out.stderr)}")
    return out


def stilts(cwd, *args, check: bool = False, env: dict | None = None, timeout: float = COMMAND_TIMEOUT):
    """`stilts ARGS` as a user runs it, in a process of its own; its exit status is the test's to check."""
    return run(cwd, BIN / "stilts", *args, check=check, env=env, timeout=timeout)


def mlflow_run(root: Path, *args, fault: str | None = None, timeout: float = 300):
    """`mlflow run` of the MLproject in `root` (experiment `mlp`, the project's own store); its cells run in a cell
    server shared by the runs beside it (in-process with a fault: a `group` fault kills the process group the
    cell runs in)."""
    env = command_env(STILTS_WORKER="0" if fault else "1", STILTS_WORKER_IDLE="60", XDG_RUNTIME_DIR=str(root.parent),
                      MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}", GIT_PYTHON_REFRESH="quiet",
                      **({"STILTS_FAULT": fault} if fault else {}))
    # a session of its own: a `group` fault kills mlflow and everything it started, as `kill -9 -PGID` would
    return run(root, BIN / "mlflow", "run", root, "--env-manager", "local", "--experiment-name", "mlp", *args,
               check=False, env=env, timeout=timeout, start_new_session=True)


def git(root: Path, *args, env: dict | None = None):
    """`git ARGS` in `root` as a test's own author (no identity is configured where the tests run)."""
    return run(root, "git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args, env=env)


def git_dvc_init(root: Path, env: dict | None = None) -> None:
    """`git init` and `dvc init` in `root`: a project DVC can run and record."""
    run(root, "git", "init", "-q", env=env)
    run(root, "dvc", "init", "-q", env=env)


@contextlib.contextmanager
def started(cwd, *cmd, env: dict | None = None, **popen) -> Iterator[subprocess.Popen]:
    """`cmd` started in `cwd` (output piped as text unless `popen` says otherwise), killed when the block ends
    while it still runs: a test that fails or times out leaves no command behind."""
    options = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True} | popen
    proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=command_env() if env is None else env, **options)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe:
                pipe.close()


def wait_for(what: str, check, timeout: float = 300, every: float = 0.5):
    """`check()`'s first true value, asked every `every` seconds; after `timeout` seconds the test fails."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} ({timeout} s)")


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (once the socket that found it is closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cli(NamedTuple):
    code: int
    out: str
    err: str  # stripped


def run_cli(capsys, *argv) -> Cli:
    """`stilts ARGV` in this process (`cli.main`): its exit status and what it printed (only it)."""
    from stilts import cli as stilts_cli

    capsys.readouterr()
    code = stilts_cli.main([str(a) for a in argv])
    printed = capsys.readouterr()
    return Cli(code, printed.out, printed.err.strip())


def ran(out) -> set[str]:
    """The stages a `dvc repro` or `dvc exp run` ran (a source's cells live in pipelines/<source>/dvc.yaml: DVC
    prints `path:name`)."""
    return {s.split(":")[-1] for s in re.findall(r"Running stage '([^']+)'", out.stdout)}


def runs(root: Path, uri: str | None = None, experiment: str | None = None):
    """The MLflow runs of the project in `root` (its params.yaml's experiment unless named), from its own store
    or from the tracking server at `uri`: `tracking.search_runs`' frame."""
    from stilts import config, tracking

    with pytest.MonkeyPatch.context() as mp:
        if uri:
            mp.setenv("MLFLOW_TRACKING_URI", uri)
        return tracking.search_runs(config.load(root / "params.yaml"), experiment)


def runs_of(root: Path, cell: str, uri: str | None = None):
    """The runs of one cell (its `stilts.cell` tag, e.g. `none/syn_rte/r0`)."""
    found = runs(root, uri)
    return found[found["tags.stilts.cell"] == cell] if "tags.stilts.cell" in found else found.iloc[0:0]
