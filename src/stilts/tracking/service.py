"""The services around a command, checked before it trains or logs anything: the tracking store answers,
and `stilts server` can start (its port is free, its stores are writable).

A remote tracking server (http/https) must open a connection (milliseconds, before MLflow is imported) and
answer one cheap API call, within STILTS_TRACKING_TIMEOUT seconds (default 10) of its own time (importing
MLflow is not counted) and without MLflow's retries (MLflow's own defaults retry a server that is down for
minutes). A local store's folder must be writable.
Every failure is a StiltsError: one line naming the URI and what to do, exit status 2.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

from stilts.errors import StiltsError, seconds_from_env

TIMEOUT_ENV = "STILTS_TRACKING_TIMEOUT"
DEFAULT_TIMEOUT_S = 10.0
# the cheapest call that needs a working store (and the user's credentials), as MlflowClient makes it
PROBE_ENDPOINT = "/api/2.0/mlflow/experiments/search"
STEP_WRITE_ENV, STEP_WRITE_S = "STILTS_STEP_WRITE_S", 5.0


def timeout_s() -> float:
    return seconds_from_env(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)


def step_write_s() -> float:
    """Seconds between writes of a training run's step metrics (`Run.log_step`; default 5, 0: every step)."""
    return seconds_from_env(STEP_WRITE_ENV, STEP_WRITE_S, zero=True)


def check_store(uri: str, origin: str = "MLFLOW_TRACKING_URI", quick: bool = False) -> None:
    """Raise StiltsError unless the tracking store `uri` (set by `origin`) can be used now. `quick`: only what
    needs no MLflow import (a server's port opens; a local store's folder is writable)."""
    step_write_s()  # a bad value is reported here, before any run is created
    scheme = urlparse(uri).scheme.lower()
    if scheme in ("http", "https"):
        _check_server(uri, origin, timeout_s(), quick)
    elif scheme == "sqlite":
        path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
        if path:  # sqlite:// alone is an in-memory database
            check_writable(Path(path), f"tracking store {uri} ({origin})", database=True)
    elif scheme in ("", "file"):
        check_writable(Path(urlparse(uri).path if scheme else uri), f"tracking store {uri} ({origin})")
    elif not quick:  # a database server (postgresql://, mysql://, ...) or a hosted service (databricks)
        _check_client(uri, origin, timeout_s())


def check_writable(path: Path, what: str, database: bool = False) -> None:
    """`path` (a file when `database`, else a folder) can be created or written, with what sqlite writes
    beside a database (journal, WAL): its folder, or the nearest folder above that exists, is writable."""
    path = path.expanduser().absolute()
    if path.exists() and (path.is_dir() if database else not path.is_dir()):
        raise StiltsError(f"{what}: {path} is {'a folder' if database else 'not a folder'}")
    folder = path.parent if database else path
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise StiltsError(f"{what}: cannot create {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK) or (path.is_file() and not os.access(path, os.W_OK)):
        raise StiltsError(f"{what}: {path if path.is_file() else existing} is not writable; choose a writable "
                          "location")


def _within(seconds: float, fn):
    """fn() in a thread, abandoned after `seconds` (a blocked connect or DNS lookup holds nothing we need).
    Returns (result, error); both None when it did not finish in time."""
    out: list = [None, None]

    def run():
        try:
            out[0] = fn()
        except Exception as e:  # noqa: BLE001 — reported as one line by the caller
            out[1] = e

    worker = threading.Thread(target=run, daemon=True, name="stilts-tracking-check")
    worker.start()
    worker.join(seconds)
    return (None, None) if worker.is_alive() else tuple(out)


def _reason(e: Exception) -> str:
    """The short cause inside MLflow's and requests' long exception texts."""
    text = str(e)
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if found:
        return found.group(1).strip().lower()
    if "timed out" in text.lower() or "timeout" in type(e).__name__.lower():
        return "timed out"
    return " ".join(text.split())[:200] or type(e).__name__


def _connects(uri: str, seconds: float) -> tuple[bool, Exception | None]:
    """Whether a TCP connection to the server opens within `seconds`: a server that is down fails here at
    once, before MLflow is imported (seconds on a small machine). Through a proxy, the proxy decides: True."""
    import urllib.request

    u = urlparse(uri)
    if u.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(u.hostname or ""):
        return True, None
    port = u.port or (443 if u.scheme == "https" else 80)
    opened, error = _within(seconds, lambda: socket.create_connection((u.hostname, port), timeout=seconds).close()
                            or True)
    return bool(opened), error


def _check_server(uri: str, origin: str, seconds: float, quick: bool = False) -> None:
    start = time.monotonic()
    local = urlparse(uri).hostname in ("127.0.0.1", "localhost", "::1")
    todo = (f"start it (`stilts server --port {urlparse(uri).port}`) or set {origin} to a running server" if local
            else f"check that it runs and is reachable from here, or set {origin} to one that is")
    late = StiltsError(f"MLflow tracking server {uri} ({origin}) did not answer within {seconds:g} s; {todo} "
                       f"({TIMEOUT_ENV} sets the wait)")
    opened, error = _connects(uri, seconds)
    if error is not None:
        raise StiltsError(f"MLflow tracking server {uri} ({origin}) does not answer ({_reason(error)}); {todo}")
    if not opened:
        raise late
    if quick:
        return

    left = max(seconds - (time.monotonic() - start), 1.0)  # the server's time: connecting, then answering

    from mlflow.utils.credentials import get_default_host_creds  # seconds on a busy machine: not the server's
    from mlflow.utils.rest_utils import http_request

    def probe():
        return http_request(get_default_host_creds(uri), PROBE_ENDPOINT, "POST", max_retries=0, timeout=left,
                            raise_on_status=False, json={"max_results": 1})

    response, error = _within(left, probe)
    if error is not None:
        raise StiltsError(f"MLflow tracking server {uri} ({origin}) does not answer ({_reason(error)}); {todo}")
    if response is None:
        raise late
    if response.status_code in (401, 403):
        raise StiltsError(f"MLflow tracking server {uri} ({origin}) refused the credentials (HTTP "
                          f"{response.status_code}); set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, "
                          "or MLFLOW_TRACKING_TOKEN")
    if response.status_code != 200:
        raise StiltsError(f"{uri} ({origin}) answered HTTP {response.status_code} to {PROBE_ENDPOINT}: not an "
                          f"MLflow tracking server, or not at this address; {todo}")


def _check_client(uri: str, origin: str, seconds: float) -> None:
    def probe():
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=uri).search_experiments(max_results=1)

    result, error = _within(seconds, probe)
    if error is not None:
        raise StiltsError(f"tracking store {uri} ({origin}) cannot be used: {_reason(error)}")
    if result is None:
        raise StiltsError(f"tracking store {uri} ({origin}) did not answer within {seconds:g} s "
                          f"({TIMEOUT_ENV} sets the wait)")


