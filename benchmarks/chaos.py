"""Kill the study anywhere: SIGKILL its whole process tree at N seeded moments, resume as a user would, and
check that it ends exactly like an uninterrupted run.

    python benchmarks/chaos.py --kills 20 --seed 0                  # the default study (this repository)
    python benchmarks/chaos.py --params my.yaml --kills 3           # another study

Two scratch clones of the project: one runs `stilts study` uninterrupted (the reference), the other is
killed N times. Each kill aims at a phase — prepare, sweep, training, checkpoint write, MLflow logging,
DVC commit, analysis — drawn by the seed (every phase once before any twice, in study order), and at a
seeded offset after the phase is first seen, within the first half of the reference's shortest stage of
that phase (for the checkpoint write and the MLflow logging, its quickest such write, from the files'
modification times: a small model's checkpoint is written in milliseconds).
Phases are read from the processes running (the `stilts` command of the stage) and from files (a
checkpoint's temporary folder, a logged model's temporary folder, looked for every millisecond once the
stage is running); "DVC commit" is DVC at work between two stage commands. The kill is SIGKILL to every
process of the study: `dvc repro`, its stage, and the warm cell server with its forks (as when a node
dies). A kill aimed at a phase seen in files landed there when it left that temporary folder behind; one
that landed elsewhere (the write ended first: a look at the files can come milliseconds late on a busy
machine) is aimed there again, up to `--aim-again` more kills, while the study still has that phase ahead. Then
`stilts study` again, up to the next kill, and once more to the end. At the end: every results/**/*.json
and report table equal to the reference's (timings and run ids aside), exactly one FINISHED run per cell
that no other run supersedes, no RUNNING run, `dvc status` clean, no temporary file or folder left in the
project. Prints where each kill landed and the time it cost (the attempt's time minus the reference time of
the stages it completed), and which kills landed elsewhere than aimed; a phase the plan aimed at that no
kill hit, and a final `stilts study` that fails, are problems. Last line `chaos: ok`, or `chaos: FAILED` and
the problems (exit 1).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import bench_env
import bounded
import chaos_checks
import psutil

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PHASES = ("prepare", "sweep", "training", "checkpoint write", "MLflow logging", "DVC commit", "analysis")
OFFSET_S = {"prepare": 2.0, "sweep": 8.0, "training": 8.0, "checkpoint write": 0.1, "MLflow logging": 0.3,
            "DVC commit": 0.3, "analysis": 3.0}
# the stages a phase runs in: its offsets stay inside the first half of the reference's shortest such stage
# (the analysis takes seconds; a tiny study's stages too)
STAGES_OF = {"prepare": ("prepare-",), "sweep": ("sweep-",), "training": ("intermediate-", "transfer-"),
             "analysis": ("analyze",)}
# the phases seen in files: the temporary folder being written, which a kill leaves behind
TEMPORARIES = {"checkpoint write": lambda root, tmp: (root / "models" / "intermediate").glob("*/.r*.tmp"),
               "MLflow logging": lambda root, tmp: tmp.glob("stilts-model-*")}
MARK = "STILTS_CHAOS_RUN"
STUDY_LIMIT_S = 3600  # one `stilts study` attempt: the default study takes minutes; past this it is stopped


def mark(name: str) -> str:
    """The value of MARK in the processes of one study of this script (another run of it may run beside)."""
    return f"{name}-{os.getpid()}"


def clone(source: Path, dest: Path, params: Path | None, env: dict) -> Path:
    bounded.run(["git", "clone", "-q", source, dest], limit=300, check=True)
    if params is not None:
        shutil.copy2(params, dest / "params.yaml")
    bounded.run([BIN / "stilts", "pipeline"], limit=600, cwd=dest, env=env, check=True, capture_output=True)
    return dest


def environment(base: Path, name: str) -> dict:
    tmp = base / f"tmp-{name}"
    tmp.mkdir(mode=0o700)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "XDG_RUNTIME_DIR": str(tmp),
           "TMPDIR": str(tmp), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "DVC_NO_ANALYTICS": "1",
           "STILTS_WORKER_IDLE": "60", MARK: mark(name)}
    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "STILTS_FAULT", "STILTS_WORKER"):
        env.pop(k, None)
    return env


class Attempt:
    """One `stilts study` in the project, its stages' start and end times read from DVC's output."""

    def __init__(self, root: Path, env: dict):
        self.root = root
        self.start = time.monotonic()
        self.proc = subprocess.Popen([str(BIN / "stilts"), "study"], cwd=root, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.stages: list[tuple[str, float]] = []  # (stage, when it started)
        self.output: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.output.append(line)
            m = re.search(r"Running stage '([^']+)'", line)
            if m:
                self.stages.append((m.group(1).split(":")[-1], time.monotonic()))

    def finish(self) -> float:
        try:
            self.proc.wait(STUDY_LIMIT_S - (time.monotonic() - self.start))
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise SystemExit(f"stilts study in {self.root}: still running after {STUDY_LIMIT_S} s; stopped") from None
        self.reader.join(10)
        return time.monotonic() - self.start

    def completed(self) -> list[str]:
        """The stages this attempt finished: all it started, but the last when it did not end well."""
        return [s for s, _ in self.stages][:None if self.proc.returncode == 0 else -1]


def become_subreaper() -> None:
    """Orphans of a killed study become our children (PR_SET_CHILD_SUBREAPER), so that `reap` ends them as
    init would: a zombie keeps its pid, and DVC reads a pid in its lock file as a process still running."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)


