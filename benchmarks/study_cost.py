"""The default study's cost at two commits, measured in one run: what a change of stilts or params saves.

    python benchmarks/study_cost.py --before main                  # a few cells of each kind, both commits
    python benchmarks/study_cost.py --before main --avx2 --threads 1   # as on a CPU without AVX-512 (below)
    python benchmarks/study_cost.py --before main --study          # the whole study: stilts study (= make run
                                                                   # JOBS=1 without the install), wall time
    python benchmarks/study_cost.py --before main --study --jobs 2 # = make run (JOBS=2) without the install

Each arm is a scratch clone of this repository at its commit (`--after` defaults to HEAD), with its own
params.yaml, mlflow.db and outputs, run by this interpreter with the arm's own `src/` first on the path.
Cells mode runs the study's commands for two tasks, one stage kind after another, each in its own process
(no warm cell server, so every command pays its imports in both arms): settings, prepare, the sweep of
syn_tense and syn_copa, an intermediate cell on syn_tense, transfer to syn_copa from it and from none, and
the analysis. It reports each command's wall time and CPU time (user + system of the process and what it
waited for). The arms alternate, in turn first, `--repeats` times, each time from a clean project; medians.
Last line: `cpu_ratio=<before / after>` (cells) or `wall_ratio=<before / after>` (--study).

--avx2 runs the cells as on a CPU without AVX-512 (ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2,
MKL_ENABLE_INSTRUCTIONS=AVX2) and sets train.mixed_precision to "no" in both arms' params: what `auto`
picks on such a CPU, which a commit before the emulation was recognised would not pick here. --threads
sets OMP_NUM_THREADS for the commands: on a machine other work is using, CPU time at one thread compares
the arms where wall time cannot.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
CELLS = [["settings"], ["prepare", "--task", "syn_tense"], ["prepare", "--task", "syn_copa"],
         ["sweep", "--task", "syn_tense"], ["sweep", "--task", "syn_copa"],
         ["intermediate", "--task", "syn_tense", "--restart", "0"],
         ["transfer", "--source", "syn_tense", "--task", "syn_copa", "--restart", "0"],
         ["transfer", "--source", "none", "--task", "syn_copa", "--restart", "0"], ["analyze"]]
OUTPUTS = ["data/processed", "data/features", "data/settings", "results", "models", "reports", ".stilts",
           "mlflow.db", "mlflow.db-wal", "mlflow.db-shm", "mlruns"]


def _machine(env: dict) -> str:
    """The processor, as torch sees it under `env`, and what `auto` precision picks there (after arm's code)."""
    code = ("import bench_env, sys; from stilts.train import resolve_mixed_precision; "
            "print(bench_env.describe_machine() + ', train.mixed_precision auto = ' + resolve_mixed_precision('auto'))")
    out = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": str(ROOT / "benchmarks")},
                         capture_output=True, text=True, timeout=300)
    return out.stdout.strip() or out.stderr.strip().splitlines()[-1]


def _clone(ref: str, dest: Path, fp32: bool) -> Path:
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True, timeout=300)
    subprocess.run(["git", "-C", str(dest), "checkout", "-q", ref], check=True, timeout=60)
    for lock in [dest / "dvc.lock", *dest.glob("pipelines/*/dvc.lock")]:
        lock.unlink(missing_ok=True)
    if fp32:
        params = dest / "params.yaml"
        text, n = re.subn(r"(?m)^(\s+mixed_precision:)\s*\S+", r'\1 "no"', params.read_text())
        if n != 1:
            raise SystemExit(f"{params}: no train.mixed_precision line to set")
        params.write_text(text)
    return dest


