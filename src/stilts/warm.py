"""The client of the warm cell server (`stilts.worker`): how a `stilts` command runs in a fork of it.

A cell command hands the server its argv, working directory, environment and stdin/stdout/stderr over a
unix socket, waits for the exit code, and exits with it; a stop signal to the client is passed on to the
fork (which saves and stops, `stilts.stop`), and when the client dies, the server kills the fork.
The CLI alone decides (`cli.main`): the warm server when it is enabled and reachable, else in-process.
`STILTS_WORKER=0` turns it off. The socket's name includes a hash of the package source and of the
environment read at import time, so a code change (or another thread count) gets a server of its own.
"""

from __future__ import annotations

import contextlib
import fcntl
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

# read once at start or import time by glibc/torch/transformers/huggingface_hub/oneDNN (ATEN_CPU_CAPABILITY,
# ONEDNN_MAX_CPU_ISA: the instruction sets torch may use): a server serves one setting
IMPORT_TIME_ENV = ("HF_", "TRANSFORMERS_", "CUDA_", "TORCH", "OMP_", "MKL_", "PYTORCH_", "TOKENIZERS_", "MALLOC_",
                   "ATEN_", "ONEDNN_", "DNNL_")
_WARNED: list = []
START_S = 600.0  # a server imports in seconds; minutes on an overloaded machine, where waiting still pays


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


def unsafe(base: Path) -> str | None:
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


def socket_path() -> Path:
    base = _socket_dir()
    why = unsafe(base)
    if why:
        raise OSError(f"stilts: unsafe cell server folder: {why}")
    return base / f"worker-{_code_hash()}.sock"


def enabled() -> bool:
    distributed = any(k in os.environ for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    if os.environ.get("STILTS_WORKER", "1") == "0" or distributed or not hasattr(os, "pidfd_open"):
        return False
    why = unsafe(_socket_dir())
    if why and not _WARNED:
        _WARNED.append(why)
        print(f"stilts: not using the cell server: {why}; cells run in-process (set XDG_RUNTIME_DIR to a private "
              "folder, or STILTS_WORKER=0 to silence this)", file=sys.stderr)
    return why is None


def _connect(path: Path) -> socket.socket | None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # one message per request and per reply
    try:
        s.connect(str(path))
        return s
    except OSError:
        s.close()
        return None


def _server(path: Path, wait: bool) -> socket.socket | None:
    """A connection to the server, starting one when none listens. The client that starts it hands the server
    its lock on `<socket>.lock`; the server lets go of it once it listens (or dies trying). Clients arriving
    meanwhile wait for that lock (`wait`, at most START_S; else they leave it to the one starting), so clients
    starting together start one server."""
    lock_path = path.with_suffix(".lock")
    with open(lock_path, "a") as lock:
        if not _flock_within(lock, START_S if wait else 0, path):
            return None  # a server is starting
        conn = _connect(path)
        if conn is None:
            with open(path.with_suffix(".log"), "ab") as log:
                subprocess.Popen([sys.executable, "-m", "stilts.worker", str(path), str(lock.fileno())],
                                 pass_fds=[lock.fileno()], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 start_new_session=True)
    if conn is not None or not wait:
        return conn
    with open(lock_path, "a") as lock:  # held by the starting server until it listens
        return _connect(path) if _flock_within(lock, START_S, path) else None


def _flock_within(lock, seconds: float, path: Path) -> bool:
    """Whether this client holds the server's start lock within `seconds` (a server that is starting holds
    it until it listens). One that does not get it after waiting says so: the command runs in-process."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
    if seconds:
        print(f"stilts: the cell server did not start listening within {seconds:g} s (its log: "
              f"{path.with_suffix('.log')}); this command runs in-process", file=sys.stderr, flush=True)
    return False


def prestart() -> None:
    """Start the server in the background now (before `dvc repro`), so its imports overlap DVC's start."""
    if enabled():
        conn = _server(socket_path(), wait=False)
        if conn is not None:
            conn.close()


@contextlib.contextmanager
def _passing_signals(conn: socket.socket):
    """SIGTERM, SIGINT and SIGUSR1 to this client go on to the command in the server (which saves and stops,
    `stilts.stop`); the client keeps waiting for its exit code. Killing the client kills the command."""
    from stilts.stop import SIGNALS

    def forward(signum, frame):
        with contextlib.suppress(OSError):
            conn.send(struct.pack("!i", signum))

    previous = {sig: signal.signal(sig, forward) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(argv: list[str]) -> int | None:
    """Run `stilts argv` in the warm server with this process's stdin/stdout/stderr, working directory and
    environment: its exit code, or None when no server could be reached (then it runs in-process)."""
    conn = _server(socket_path(), wait=True)
    if conn is None:
        return None
    message = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    with conn:
        try:
            socket.send_fds(conn, [message], [0, 1, 2])
        except OSError:
            return None
        with _passing_signals(conn):
            reply = conn.recv(4)
    if len(reply) < 4:
        print("stilts: error: the cell server exited while running the command", file=sys.stderr)
        return 137
    return struct.unpack("!i", reply)[0]