def reap() -> None:
    for child in psutil.Process().children():
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)
        except (psutil.Error, ChildProcessError):
            pass


def study_processes(name: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.pid != os.getpid() and p.environ().get(MARK) == mark(name):
                out.append(p)
        except psutil.Error:
            pass
    return out


def _being_written(paths, since: float) -> bool:
    """Whether one of these temporary folders is being written now: made or changed since `since` (one left
    by an earlier kill is older, and is cleared by the stage when it runs again)."""
    for path in paths:
        try:
            if path.stat().st_mtime >= since:
                return True
        except OSError:
            pass
    return False


def look(root: Path, name: str, tmp: Path, since: float, after_a_stage: bool) -> tuple[str | None, str, list, list]:
    """(the phase the study is in, the stage command running, the study's processes, the stage command's) from
    its processes and files; DVC between two stage commands (`after_a_stage`: a stage command was seen in this
    attempt) records the first one's outputs."""
    procs, cmds = [], []
    for p in psutil.process_iter(["cmdline", "environ"]):
        if p.pid != os.getpid() and (p.info["environ"] or {}).get(MARK) == mark(name):
            procs.append(p)
            cmds.append(" ".join(p.info["cmdline"] or []))
    running = [(p, c) for p, c in zip(procs, cmds)
               if re.search(r"bin/stilts (prepare|sweep|intermediate|transfer|analyze)", c)]
    stage = running[0][1].split("stilts ", 1)[1] if running else ""
    stage_procs = [p for p, _ in running]
    if stage.startswith("intermediate"):
        for phase in TEMPORARIES:
            if _being_written(TEMPORARIES[phase](root, tmp), since):
                return phase, stage, procs, stage_procs
    for word, phase in (("prepare", "prepare"), ("sweep", "sweep"), ("intermediate", "training"),
                        ("transfer", "training"), ("analyze", "analysis")):
        if stage.startswith(word):
            return phase, stage, procs, stage_procs
    if after_a_stage and any("dvc" in c and " repro" in c for c in cmds):
        return "DVC commit", "(between stages)", procs, []
    return None, "", procs, []


def _alive(procs: list) -> bool:
    try:
        return any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in procs)
    except psutil.Error:
        return False


def watch(root: Path, tmp: Path, since: float, phase: str, stage_procs: list, name: str) -> list | None:
    """Looks for `phase`'s temporary folder every millisecond while the stage command runs (a small model's
    checkpoint is written in tens of milliseconds, about what one look at the processes takes), the study's
    processes looked up meanwhile in a thread: those, once the folder is there; None if the stage ends first."""
    found, done = [study_processes(name)], threading.Event()

    def refresh():
        while not done.wait(0.5):
            found[0] = study_processes(name)

    threading.Thread(target=refresh, daemon=True).start()
    try:
        while _alive(stage_procs):
            if _being_written(TEMPORARIES[phase](root, tmp), since):  # the stage's own first: found[0] may be old
                return stage_procs + [p for p in found[0] if p not in stage_procs]
            time.sleep(0.001)
        return None
    finally:
        done.set()


def possible(root: Path, env: dict) -> set[str]:
    """The phases the rest of the study still goes through (from `dvc status`)."""
    out = bounded.run([BIN / "dvc", "status", "--json"], limit=300, cwd=root, env=env, capture_output=True, text=True)
    if out.returncode:  # e.g. a dvc.lock a kill left empty, which `stilts study` mends first: any phase may come
        return set(PHASES)
    names = " ".join(k.split(":")[-1] for k in json.loads(out.stdout or "{}"))
    found = {"DVC commit"} if names else set()
    for word, phases in (("prepare-", ["prepare"]), ("sweep-", ["sweep"]), ("analyze", ["analysis"]),
                         ("intermediate-", ["training", "checkpoint write", "MLflow logging"]),
                         ("transfer-", ["training"])):
        if word in names:
            found |= set(phases)
    return found


