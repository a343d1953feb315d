"""What a process pays to import what a cell imports, by where its bytecode comes from, measured in one run.

    python benchmarks/import_cost.py

Each arm starts from no bytecode at all (its own empty PYTHONPYCACHEPREFIX, so the environment's own
__pycache__ folders are neither read nor changed):
  first import     bytecode written as modules are imported (Python's default), then the same imports again
  never written    PYTHONDONTWRITEBYTECODE=1: every process compiles its imports
  compileall       `python -m compileall -q -j 0` over the environment and src/ first (what an install step
                   would run), then the imports
Last line: `compileall_vs_first_import=<compileall's seconds / the first import's extra seconds>`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import bench_env
import bounded

IMPORTS = """
import stilts.cli, stilts.cells, stilts.train, stilts.modeling, stilts.analysis, stilts.engine.runner
import transformers, mlflow, mlflow.pytorch, dask.distributed, dvc.repo, accelerate, pandas, sklearn
import scipy.stats, matplotlib.pyplot
from transformers import BertModel, BertTokenizerFast
from mlflow.tracking import MlflowClient
"""
LIMIT_S = 900.0


def _timed(cmd: list, prefix: Path, write: bool, check: bool = True) -> float:
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(prefix)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if not write:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    start = time.perf_counter()
    bounded.run(cmd, limit=LIMIT_S, env=env, check=check, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    print(bench_env.describe_machine())
    imports = [sys.executable, "-c", IMPORTS]
    scratch = bounded.scratch("stilts-imports-")
    first = _timed(imports, scratch / "first", write=True)
    again = _timed(imports, scratch / "first", write=True)
    never = _timed(imports, scratch / "never", write=False)
    packages = Path(sysconfig.get_paths()["purelib"])
    # (its status is not checked: a few test files inside wheels are written for newer Pythons)
    compile_s = _timed([sys.executable, "-m", "compileall", "-q", "-j", "0", packages, bench_env.ROOT / "src"],
                       scratch / "compiled", write=True, check=False)
    after = _timed(imports, scratch / "compiled", write=True)
    files = sum(1 for _ in packages.rglob("*.py"))
    print(f"{'bytecode':<16} {'imports s':>10} {'again s':>8} {'compile s':>10}")
    print(f"{'first import':<16} {first:10.1f} {again:8.1f} {'-':>10}")
    print(f"{'never written':<16} {never:10.1f} {never:8.1f} {'-':>10}")
    print(f"{'compileall':<16} {after:10.1f} {after:8.1f} {compile_s:10.1f}   ({files} .py files)")
    print(f"compileall_vs_first_import={compile_s / max(first - again, 1e-9):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
