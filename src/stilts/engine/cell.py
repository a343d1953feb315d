"""One stage as a Dask task, on a worker: fetch its inputs, run its command warm, store its outputs.

The command runs in the warm fork server (`stilts.worker`) when it is a `stilts` command and the server
is on: this task is the server's client, hands it the stage's log file as stdout/stderr, and holds the
connection. Otherwise it runs under `stilts.engine.guard`, which holds a pipe from this process. Either
way the cell dies when this worker process dies (the rerun elsewhere never races an orphan) and when
the task is cancelled (the head went away or was interrupted).
"""

from __future__ import annotations

import os
import select
import shlex
import subprocess
import sys
import time
from pathlib import Path

from distributed.diagnostics.plugin import WorkerPlugin

from stilts.errors import StiltsError

LOG_TAIL = 64_000  # bytes of a cell's log that travel back to the head from a worker's own copy


class StageFailed(StiltsError):
    """A stage's command exited non-zero; `message` is its one-line error."""

    def __init__(self, stage: str, code: int, message: str, log: str = ""):
        super().__init__(stage, code, message, log)
        self.stage, self.code, self.message, self.log = stage, code, message, log

    def __str__(self) -> str:
        return f"stage '{self.stage}' failed (exit {self.code}): {self.message}"


class CellWorker(WorkerPlugin):
    """Set up a worker for cells: their CPU threads, and the warm server started before the first cell.

    A cell gets `STILTS_CELL_THREADS` threads, or this worker's CPUs divided by its Dask threads (the
    cells it runs at once). They are set in the worker's environment, which the warm server inherits.

    Dask's nanny also gives its workers `MALLOC_TRIM_THRESHOLD_` (distributed.nanny.pre-spawn-environ).
    Any explicit glibc threshold turns off the dynamic mmap threshold, so every large tensor becomes an
    mmap/munmap pair: a cell trained 1.8× slower with it (MiniLM on RTE, CPU: 18.4 vs 32.8 examples/s).
    Cells run without Dask's value (a value of your own, different from it, stays)."""

    name = "stilts-cells"

    def setup(self, worker):
        import dask

        from stilts.engine.clusters import cpus

        threads = os.environ.get("STILTS_CELL_THREADS") or str(max(1, cpus() // max(1, worker.state.nthreads)))
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = threads
        nanny_trim = dask.config.get("distributed.nanny.pre-spawn-environ", {}).get("MALLOC_TRIM_THRESHOLD_")
        if nanny_trim is not None and os.environ.get("MALLOC_TRIM_THRESHOLD_") == str(nanny_trim):
            del os.environ["MALLOC_TRIM_THRESHOLD_"]
        from stilts import worker as warm

        warm.prestart()


class _Warm:
    """A command in the warm server: closing the connection kills it."""

    def __init__(self, conn):
        self.conn = conn

    def poll(self, timeout: float) -> int | None:
        from stilts import worker as warm

        if not select.select([self.conn], [], [], timeout)[0]:
            return None
        code = warm.exit_code(self.conn)
        return 137 if code is None else code  # None: the server itself died, and its child with it

    def kill(self) -> None:
        self.conn.close()


class _Guarded:
    """A command under the guard: closing its stdin kills the command's process group."""

    def __init__(self, cmd: str, root: Path, env: dict, log):
        self.proc = subprocess.Popen([sys.executable, "-m", "stilts.engine.guard", "/bin/sh", "-c", cmd],
                                     stdin=subprocess.PIPE, stdout=log, stderr=log, cwd=root, env=env)

    def poll(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def _start(cmd: str, root: Path, env: dict, log) -> _Warm | _Guarded:
    from stilts import worker as warm

    argv = shlex.split(cmd)
    if argv and Path(argv[0]).name == "stilts" and warm.enabled():
        with open(os.devnull, "rb") as null:
            conn = warm.request(argv[1:], cwd=str(root), env=env, fds=(null.fileno(), log.fileno(), log.fileno()))
        if conn is not None:
            return _Warm(conn)
    return _Guarded(cmd, root, env | {"STILTS_WORKER": "0"}, log)


def run_command(cmd: str, root: Path, env: dict, log_path: Path, cancelled=lambda: False) -> int | None:
    """Run a stage's command with its output appended to `log_path`; None if cancelled (then killed)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {cmd}\n".encode())
        log.flush()
        running = _start(cmd, root, env, log)
        while (code := running.poll(1.0)) is None:
            if cancelled():
                running.kill()
                return None
        return code


def error_line(log_path: Path) -> str:
    """The cell's one-line error: stilts' own `stilts: error: ...`, else the last line it wrote."""
    lines = [ln.strip() for ln in _tail(log_path).splitlines() if ln.strip() and not ln.startswith("--- ")]
    for line in reversed(lines):
        if line.startswith("stilts: error:"):
            return line[len("stilts: error:"):].strip()
    return lines[-1] if lines else "(no output)"


def _tail(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - LOG_TAIL))
        return f.read().decode(errors="replace")


def _cell_env(spec: dict, root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env |= {"DVC_STAGE": spec["address"], "DVC_ROOT": str(root)}  # as `dvc repro` sets them
    if spec.get("tracking_uri"):
        env["MLFLOW_TRACKING_URI"] = spec["tracking_uri"]
    return env


def run_stage(spec: dict, *upstream: dict) -> dict:
    """The Dask task of one stage; its arguments after `spec` are its upstream stages' results.
    Whatever goes wrong is raised as StageFailed naming this stage (downstream tasks see the same)."""
    from distributed import Event, get_worker

    worker = get_worker()
    name = spec["name"]
    if Event(spec["stop"]).is_set():
        return {"stage": name, "skipped": True}  # the study is stopping: start nothing new
    worker.log_event(spec["topic"], {"started": name, "worker": worker.address})
    try:
        return _run_stage(worker, spec, list(upstream))
    except StageFailed:
        raise
    except StiltsError as e:
        raise StageFailed(name, 2, f"{e} (on {worker.address})") from None
    except Exception as e:  # noqa: BLE001  (a worker without stilts' dependencies, a full disk, ...)
        raise StageFailed(name, 1, f"{type(e).__name__}: {e} (on {worker.address})") from None
    finally:
        worker.log_event(spec["topic"], {"ended": name})


def _run_stage(worker, spec: dict, upstream: list[dict]) -> dict:
    from stilts.engine import transport

    name = spec["name"]
    side = transport.for_worker(spec)
    side.fetch(spec, upstream)
    log_path = side.root / ".stilts" / "logs" / f"{name}.log"
    key = worker.get_current_task()

    def cancelled() -> bool:
        ts = worker.state.tasks.get(key)
        return ts is None or ts.state == "cancelled"

    start = time.monotonic()
    code = run_command(spec["cmd"], side.root, _cell_env(spec, side.root), log_path, cancelled)
    if code is None:
        return {"stage": name, "cancelled": True}
    log = "" if spec["shared"] else _tail(log_path)
    if code:
        raise StageFailed(name, code, error_line(log_path), log)
    return {"stage": name, "file": spec["file"], "seconds": round(time.monotonic() - start, 1),
            "worker": worker.address, "log": log, **side.store(spec)}