def writing_s(ref: Path) -> dict[str, float]:
    """How long the reference took to write each phase's quickest output, from its first file's modification
    time to its last: a checkpoint, a logged model (MLflow copies the files it logs with their times)."""
    folders = {"checkpoint write": (ref / "models" / "intermediate").glob("*/r*"),
               "MLflow logging": (m.parent for m in ref.rglob("MLmodel") if ".dvc" not in m.parts)}
    out = {}
    for phase, found in folders.items():
        spans = []
        for folder in found:
            times = [f.stat().st_mtime for f in folder.rglob("*") if f.is_file()]
            spans += [max(times) - min(times)] if times else []
        out[phase] = min(spans, default=float("inf"))
    return out


def plan(kills: int, seed: int, stage_s: dict, written_s: dict | None = None) -> list[tuple[str, float]]:
    """Seeded (phase, offset) pairs: every phase once before any twice, in the order a study meets them.
    `stage_s`: the reference's seconds per stage, `written_s` its seconds to write the outputs of the phases seen
    in files (`writing_s`): each phase's offsets stay within the first half of the shortest."""
    rng = random.Random(seed)
    phases = [PHASES[i % len(PHASES)] for i in range(kills)]
    shortest = {p: min((s for n, s in stage_s.items() if n.startswith(STAGES_OF.get(p, ("-",)))),
                       default=float("inf")) for p in PHASES} | (written_s or {})
    limit = {p: min(OFFSET_S[p], 0.5 * shortest[p]) for p in PHASES}
    return sorted(((p, rng.uniform(0, limit[p])) for p in phases), key=lambda k: PHASES.index(k[0]))


def kill(procs: list, name: str) -> None:
    """SIGKILL to the study's processes: those of the last look at once, then any started since (looking them
    up takes tens of milliseconds, longer than a small checkpoint takes to write)."""
    def sigkill(group: list) -> None:
        for p in group:
            try:
                p.kill()
            except psutil.Error:
                pass

    sigkill(procs)
    sigkill([p for p in study_processes(name) if p not in procs])


def kill_at(root: Path, env: dict, target: str, offset: float, name: str) -> dict:
    since, tmp = time.time(), Path(env["TMPDIR"])
    attempt, seen, ran = Attempt(root, env), None, False
    while attempt.proc.poll() is None:
        phase, stage, procs, stage_procs = look(root, name, tmp, since, ran)
        ran = ran or phase not in (None, "DVC commit")
        if seen is None and target in TEMPORARIES and stage.startswith("intermediate") and phase != target:
            procs = watch(root, tmp, since, target, stage_procs, name)
            if procs is None:  # the stage ended without it (a cell already done)
                continue
            phase = target
        if phase == target and seen is None:
            seen = time.monotonic()
        if seen is not None and time.monotonic() - seen >= offset - 0.02:
            time.sleep(max(0.0, seen + offset - time.monotonic()))
            kill(procs, name)
            elapsed = attempt.finish()
            psutil.wait_procs(study_processes(name), timeout=5)
            reap()
            # a phase seen in files landed when its temporary folder is left: a killed writer removes nothing
            left = next((p for p in TEMPORARIES if _being_written(TEMPORARIES[p](root, tmp), since)), None)
            landed = left or (phase if phase not in TEMPORARIES else "training")
            return {"aimed": target, "landed": landed or "(between)", "stage": stage, "at_s": elapsed,
                    "completed": attempt.completed()}
        time.sleep(0.02)
    elapsed = attempt.finish()
    code = attempt.proc.returncode
    why = "" if code == 0 else ": " + next((ln.strip() for ln in reversed(attempt.output) if ln.strip()), "")[:200]
    return {"aimed": target, "landed": f"(not reached: the study ended, exit {code}{why})", "stage": "",
            "at_s": elapsed, "completed": attempt.completed()}


def run_reference(ref: Path, env: dict) -> tuple[float, dict, float]:
    """The uninterrupted study: its time, its seconds per stage, its seconds to write a checkpoint, a logged model."""
    reference = Attempt(ref, env)
    ref_total = reference.finish()
    if reference.proc.returncode:
        sys.exit("the reference study failed:\n" + "".join(reference.output[-30:]))
    starts = reference.stages + [("(end)", reference.start + ref_total)]
    stage_s = {s: round(starts[i + 1][1] - t, 2) for i, (s, t) in enumerate(starts[:-1])}
    written_s = writing_s(ref)
    print(f"# reference: {len(stage_s)} stages in {ref_total:.1f} s (analysis {stage_s.get('analyze', 0):.1f} s; "
          + "; ".join(f"quickest {p} {s:.3f} s" for p, s in written_s.items()) + ")", flush=True)
    return ref_total, stage_s, written_s


