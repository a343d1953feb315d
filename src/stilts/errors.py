"""User-facing errors: one line, naming the file, line or key at fault."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable


class StiltsError(Exception):
    """An error caused by the user's input. The CLI prints it as one line and exits 2."""


def did_you_mean(name: str, choices: Iterable[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


def unknown(kind: str, name: str, choices: Iterable[str], where: str = "") -> StiltsError:
    prefix = f"{where}: " if where else ""
    return StiltsError(f"{prefix}unknown {kind} '{name}'{did_you_mean(name, choices)}")


def last_line(text: str) -> str:
    """The last non-empty line of a command's output: its one-line error."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def seconds_from_env(name: str, default: float, zero: bool = False) -> float:
    """Seconds set by environment variable `name` (`default` when unset); anything but a number > 0 (>= 0 with
    `zero`) is bad input."""
    value = os.environ.get(name, "")
    try:
        seconds = float(value) if value.strip() else default
    except ValueError:
        seconds = -1.0
    if not (seconds >= 0 if zero else seconds > 0):
        raise StiltsError(f"{name}={value!r}: must be a number of seconds {'>=' if zero else '>'} 0")
    return seconds
