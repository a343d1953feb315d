"""Where a study's reports come from: the kind of CPU the analysis ran on and the stilts commit, in
reports/provenance.json, and in a line of report.md.

On one kind of CPU (model, number of CPUs, the vector units that pick torch's kernels) a study gives the same
numbers bit for bit each time; on another they differ in their last digits. The CPU kind therefore says whether
two runs' reports can be compared byte for byte. The commit changes with every commit, so it is kept in this
one small file, apart from the tables and figures (summary.json, the heatmaps), whose bytes it would change."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

FILE = "provenance.json"
# the vector units that decide which kernels torch runs on a CPU (and whether bf16 is fast)
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def cpuinfo() -> tuple[str, set[str]]:
    """The CPU's model name and flags (/proc/cpuinfo; elsewhere the platform's processor name and no flags)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return model, flags


def cpu() -> dict:
    """The kind of CPU of this machine: its model, how many CPUs this process may use, its vector units."""
    model, flags = cpuinfo()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": model, "cpus": cpus, "flags": [f for f in FLAGS if f in flags]}


def describe(kind: dict | None) -> str:
    if not kind:
        return "a CPU not recorded"
    return f"{kind['model']} ({kind['cpus']} CPUs; {' '.join(kind['flags']) or 'none of ' + '/'.join(FLAGS)})"


def facts(root: Path) -> dict:
    """The CPU kind and the commit of the checkout in `root` (None outside git)."""
    from stilts.tracking import git_commit

    return {"cpu": cpu(), "commit": git_commit(root)}


def text(found: dict) -> str:
    return json.dumps(found, indent=2, sort_keys=True) + "\n"


def line(found: dict) -> str:
    """report.md's line on where it was made."""
    commit = f"stilts commit {found['commit'][:12]}" if found.get("commit") else "stilts outside a git checkout"
    return f"Made on {describe(found['cpu'])} by {commit}.\n"