def landing(rows: list[dict], planned: list[str]) -> list[str]:
    """Says which kills landed elsewhere than aimed; a phase of the plan that no kill hit is a problem."""
    for i, row in enumerate(rows):
        if row["landed"] != row["aimed"]:
            print(f"# kill {i + 1}, aimed at {row['aimed']}, landed in {row['landed']}")
    hit = {row["landed"] for row in rows}
    print(f"# {sum(row['landed'] == row['aimed'] for row in rows)} of {len(rows)} kills landed where aimed; "
          f"phases hit: {', '.join(p for p in PHASES if p in hit) or 'none'}")
    return [f"no kill landed in {p} (the plan aimed at it)" for p in PHASES if p in planned and p not in hit]


def kill_once(root: Path, env: dict, target: str, offset: float, stage_s: dict, number: int) -> dict:
    """One kill aimed at `target` (or, when the rest of the study no longer goes through it, at its next phase)."""
    left = possible(root, env)
    if target not in left:
        target = next((p for p in PHASES if p in left), target)
    row = kill_at(root, env, target, offset, "chaos")
    row["cost_s"] = row["at_s"] - sum(stage_s.get(s, 0) for s in row["completed"])
    print(f"kill {number:>2}: aimed {row['aimed']:<16} landed {row['landed']:<17} in {row['stage'] or '-':<40} "
          f"after {row['at_s']:6.1f} s, cost {row['cost_s']:6.1f} s", flush=True)
    return row


def run_kills(root: Path, env: dict, kills: list, stage_s: dict, aim_again: int) -> list[dict]:
    """The planned kills, each attempt resumed up to the next; a kill aimed at a phase seen in files that
    landed elsewhere is aimed there again, up to `aim_again` more times, while the study has that phase ahead."""
    rows = []
    for target, offset in kills:
        for _ in range(1 + (aim_again if target in TEMPORARIES else 0)):
            rows.append(row := kill_once(root, env, target, offset, stage_s, len(rows) + 1))
            if row["landed"] == row["aimed"] or row["aimed"] != target or target not in possible(root, env):
                break
    return rows


def final_attempt(root: Path, env: dict) -> tuple[float, list[str]]:
    """`stilts study` once more, to the end: its time, and its failure as a problem."""
    last = Attempt(root, env)
    seconds = last.finish()
    if not last.proc.returncode:
        return seconds, []
    print("".join(last.output[-30:]))
    why = next((ln.strip() for ln in reversed(last.output) if ln.strip()), "")[:300]
    return seconds, [f"the final `stilts study` failed (exit {last.proc.returncode}): {why}"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", type=Path, default=ROOT, help="a git repository of a study (default: this one)")
    ap.add_argument("--params", type=Path, help="run this params.yaml instead of the project's")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--aim-again", type=int, default=4,
                    help="more kills at a phase seen in files when one lands elsewhere (default 4)")
    ap.add_argument("--keep", type=Path, help="keep the scratch clones in this folder")
    args = ap.parse_args(argv)
    print(f"# {bench_env.describe_machine()}", flush=True)
    become_subreaper()
    base = Path(tempfile.mkdtemp(prefix="stilts-chaos-", dir=args.keep))
    ref_env, env = environment(base, "reference"), environment(base, "chaos")
    ref = clone(args.project, base / "reference", args.params, ref_env)
    root = clone(args.project, base / "chaos", args.params, env)
    ref_total, stage_s, written_s = run_reference(ref, ref_env)
    kills = plan(args.kills, args.seed, stage_s, written_s)
    rows = run_kills(root, env, kills, stage_s, args.aim_again)
    total = sum(row["at_s"] for row in rows)
    seconds, problems = final_attempt(root, env)
    total += seconds
    problems = landing(rows, [p for p, _ in kills]) + problems + chaos_checks.compare(ref, root, env)
    print(f"# uninterrupted {ref_total:.1f} s; with {len(rows)} kills {total:.1f} s "
          f"(+{total - ref_total:.1f} s, {total / ref_total:.2f}x)")
    print("chaos: ok" if not problems else "chaos: FAILED\n" + "\n".join(problems))
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