def server_workers() -> int:
    """Server processes by default: one per 4 cores this process may use, 1 to 4 (MLflow's default is 4,
    which on a busy 2-core machine took over a minute to answer /health)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cores // 4))


def check_port(host: str, port: int) -> None:
    """The server can listen on host:port now (bound and released at once, as uvicorn will bind it)."""
    if not 1 <= port <= 65535:
        raise StiltsError(f"server: --port {port} is not a TCP port (1-65535)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise StiltsError(f"server: --host {host}: {e.strerror}") from None
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            hint = ("another process listens there; choose another --port" if e.errno == errno.EADDRINUSE
                    else "choose another --port or --host")
            raise StiltsError(f"server: cannot listen on {host}:{port}: {e.strerror.lower()}; {hint}") from None


# The UI's sidebar switch (GenAI / Model training) lives in the browser's localStorage and starts on GenAI in a
# fresh browser, whatever the experiment's kind; this query parameter sets it for the page it opens.
TRAINING_VIEW = "workflowType=machine_learning"


def training_runs_url(url: str, experiment_id: str | None) -> str:
    """The page of the UI at `url` that lists the experiment's training runs (every experiment without one)."""
    page = f"experiments/{experiment_id}/runs" if experiment_id else "experiments"
    return f"{url}/#/{page}?{TRAINING_VIEW}"


def open_when_up(host: str, port: int, page: str, wait_s: float = 120.0) -> None:
    """Open `page` in the user's browser once the server at host:port accepts connections (a child process:
    the caller is about to become the server)."""
    import subprocess
    import sys

    script = ("import socket, time, webbrowser, sys\n"
              "host, port, page, end = sys.argv[1], int(sys.argv[2]), sys.argv[3], time.time() + float(sys.argv[4])\n"
              "while time.time() < end:\n"
              "    try:\n"
              "        socket.create_connection((host, port), 1).close(); webbrowser.open(page); break\n"
              "    except OSError:\n"
              "        time.sleep(0.5)\n")
    subprocess.Popen([sys.executable, "-c", script, host, str(port), page, str(wait_s)],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)


def become_server(store: str, host: str, port: int, artifacts: str, workers: int) -> None:
    """Replace this process with `mlflow server` (a signal to `stilts server` then reaches the server)."""
    import shutil
    import sys

    exe = shutil.which("mlflow", path=f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [exe or "mlflow", "server", "--backend-store-uri", store, "--host", host, "--port", str(port),
           "--artifacts-destination", artifacts, "--workers", str(workers)]
    # MLflow 3's job runner (GenAI evaluation jobs, trace rollups) adds 7 processes that no stilts run uses
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"} | dict(os.environ)
    if store.startswith("sqlite:///"):
        # sqlite writes one at a time: with SQLAlchemy's default pool (5 + 10 connections, 30 s wait) a burst
        # of cells fails with "QueuePool limit reached"; without a pool each request waits on sqlite's lock
        env = {"MLFLOW_SQLALCHEMYSTORE_POOLCLASS": "NullPool"} | env
    os.execvpe(cmd[0], cmd, env)
