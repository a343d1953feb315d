"""`python -m stilts.engine.guard CMD...`: run CMD in a process group of its own and stop it with its worker.

The Dask worker holds the other end of our stdin, so a cell stops with the worker that started it (or when
the worker lets go of it): no orphan trains on while its task runs again elsewhere. Stopping is SIGTERM to
the command's group (its cell saves its state and ends its run, `stilts.stop`), then SIGKILL after
`STILTS_STOP_GRACE_S`. A SIGTERM, SIGINT or SIGUSR1 to the guard itself (SLURM signals every process of a
job) goes on to the group the same way. The guard returns once nothing of the group runs any more.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys

from stilts import stop


def main(argv: list[str]) -> int:
    # CMD (`/bin/sh -c ...`) starts with SIGUSR1 ignored: SLURM signals every process of a job step, and the
    # shell must wait for the `stilts` command in it, which sets its own handler, instead of dying of it
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGUSR1, signal.SIG_IGN))
    for sig in stop.SIGNALS:
        signal.signal(sig, lambda signum, frame: stop.signal_group(proc.pid, signum))
    pidfd = os.pidfd_open(proc.pid)
    if pidfd not in select.select([0, pidfd], [], [])[0]:  # stdin closed (or written to) before CMD ended
        stop.signal_group(proc.pid, signal.SIGTERM)
        if not select.select([pidfd], [], [], stop.grace_seconds())[0]:
            stop.signal_group(proc.pid, signal.SIGKILL)
    code = proc.wait()
    stop.drain(proc.pid, stop.grace_seconds())
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
