"""After `make run`: did the study reproduce its committed reports?

    .venv/bin/python .ci/reproduced.py [CHECKOUT]

The deterministic outputs are the files under reports/ that git tracks, reports/provenance.json aside (it
names the commit, which changes with every commit). Where this machine's CPU is of the kind recorded in the
committed reports/provenance.json, they must come out byte for byte as committed: otherwise this prints how
they differ and exits 1. On another kind of CPU the numbers differ in their last digits: it prints which files
differ (`git diff --stat`) and exits 0."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from stilts.analysis import provenance

RECORD = f"reports/{provenance.FILE}"


def git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=120)


def deterministic(root: Path) -> list[str]:
    tracked = git(root, "ls-files", "--", "reports").stdout.split()
    return [f for f in tracked if f != RECORD]


def committed_kind(root: Path) -> dict | None:
    shown = git(root, "show", f"HEAD:{RECORD}")
    try:
        return json.loads(shown.stdout)["cpu"] if shown.returncode == 0 else None
    except (ValueError, KeyError, TypeError):
        return None


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path.cwd()
    files, recorded, here = deterministic(root), committed_kind(root), provenance.cpu()
    if not files:
        print("reproduced: no committed reports to compare")
        return 0
    stat = git(root, "diff", "--stat", "--", *files).stdout.rstrip()
    if recorded != here:
        print(f"the committed reports come from {provenance.describe(recorded)}; this is {provenance.describe(here)}: "
              f"not compared byte for byte; " + (f"how they differ:\n{stat}" if stat else "they are the same"))
        return 0
    differ = git(root, "diff", "--exit-code", "--", *files)
    if differ.returncode:
        print(f"NOT reproduced: on {provenance.describe(here)}, the CPU kind that made the committed reports, "
              f"`make run` wrote other bytes:\n{stat}\n{differ.stdout[-5000:]}")
        return 1
    print(f"reproduced: {len(files)} committed report files byte for byte, on {provenance.describe(here)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
