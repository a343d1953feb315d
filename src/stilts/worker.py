"""The warm cell server: torch, transformers, datasets and MLflow imported once, not once per DVC stage.

Each `stilts` cell command (its client, `stilts.warm`) hands it argv, working directory, environment and
stdin/stdout/stderr; the server forks a child that runs the command as the CLI would, waits on the child
and the client together (pidfd + select), returns the exit code, and kills the child if the client goes
away first. It exits after `STILTS_WORKER_IDLE` seconds (default 300) without work.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path

from stilts.warm import unsafe

# transformers and MLflow import most of their machinery lazily, at first use: name it here
PRELOAD = ["torch", "transformers", "accelerate", "datasets", "mlflow", "mlflow.tracking", "safetensors.torch",
           "transformers.modeling_utils", "transformers.models.auto.modeling_auto",
           "transformers.models.auto.tokenization_auto", "transformers.models.bert.modeling_bert",
           "transformers.models.roberta.modeling_roberta", "transformers.models.bert.tokenization_bert",
           "transformers.models.roberta.tokenization_roberta", "transformers.trainer_pt_utils",
           "transformers.data.data_collator", "transformers.optimization", "accelerate.accelerator",
           "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.db.utils", "sqlalchemy", "alembic",
           "datasets.arrow_dataset", "tqdm.auto", "scipy.stats", "pandas", "matplotlib.pyplot",
           "stilts.cells", "stilts.train", "stilts.modeling", "stilts.data", "stilts.tracking", "stilts.mlm",
           "stilts.tasktypes.classification", "stilts.tasktypes.multiple_choice", "stilts.analysis.report",
           "mlflow.pyfunc", "stilts.tracking.models", "stilts.tracking.pyfunc", "stilts.predict"]
MAX_REQUEST = 1 << 20  # bytes: argv, working directory and environment, as one message (SOCK_SEQPACKET)
_children: dict[int, int] = {}  # the running commands: pid → pidfd
_children_lock = threading.Lock()


def _child(fds: list[int], request: dict) -> None:
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
    for fd in fds:
        os.close(fd)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ["STILTS_WORKER"] = "0"
    os.chdir(request["cwd"])
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_DFL)  # until the command handles them (`stilts.stop`)
    from stilts import cli

    code = 1
    try:
        code = cli.main(request["argv"])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(code)


def _wait_for_child(pidfd: int, conn: socket.socket) -> None:
    """Until the child ends: a signal number from the client (a stop signal it received) is passed on to the
    child; the client going away first (its end of the connection closes) kills the child."""
    while pidfd not in select.select([pidfd, conn], [], [])[0]:
        message = conn.recv(4)
        with contextlib.suppress(ProcessLookupError):
            if len(message) == 4:
                signal.pidfd_send_signal(pidfd, struct.unpack("!i", message)[0])
                continue
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        return


def _peer_is_us(conn: socket.socket) -> bool:
    """Serve only this user's processes (the folder's mode already keeps others out; this is a second lock)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return True
    _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid == os.getuid()


def _serve_one(conn: socket.socket) -> None:
    if not _peer_is_us(conn):
        return
    msg, fds, _, _ = socket.recv_fds(conn, MAX_REQUEST, 3)
    if not msg:  # closed without a request: a liveness check (`stilts.warm.prestart`), or a client killed early
        for fd in fds:
            os.close(fd)
        return
    request = json.loads(msg)
    pid = os.fork()
    if pid == 0:
        conn.close()
        _child(fds, request)
    for fd in fds:
        os.close(fd)
    pidfd = os.pidfd_open(pid)
    with _children_lock:
        _children[pid] = pidfd
    try:
        _wait_for_child(pidfd, conn)
    finally:
        with _children_lock:
            del _children[pid]
        os.close(pidfd)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    try:
        conn.send(struct.pack("!i", code if code >= 0 else 128 - code))
    except OSError:
        pass


def _warm_caches() -> None:
    """Fill the per-process caches that every model load would otherwise build again in each child."""
    try:  # transformers ≥5 compiles ~1,000 regexes of weight-renaming rules at the first from_pretrained
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping

        get_checkpoint_conversion_mapping("bert")
    except Exception:  # noqa: BLE001  (another transformers version: nothing to warm)
        pass


def _preload() -> None:
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001  (a module moved in another library version: import it later)
            pass
    _warm_caches()
    # Children share the imported heap copy-on-write. Freezing it keeps the cyclic GC from walking (and so
    # copying) every import in each child: without it a child's first full collection cost ~0.4 s here.
    gc.collect()
    gc.freeze()


class _Stopping(Exception):
    """SIGTERM to the server: its children have been told to stop; wait for them, then exit."""


def _stop_children(signum, frame) -> None:
    with _children_lock:
        for pidfd in _children.values():
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGTERM)
    raise _Stopping


def _accept_until_idle(server: socket.socket, idle: float) -> None:
    """Serve each connection in a thread; return once no command has run for `idle` seconds, or once the
    commands running have stopped after a SIGTERM to the server (each saves its state, `stilts.stop`)."""
    handlers: list[threading.Thread] = []
    last_done = [time.monotonic()]
    signal.signal(signal.SIGTERM, _stop_children)
    try:
        _accept(server, idle, handlers, last_done)
    except _Stopping:
        server.close()
        for t in handlers:
            t.join()


def _accept(server: socket.socket, idle: float, handlers: list, last_done: list) -> None:
    def handle(conn):
        try:
            with conn:
                _serve_one(conn)
        finally:
            last_done[0] = time.monotonic()

    while True:
        handlers[:] = [t for t in handlers if t.is_alive()]
        wait = idle if handlers else last_done[0] + idle - time.monotonic()
        if wait <= 0:
            return
        server.settimeout(wait)
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        conn.settimeout(None)
        handlers.append(threading.Thread(target=handle, args=(conn,), daemon=True))
        handlers[-1].start()


def serve(path: Path, lock_fd: int) -> None:
    """Import, then listen on `path`; `lock_fd` is the starting client's lock, released once we listen."""
    why = unsafe(path.parent)
    if why:
        raise SystemExit(f"stilts worker: not serving: {why}")
    for sig in (signal.SIGINT, signal.SIGUSR1):  # SLURM signals every process of a job: the commands stop,
        signal.signal(sig, signal.SIG_IGN)       # the server serves on (SIGTERM: it waits for them, then exits)
    _preload()
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(str(tmp))
    server.listen(16)
    os.replace(tmp, path)  # the socket appears only when the imports are done
    os.close(lock_fd)
    inode = os.stat(path).st_ino
    try:
        _accept_until_idle(server, float(os.environ.get("STILTS_WORKER_IDLE", "300")))
    finally:
        try:
            if os.stat(path).st_ino == inode:
                path.unlink()
            log = path.with_suffix(".log")
            if log.is_file() and log.stat().st_size == 0:
                log.unlink()
        except OSError:
            pass
        server.close()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), int(sys.argv[2]))
