"""Stopping on a signal (SIGTERM, SIGINT, SIGUSR1) so that the rerun resumes.

SLURM sends SIGTERM at the walltime or on preemption (or SIGUSR1 earlier, with `--signal=USR1@120`), a
terminal sends SIGINT, `timeout` and `kill` send SIGTERM. A `stilts` command stops at once where there is
nothing to save (every output is written atomically); a training loop stops at its next step, after
saving its resume state (`train.py`). Either way `Interrupted` ends the MLflow run as KILLED, tagged
`stilts.interrupted`, and the command exits with `EXIT_RESUME`: stopped, to be run again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

# EX_TEMPFAIL (sysexits.h): a temporary failure; the same command, run again, continues where this one stopped
EXIT_RESUME = 75
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)

_state = {"deferring": 0, "pending": None}


class Interrupted(KeyboardInterrupt):
    """Raised where a stop signal is handled; `signal` names it (SIGTERM, SIGINT, SIGUSR1)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.signal = name

    def __str__(self) -> str:
        return f"stopped by {self.signal}"


def _handle(signum, frame) -> None:
    name = signal.Signals(signum).name
    if _state["pending"] is not None:
        return  # a repeat (the process group and a forwarder both signal, or SLURM's SIGTERM after SIGUSR1)
    _state["pending"] = name
    if not _state["deferring"]:
        raise Interrupted(name)


def install() -> None:
    """Handle SIGTERM, SIGINT and SIGUSR1 in this (main-thread) process by raising `Interrupted`."""
    for sig in SIGNALS:
        signal.signal(sig, _handle)
    _state["pending"] = None


@contextlib.contextmanager
def deferred():
    """Within this block a stop signal is only noted (`pending()`), for the code to stop at a safe point."""
    _state["deferring"] += 1
    try:
        yield
    finally:
        _state["deferring"] -= 1


def pending() -> str | None:
    """The stop signal received, if any (inside `deferred()`: not yet acted on)."""
    return _state["pending"]


def raise_if_pending() -> None:
    if _state["pending"] is not None:
        raise Interrupted(_state["pending"])


def grace_seconds() -> float:
    """How long a stopped cell may take to save and end its run before it is killed (`STILTS_STOP_GRACE_S`,
    default 30 s: SLURM's default KillWait between its SIGTERM and SIGKILL)."""
    return float(os.environ.get("STILTS_STOP_GRACE_S", "30"))


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def drain(pgid: int, grace: float, poll: float = 0.1) -> None:
    """Wait up to `grace` seconds for the group's last processes (a cell still saving), then SIGKILL them."""
    deadline = time.monotonic() + grace
    while group_alive(pgid):
        if time.monotonic() > deadline:
            signal_group(pgid, signal.SIGKILL)
            return
        time.sleep(poll)
