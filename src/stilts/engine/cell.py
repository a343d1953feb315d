"""One stage as a Dask task, on a worker: fetch its inputs, run its command, store its outputs.

The command runs as `dvc repro` runs it (`/bin/sh -c CMD`, DVC's variables) under `stilts.engine.guard`,
which stops the command when this worker goes, so a rerun elsewhere never races an orphan. A cell stopped
by a signal exits `stilts.stop.EXIT_RESUME` with its state saved; the head runs it again (`runner`). A `stilts`
command itself decides whether it runs in a fork of the warm cell server (`stilts.warm`).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from distributed.diagnostics.plugin import WorkerPlugin

from stilts import remote_state
from stilts.errors import StiltsError, last_line
from stilts.stop import EXIT_RESUME

SCONTROL_TIMEOUT_S = 60  # slurmctld answers in well under a second unless it is down
LOG_TAIL = 64_000  # bytes of a cell's log that travel back to the head from a worker's own copy
_running: dict[str, set[subprocess.Popen]] = {}  # study → the guards of its cells running on this worker
_running_lock = threading.Lock()
_stopping: set[str] = set()  # the studies whose head stopped them
_closed: set[str] = set()  # the studies that start no new cell here: one of their stages failed


class NotStarted(Exception):
    """A cell handed to this worker after its study closed (`close`): it did not start."""


class StageFailed(StiltsError):
    """A stage's command exited non-zero; `message` is its one-line error."""

    def __init__(self, stage: str, code: int, message: str, log: str = ""):
        super().__init__(stage, code, message, log)
        self.stage, self.code, self.message, self.log = stage, code, message, log

    def __str__(self) -> str:
        return f"stage '{self.stage}' failed (exit {self.code}): {self.message}"


class CellWorker(WorkerPlugin):
    """Set up a worker for cells: `STILTS_CELL_THREADS` (set by stilts' local and SLURM clusters, yours on
    workers you start) as their OMP/MKL threads, and the warm server started before the first cell.

    Dask's nanny gives its workers `MALLOC_TRIM_THRESHOLD_`; any explicit glibc threshold turns off the dynamic
    mmap threshold, and a cell trained 1.8× slower with it (MiniLM on RTE, CPU: 18.4 vs 32.8 examples/s).
    Cells run without Dask's value (a value of your own, different from it, stays)."""

    name = "stilts-cells"

    def setup(self, worker):
        import dask

        from stilts import warm

        threads = os.environ.get("STILTS_CELL_THREADS")
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS") if threads else ():
            os.environ[var] = threads
        nanny_trim = dask.config.get("distributed.nanny.pre-spawn-environ", {}).get("MALLOC_TRIM_THRESHOLD_")
        if nanny_trim is not None and os.environ.get("MALLOC_TRIM_THRESHOLD_") == str(nanny_trim):
            del os.environ["MALLOC_TRIM_THRESHOLD_"]
        warm.prestart()


def stop(study: str) -> int:
    """Stop the study's cells running on this worker (`client.run(stop, study)` when the head is interrupted):
    each saves its state and ends its run (killed after `STILTS_STOP_GRACE_S`); return once all have ended."""
    from stilts.stop import grace_seconds

    with _running_lock:
        _stopping.add(study)
        guards = _running.pop(study, set())
    for guard in guards:
        guard.stdin.close()  # the guard stops the command's process group
    for guard in guards:
        with contextlib.suppress(subprocess.TimeoutExpired):
            guard.wait(grace_seconds() + 10)
    return len(guards)


def close(study: str) -> None:
    """Start no new cell of `study` on this worker (`client.run(close, study)` when one of its stages failed).
    The cells running now finish and are recorded; one handed here later, even in the instant before the head
    heard of the failure, raises NotStarted instead of running where nothing would record it."""
    with _running_lock:
        _closed.add(study)


def requeue_slurm_job() -> None:
    """SIGUSR1 under SLURM (`--signal=USR1@120`) means this job is about to end: as Lightning does
    (`SLURMEnvironment`'s auto-requeue), put it back in the queue with `scontrol requeue`, once the cells it
    ran have saved their state. The job ends now and starts again later as a fresh worker; Dask runs its
    cells elsewhere meanwhile, and they resume. A second cell asking for the same job is ignored by SLURM."""
    job = os.environ.get("SLURM_JOB_ID")
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    if not job:
        return
    try:
        out = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=SCONTROL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        why = f"did not end within {SCONTROL_TIMEOUT_S} s (slurmctld does not answer)"
    except OSError as e:
        why = f"could not start ({e.strerror})"
    else:
        why = f"failed: {last_line(out.stderr or out.stdout)}" if out.returncode else ""
    if why:
        print(f"stilts: `scontrol requeue {job}` {why}; the job is not requeued and ends", file=sys.stderr,
              flush=True)


