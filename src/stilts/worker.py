"""A warm fork server for cells, so each DVC stage does not pay Python + torch + MLflow start-up.

`dvc repro` starts one process per stage. Importing torch, transformers, datasets and MLflow costs
several seconds each time, which is most of a small cell. The first `stilts` cell command starts
this server in the background (imports done once); every cell command then connects over a unix
socket, hands over its stdin/stdout/stderr, argv, working directory and environment, and the
server forks a fresh child that runs the command exactly as the CLI would. The client exits with
the child's exit code; killing the client kills the child. The server exits after
`STILTS_WORKER_IDLE` seconds (default 300) without work, and a code change gives a new server
(the socket name includes a hash of the package source). `STILTS_WORKER=0` turns it off.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

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


# read once at start or import time by glibc/torch/transformers/huggingface_hub: a server serves one setting
IMPORT_TIME_ENV = ("HF_", "TRANSFORMERS_", "CUDA_", "TORCH", "OMP_", "MKL_", "PYTORCH_", "TOKENIZERS_", "MALLOC_")


def _code_hash() -> str:
    h = hashlib.sha256(sys.executable.encode())
    for p in sorted(Path(__file__).parent.rglob("*.py")):
        h.update(p.read_bytes())
    for k in sorted(os.environ):
        if k.startswith(IMPORT_TIME_ENV):
            h.update(f"{k}={os.environ[k]}".encode())
    return h.hexdigest()[:12]


def _socket_dir() -> Path:
    return Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp") / f"stilts-{os.getuid()}"


def _unsafe(base: Path) -> str | None:
    """Why the socket folder must not be used (None when it is safe): it has to be a real directory of this
    user, closed to everyone else, as tmux and ssh-agent require of theirs. Otherwise another local user
    could listen there and receive a client's argv, environment and terminal."""
    try:
        base.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(base)
    except OSError as e:
        return f"cannot create {base}: {e.strerror}"
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        return f"{base} is not a directory (a symlink or a file)"
    if st.st_uid != os.getuid():
        return f"{base} belongs to uid {st.st_uid}, not to you (uid {os.getuid()})"
    if st.st_mode & 0o077:
        return f"{base} is open to others (mode {stat.S_IMODE(st.st_mode):04o}; it must be 0700)"
    return None


_WARNED: list = []


def socket_path() -> Path:
    base = _socket_dir()
    why = _unsafe(base)
    if why:
        raise OSError(f"stilts: unsafe cell server folder: {why}")
    return base / f"worker-{_code_hash()}.sock"


