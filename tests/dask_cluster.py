"""Dask clusters on 127.0.0.1 for the tests: a scheduler and `dask worker` processes, each worker in its own git
clone of the study (no shared filesystem, a local-directory DVC remote), one `stilts server` for MLflow; every
process a test starts is stopped at its end."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil
import yaml

from stilts.io import sha256_file
from tests.commands import BIN, command_env, free_port, git, git_dvc_init, run, wait_for
from tests.conftest import tiny_params_dict

# syn_nli trains long enough (192 steps, seconds) for a test to catch its cell mid-training under load
TINY = {"task_overrides": {"syn_nli": {"epochs": 24}}, "train": {"eval_every": 8}}


class Processes:
    """Every process a test starts, stopped at the end: the scheduler, workers, the MLflow server, and
    the warm cell servers the workers started (found through their sockets' peer credentials)."""

    def __init__(self, runtime: Path):
        self.runtime, self.procs, self.uri = runtime, [], None
        # STILTS_STEP_WRITE_S=0: the tests watch a cell's steps in MLflow as they happen (by default every 5 s)
        self.env = command_env(STILTS_WORKER_IDLE="120", XDG_RUNTIME_DIR=str(runtime), STILTS_CELL_THREADS="1",
                               STILTS_STEP_WRITE_S="0")

    def start(self, cwd, *cmd, log: Path) -> subprocess.Popen:
        with open(log, "ab") as out:
            proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=self.env, stdout=out, stderr=out,
                                    stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def run(self, cwd, *cmd, check=True, env=None, timeout: float = 600):
        return run(cwd, *cmd, check=check, env=self.env | (env or {}), timeout=timeout)

    def warm_servers(self) -> list[psutil.Process]:
        found = []
        for sock in self.runtime.glob("stilts-*/worker-*.sock"):
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
                s.connect(str(sock))
                pid, _, _ = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
                found.append(psutil.Process(pid))
        return found

    def all(self) -> list[psutil.Process]:
        procs = []
        for p in self.procs + [s.pid for s in self.warm_servers()]:
            with contextlib.suppress(psutil.NoSuchProcess):
                top = psutil.Process(p if isinstance(p, int) else p.pid)
                procs += [top, *top.children(recursive=True)]
        return procs

    def stop(self) -> None:
        servers = self.warm_servers()
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10  # all of them at once, then whatever is left is killed
        for proc in self.procs:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for server in servers:
            with contextlib.suppress(psutil.NoSuchProcess):
                server.kill()
                server.wait(10)


def start_server(procs: Processes, root: Path) -> str:
    port = free_port()
    procs.start(root, BIN / "stilts", "server", "--port", str(port), "--workers", "1", log=root / "server.log")
    uri = f"http://127.0.0.1:{port}"

    def healthy():
        with contextlib.suppress(OSError):
            return urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200

    wait_for("the MLflow server", healthy)
    return uri


def start_scheduler(procs: Processes, root: Path, name: str) -> str:
    port, log = free_port(), root / f"{name}.log"
    procs.start(root, BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                "--dashboard-address", "127.0.0.1:0", log=log)
    wait_for("the scheduler", lambda: b"Scheduler at" in log.read_bytes(), timeout=120)
    return f"tcp://127.0.0.1:{port}"


def start_worker(procs: Processes, cwd: Path, address: str, *args: str) -> subprocess.Popen:
    return procs.start(cwd, BIN / "dask", "worker", address, "--host", "127.0.0.1", "--dashboard-address",
                       "127.0.0.1:0", "--no-nanny", "--name", cwd.name, *args, log=cwd.parent / f"{cwd.name}.log")


def project(procs: Processes, root: Path, tiny_model, remote: Path | None, **over) -> Path:
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict(tiny_model, **over), sort_keys=False))
    (root / ".gitignore").write_text("/mlflow.db*\n/mlartifacts/\n/.stilts/\n/*.log\n")
    git_dvc_init(root, procs.env)
    if remote is not None:
        procs.run(root, "dvc", "remote", "add", "-d", "store", str(remote))
    procs.run(root, "stilts", "pipeline")
    commit(procs, root)
    return root


def commit(procs: Processes, root: Path) -> None:
    procs.run(root, "git", "add", "-A")
    git(root, "commit", "-q", "-m", "study", env=procs.env)


def two_workers(procs: Processes, tiny_model, **over) -> dict:
    """A head project without a shared filesystem, two worker clones, and a scheduler with one worker in each."""
    base = procs.runtime
    head = project(procs, base / "head", tiny_model, base / "remote", **TINY, cluster={"shared_filesystem": False},
                   **over)
    clones = []
    for name in ("w1", "w2"):
        procs.run(base, "git", "clone", "-q", str(head), name)
        clones.append(base / name)
    address = start_scheduler(procs, base, "scheduler")
    workers = {c.name: start_worker(procs, c, address, "--nthreads", "1") for c in clones}
    return {"base": base, "head": head, "clones": clones, "uri": procs.uri, "address": address, "workers": workers,
            "procs": procs}


def results(root: Path) -> dict:
    """What a study computed: every result's metrics and steps, and the checkpoints' weights."""
    out = {str(p.relative_to(root)): {k: json.loads(p.read_text())[k] for k in ("metrics", "steps", "best_step")}
           for p in (root / "results").rglob("*.json")}
    out |= {str(p.relative_to(root)): sha256_file(p) for p in (root / "models").rglob("model.safetensors")}
    return out


def cell_children(procs: Processes, clone: Path) -> list[psutil.Process]:
    """The warm server's children running a cell in this clone."""
    kids = []
    for server in procs.warm_servers():
        for kid in server.children():
            with contextlib.suppress(psutil.NoSuchProcess):
                if Path(kid.cwd()).resolve() == clone.resolve():
                    kids.append(kid)
    return kids
