"""`python -m stilts.engine.guard CMD...`: run CMD, and kill it (its whole process group) when our stdin
closes. The Dask worker holds the other end of that pipe, so a cell dies with the worker that started it
(or when the worker lets go of it): no orphan trains on while its task runs again elsewhere.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys


def main(argv: list[str]) -> int:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
    pidfd = os.pidfd_open(proc.pid)
    if pidfd not in select.select([0, pidfd], [], [])[0]:  # stdin closed (or written to) before CMD ended
        os.killpg(proc.pid, signal.SIGKILL)
    code = proc.wait()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
