"""One line of progress while the study runs: cells done / running / failed / left, and an ETA."""

from __future__ import annotations

import sys
import threading
import time


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """Counts stages as they start and end; `line()` is the text, `show()` prints it (in place on a
    terminal, else one line whenever the counts change). Thread-safe: starts arrive from Dask's loop."""

    def __init__(self, total: int, out=None, clock=time.monotonic):
        self.total, self.out, self.clock = total, out or sys.stderr, clock
        self.started_at = clock()
        self.running: set[str] = set()
        self.done = self.failed = self.skipped = 0
        self.busy_seconds = 0.0  # summed run time of finished stages
        self._lock = threading.Lock()
        self._last = ""
        self._tty = hasattr(self.out, "isatty") and self.out.isatty()

    def started(self, stage: str) -> None:
        with self._lock:
            self.running.add(stage)

    def ended(self, stage: str) -> None:
        """Its worker is done with it (the result may still be on its way)."""
        with self._lock:
            self.running.discard(stage)

    def event(self, event: tuple) -> None:
        """A Dask event from a task: (time, {"started": stage} or {"ended": stage})."""
        msg = event[1]
        self.started(msg["started"]) if "started" in msg else self.ended(msg["ended"])

    def finished(self, stage: str, ok: bool, seconds: float = 0.0) -> None:
        with self._lock:
            self.running.discard(stage)
            if ok:
                self.done += 1
                self.busy_seconds += seconds
            else:
                self.failed += 1

    def not_run(self, stage: str) -> None:
        """Skipped after a failure, or never started."""
        with self._lock:
            self.running.discard(stage)
            self.skipped += 1

    @property
    def left(self) -> int:
        return self.total - self.done - self.failed - self.skipped - len(self.running)

    def eta(self) -> float | None:
        """Seconds to go: the remaining stages at the average stage time, spread over the cells seen
        running at once so far (the elapsed time's share of busy time)."""
        elapsed = self.clock() - self.started_at
        if not self.done or elapsed <= 0:
            return None
        per_stage = self.busy_seconds / self.done
        parallel = max(1.0, self.busy_seconds / elapsed)
        return per_stage * (self.left + len(self.running) / 2) / parallel

    def line(self) -> str:
        with self._lock:
            eta = self.eta()
            parts = [f"{self.done}/{self.total} done", f"{len(self.running)} running"]
            if self.failed:
                parts.append(f"{self.failed} failed")
            if self.skipped:
                parts.append(f"{self.skipped} not run")
            parts.append(f"{self.left} left")
            parts.append(f"elapsed {_duration(self.clock() - self.started_at)}")
            if eta is not None and (self.left or self.running):
                parts.append(f"ETA {_duration(eta)}")
            return "stages: " + ", ".join(parts)

    def show(self, final: bool = False) -> None:
        text = self.line()
        if self._tty:
            self.out.write("\r\033[K" + text + ("\n" if final else ""))
            self.out.flush()
        elif final or text.split(", elapsed")[0] != self._last.split(", elapsed")[0]:
            print(text, file=self.out, flush=True)
        self._last = text
