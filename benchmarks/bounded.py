"""Bounds on what a benchmark starts: a command runs under a time limit (past it, it is killed and the benchmark
stops with one line naming it), a scratch folder is removed when the benchmark ends."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

_SCRATCH: list[tempfile.TemporaryDirectory] = []  # kept alive until the interpreter exits, then removed


def run(cmd, *, limit: float, **options) -> subprocess.CompletedProcess:
    """subprocess.run(cmd, **options), stopped after `limit` seconds: the benchmark then exits naming `cmd`."""
    cmd = [str(c) for c in cmd]
    try:
        return subprocess.run(cmd, timeout=limit, **options)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"{' '.join(cmd)}: still running after {limit:.0f} s; stopped") from None


def scratch(prefix: str) -> Path:
    """A new temporary folder, removed when this process exits (not by the worker processes it forks)."""
    folder = tempfile.TemporaryDirectory(prefix=prefix)
    _SCRATCH.append(folder)
    return Path(folder.name)