def enabled() -> bool:
    distributed = any(k in os.environ for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    if not (os.environ.get("STILTS_WORKER", "1") != "0" and not distributed and hasattr(socket, "send_fds")
            and hasattr(os, "fork")):
        return False
    why = _unsafe(_socket_dir())
    if why and not _WARNED:
        _WARNED.append(why)
        print(f"stilts: not using the cell server: {why}; cells run in-process (set XDG_RUNTIME_DIR to a private "
              "folder, or STILTS_WORKER=0 to silence this)", file=sys.stderr)
    return why is None


# ------------------------------------------------------------------------------------------ client


def _connect(path: Path) -> socket.socket | None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
        return s
    except OSError:
        s.close()
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _start_server(path: Path) -> None:
    """Start the server unless another client already is: two servers importing at once on a small
    machine would each take twice as long. The `.starting` file holds the starting server's pid."""
    marker = path.with_suffix(".starting")
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        try:
            if _alive(int(marker.read_text() or 0)):
                return
        except (OSError, ValueError):
            pass
        marker.unlink(missing_ok=True)  # its server died while starting
        return _start_server(path)
    log = path.with_suffix(".log")
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stilts.worker", str(path)], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out, start_new_session=True, close_fds=True)
    os.write(fd, str(proc.pid).encode())
    os.close(fd)


def prestart() -> None:
    """Start the server in the background now (before `dvc repro`), so its imports overlap DVC's start."""
    if enabled():
        path = socket_path()
        conn = _connect(path)
        if conn is None:
            _start_server(path)
        else:
            conn.close()


def request(argv: list[str], *, cwd: str | None = None, env: dict | None = None,
            fds: tuple[int, int, int] = (0, 1, 2)) -> socket.socket | None:
    """Hand `stilts argv` to the warm server, with `fds` as its stdin/stdout/stderr (default: ours).
    Returns the connection, on which the exit code arrives (`exit_code`); closing it kills the command,
    and so does this process's death. None when no server could be reached."""
    path = socket_path()
    conn = _connect(path)
    if conn is None:
        _start_server(path)
        deadline = time.monotonic() + 60
        while conn is None and time.monotonic() < deadline:
            time.sleep(0.1)
            conn = _connect(path)
        if conn is None:
            return None
    message = json.dumps({"argv": argv, "cwd": cwd or os.getcwd(),
                          "env": dict(os.environ) if env is None else env}).encode()
    try:
        socket.send_fds(conn, [struct.pack("!I", len(message))], list(fds))
        conn.sendall(message)
    except OSError:
        conn.close()
        return None
    return conn


def exit_code(conn: socket.socket) -> int | None:
    """Wait for the command's exit code (None: the server went away). Honours the socket's timeout."""
    reply = b""
    while len(reply) < 4:
        chunk = conn.recv(4 - len(reply))
        if not chunk:
            return None
        reply += chunk
    return struct.unpack("!i", reply)[0]


def run_via_worker(argv: list[str]) -> int | None:
    """Run `stilts argv` in the warm server; None when no server could be reached (run in-process)."""
    conn = request(argv)
    if conn is None:
        return None
    with conn:
        try:
            return exit_code(conn)
        except KeyboardInterrupt:
            return 130


# ------------------------------------------------------------------------------------------ server


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("client went away")
        data += chunk
    return data


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
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
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


def _peer_is_us(conn: socket.socket) -> bool:
    """Serve only this user's processes (the folder's mode already keeps others out; this is a second lock)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return True
    _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid == os.getuid()


def _serve_one(conn: socket.socket) -> None:
    if not _peer_is_us(conn):
        return
    msg, fds, _, _ = socket.recv_fds(conn, 4, 3)
    if not msg and not fds:
        return  # connected and closed without a request: a liveness check (`prestart`) or a client killed early
    (length,) = struct.unpack("!I", _recv_exact(conn, 4 - len(msg)) if len(msg) < 4 else msg)
    request = json.loads(_recv_exact(conn, length))
    pid = os.fork()
    if pid == 0:
        conn.close()
        _child(fds, request)
    for fd in fds:
        os.close(fd)
    conn.setblocking(False)
    while True:  # wait for the child; kill it if the client disappears
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        try:
            if conn.recv(1) == b"":
                os.kill(pid, signal.SIGKILL)
        except BlockingIOError:
            pass
        except OSError:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    code = os.waitstatus_to_exitcode(status)
    conn.setblocking(True)
    try:
        conn.sendall(struct.pack("!i", code if code >= 0 else 128 - code))
    except OSError:
        pass


def _warm_caches() -> None:
    """Fill the per-process caches that every model load would otherwise build again in each child."""
    try:  # transformers ≥5 compiles ~1,000 regexes of weight-renaming rules at the first from_pretrained
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping

        get_checkpoint_conversion_mapping("bert")
    except Exception:  # noqa: BLE001  (another transformers version: nothing to warm)
        pass


def serve(path: Path) -> None:
    import importlib
    import threading

    why = _unsafe(path.parent)
    if why:
        raise SystemExit(f"stilts worker: not serving: {why}")

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
    idle = float(os.environ.get("STILTS_WORKER_IDLE", "300"))
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp))
    server.listen(16)
    os.replace(tmp, path)  # the socket appears only when the imports are done
    path.with_suffix(".starting").unlink(missing_ok=True)
    inode = os.stat(path).st_ino
    server.settimeout(1.0)
    active, last = [0], time.monotonic()
    lock = threading.Lock()

    def handle(conn):
        try:
            with conn:
                _serve_one(conn)
        finally:
            with lock:
                active[0] -= 1

    try:
        while True:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                with lock:
                    busy = active[0] > 0
                if busy:
                    last = time.monotonic()
                elif time.monotonic() - last > idle:
                    break
                continue
            with lock:
                active[0] += 1
            last = time.monotonic()
            threading.Thread(target=handle, args=(conn,), daemon=True).start()
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
    serve(Path(sys.argv[1]))