def _clean(project: Path) -> None:
    for rel in OUTPUTS:
        path = project / rel
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _timed(project: Path, cmd: list[str], env: dict, timeout: float) -> tuple[float, float]:
    """(wall, CPU) seconds of one command run to completion in `project`; CPU of the process and its waited-for
    children."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed in {project} (exit {out.returncode}):\n{out.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _env(project: Path, base: dict, worker: bool) -> dict:
    env = {**base, "PYTHONPATH": str(project / "src"), "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_RUN_ID", None)
    if worker:
        env["STILTS_WORKER_IDLE"] = "30"  # the arm's warm cell server ends soon after its study
    else:
        env["STILTS_WORKER"] = "0"
    return env


def _run_arm(project: Path, env: dict, study: bool, jobs: int, timeout: float) -> dict[str, tuple[float, float]]:
    _clean(project)
    if study:
        cluster = ["--cluster", "local", "--jobs", str(jobs)] if jobs > 1 else []
        return {"stilts study": _timed(project, [sys.executable, "-m", "stilts", "study", *cluster], env, timeout)}
    stilts, out = [sys.executable, "-m", "stilts"], {}
    for cmd in CELLS:
        out["stilts " + " ".join(cmd)] = wall, cpu = _timed(project, stilts + cmd, env, timeout)
        print(f"  {project.name}: stilts {' '.join(cmd)}: {wall:.1f} s, CPU {cpu:.1f} s", flush=True)
    return out


def _report(refs: dict, runs: dict, study: bool) -> None:
    names = list(runs[next(iter(runs))][0])
    med = {arm: {n: tuple(statistics.median(r[n][i] for r in runs[arm]) for i in (0, 1)) for n in names}
           for arm in runs}
    print(f"\n{'command':<58} {'before wall/CPU s':>18} {'after wall/CPU s':>18} {'CPU ratio':>9}")
    for n in names + ["total"]:
        if n == "total":  # each arm's sums, made while `arm` is that arm
            b, a = (tuple(sum(med[arm][m][i] for m in names) for i in (0, 1)) for arm in ("before", "after"))
        else:
            b, a = med["before"][n], med["after"][n]
        print(f"{n:<58} {b[0]:8.1f} /{b[1]:8.1f} {a[0]:8.1f} /{a[1]:8.1f} {b[1] / max(a[1], 1e-9):9.2f}")
    total = {arm: [sum(r[n][0 if study else 1] for n in names) for r in runs[arm]] for arm in runs}
    each = ", ".join(f"{arm} {' '.join(f'{t:.1f}' for t in total[arm])}" for arm in total)
    ratio = statistics.median(total["before"]) / statistics.median(total["after"])
    print(f"{'wall' if study else 'CPU'} s per repeat: {each} (before {refs['before']}, after {refs['after']})")
    print(f"{'wall_ratio' if study else 'cpu_ratio'}={ratio:.3f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="the commit to compare against (a git ref)")
    ap.add_argument("--after", default="HEAD", help="the commit measured (default HEAD)")
    ap.add_argument("--study", action="store_true", help="the whole study (stilts study), wall time")
    ap.add_argument("--avx2", action="store_true", help="emulate a CPU without AVX-512, fp32 in both arms")
    ap.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the commands")
    ap.add_argument("--jobs", type=int, default=1, help="with --study: stages side by side (make run's JOBS)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=7200.0, help="seconds per command")
    args = ap.parse_args(argv)

    base = {**os.environ, **(AVX2_ENV if args.avx2 else {})}
    if args.threads:
        base["OMP_NUM_THREADS"] = base["MKL_NUM_THREADS"] = str(args.threads)
    refs = {arm: subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", ref], capture_output=True,
                                text=True, check=True, timeout=60).stdout.strip()
            for arm, ref in (("before", args.before), ("after", args.after))}
    print(_machine(base))
    print("emulated: " + (" ".join(f"{k}={v}" for k, v in AVX2_ENV.items()) if args.avx2 else "no") +
          f"; threads {args.threads or 'default'}; jobs {args.jobs}; load average "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    scratch = Path(tempfile.mkdtemp(prefix="stilts-cost-"))
    try:
        projects = {arm: _clone(refs[arm], scratch / arm, args.avx2) for arm in refs}
        runs: dict[str, list] = {"before": [], "after": []}
        for i in range(args.repeats):
            for arm in (("before", "after") if i % 2 == 0 else ("after", "before")):
                env = _env(projects[arm], base, worker=args.study)
                runs[arm].append(_run_arm(projects[arm], env, args.study, args.jobs, args.timeout))
        _report(refs, runs, args.study)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
