"""`python -m stilts.engine.guard CMD...`: run CMD, and kill it (its whole process group) when our stdin
closes. The Dask worker holds the other end of that pipe, so a cell run without the warm server dies
with the worker that started it (or when the worker lets go of it): no orphan trains on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading


def main(argv: list[str]) -> int:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)

    def watch():
        while os.read(0, 1024):
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    threading.Thread(target=watch, daemon=True).start()
    code = proc.wait()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