def requeue_slurm_job_if_idle() -> bool:
    """SIGUSR1 to a SLURM job's worker: with no cell running here (none to save and requeue after), requeue now."""
    if any(list(_running.values())):  # read without the lock: this runs in a signal handler
        return False
    requeue_slurm_job()
    return True


def run_command(cmd: str, root: Path, env: dict, log_path: Path, study: str = "") -> int:
    """Run a stage's command under the guard, its output appended to `log_path`; its exit code.
    Whether its study still starts cells is decided under the lock `stop` and `close` take, so a cell either
    started before them (and they see it) or does not start."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with _running_lock:
        if study in _closed:
            raise NotStarted(study)
        with open(log_path, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {cmd}\n".encode())
            if study in _stopping:  # handed to this worker in the instant its head was stopping the study
                log.write(b"stilts: not started: its study was stopped\n")
                return EXIT_RESUME
            log.flush()
            guard = subprocess.Popen([sys.executable, "-m", "stilts.engine.guard", "/bin/sh", "-c", cmd],
                                     stdin=subprocess.PIPE, stdout=log, stderr=log, cwd=root, env=env)
        _running.setdefault(study, set()).add(guard)
    try:
        return guard.wait()
    finally:
        with _running_lock:
            _running.get(study, set()).discard(guard)


def _tail(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - LOG_TAIL))
        return f.read().decode(errors="replace")


def error_line(log_path: Path) -> str:
    """The cell's one-line error: stilts' own `stilts: error: ...`, else the last line it wrote."""
    lines = [ln for ln in _tail(log_path).splitlines() if not ln.startswith("--- ")]
    errors = [ln.strip()[len("stilts: error:"):].strip() for ln in lines if ln.strip().startswith("stilts: error:")]
    return errors[-1] if errors else last_line("\n".join(lines))


def _cell_env(spec: dict, root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env |= {"DVC_STAGE": spec["address"], "DVC_ROOT": str(root)}  # as `dvc repro` sets them
    if spec.get("tracking_uri"):
        env["MLFLOW_TRACKING_URI"] = spec["tracking_uri"]
    if not spec["shared"]:  # a cell stopped here may resume on another worker: its saves travel too
        env.setdefault(remote_state.ENV, "default")
    return env


def run_stage(spec: dict, *upstream: dict) -> dict:
    """The Dask task of one stage; its arguments after `spec` are its upstream stages' results.
    Whatever goes wrong is raised as StageFailed naming this stage (downstream tasks see the same)."""
    from distributed import get_worker

    from stilts.engine import transport

    worker, name = get_worker(), spec["name"]
    try:
        if spec["study"] in _closed:  # before fetching its inputs; run_command decides under the lock
            raise NotStarted(spec["study"])
        side = transport.for_worker(spec)
        side.fetch(spec, list(upstream))
        log_path = side.root / ".stilts" / "logs" / f"{name}.log"
        start = time.monotonic()
        code = run_command(spec["cmd"], side.root, _cell_env(spec, side.root), log_path, spec["study"])
        log = "" if spec["shared"] else _tail(log_path)
        if code:
            message = error_line(log_path)
            if code == EXIT_RESUME and "stopped by SIGUSR1" in message and spec["study"] not in _stopping:
                requeue_slurm_job()
            raise StageFailed(name, code, message, log)
        return {"stage": name, "file": spec["file"], "seconds": round(time.monotonic() - start, 1),
                "worker": worker.address, "log": log, **side.store(spec)}
    except NotStarted:
        return {"stage": name, "started": False}
    except StageFailed:
        raise
    except StiltsError as e:
        raise StageFailed(name, 2, f"{e} (on {worker.address})") from None
    except Exception as e:  # noqa: BLE001  (a worker without stilts' dependencies, a full disk, ...)
        raise StageFailed(name, 1, f"{type(e).__name__}: {e} (on {worker.address})") from None
