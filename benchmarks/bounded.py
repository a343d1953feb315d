"""Bounds on what a benchmark starts: a command runs under a time limit (past it, it is killed and the benchmark
stops with one line naming it), a scratch folder is removed when the benchmark ends."""

from __future__ import annotations

import multiprocessing.util
import shutil
import subprocess
import tempfile
from pathlib import Path


def run(cmd, *, limit: float, **options) -> subprocess.CompletedProcess:
    """subprocess.run(cmd, **options), stopped after `limit` seconds: the benchmark then exits naming `cmd`."""
    cmd = [str(c) for c in cmd]
    try:
        return subprocess.run(cmd, timeout=limit, **options)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"{' '.join(cmd)}: still running after {limit:.0f} s; stopped") from None


def scratch(prefix: str) -> Path:
    """A new temporary folder, removed when the process that made it exits. multiprocessing's finalizers run at
    the end of the main process (atexit) and of a worker process it started, which ends without atexit; a
    forked worker starts with none of them, so it never removes its parent's folders."""
    folder = tempfile.mkdtemp(prefix=prefix)
    multiprocessing.util.Finalize(None, shutil.rmtree, args=(folder,), kwargs={"ignore_errors": True}, exitpriority=0)
    return Path(folder)
