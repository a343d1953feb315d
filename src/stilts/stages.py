"""What is out of date: the study's stages, the graph between them, and the one `dvc` runner.

For the study, DVC says what changed (`dvc status`); everything downstream of a changed stage is out of date
too. Commands run outside DVC (the MLproject's entry points, for any task) ask the same graph, with what the
outputs themselves record (`stale_by_records`). Each stage knows the stages producing its inputs: in this
run (`upstream`) or any (`inputs`: a worker without the project's files fetches their outputs).
"""

from __future__ import annotations

import contextlib
import graphlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from stilts.errors import StiltsError, last_line, seconds_from_env
from stilts.io import atomic_write_bytes, atomic_write_text

TRAINING = ("sweep-", "intermediate-", "transfer-")  # the stages that train: they take a GPU
DVC_TIMEOUT_ENV = "STILTS_DVC_TIMEOUT"
DVC_TIMEOUT_S = 3600.0  # a push or pull of many large checkpoints over a slow link takes minutes, not an hour


def dvc(root, *args: str, env: dict | None = None, capture: bool = True):
    """Run `dvc ARGS` in `root` (this environment's dvc, waiting for DVC's repo lock). Captured (push, pull,
    status, commit: what stilts waits on): its output, or a one-line error when it fails or has not ended
    within STILTS_DVC_TIMEOUT seconds (a remote or a lock that never answers); else (`dvc repro` of the study,
    stopped by signals) its output goes to ours and its exit code is returned."""
    exe = Path(sys.executable).with_name("dvc")
    cmd = [str(exe) if exe.is_file() else "dvc", "--wait-for-lock", *args]
    mend_rwlock(Path(root))
    keep_lock_files(Path(root))
    env = os.environ | (env or {})
    # the stages' commands (`stilts ...`) are this environment's, whether or not its bin/ is on PATH
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if not capture:
        return _call_stopping_on_signals(cmd, root, env)
    seconds = seconds_from_env(DVC_TIMEOUT_ENV, DVC_TIMEOUT_S)
    try:
        out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=seconds)
    except subprocess.TimeoutExpired:
        raise StiltsError(f"{root}: `dvc {args[0]}` did not end within {seconds:g} s (its remote or DVC's lock "
                          f"does not answer); stopped it ({DVC_TIMEOUT_ENV} sets the bound)") from None
    if out.returncode:
        raise StiltsError(f"{root}: `dvc {args[0]}` failed: {last_line(out.stderr or out.stdout)}")
    return out.stdout


def mend_rwlock(root: Path) -> None:
    """`.dvc/tmp/rwlock`, DVC's table of the commands running now, under DVC's own guard of it (`rwlock.lock`):
    - DVC rewrites it in place: one a kill left empty or damaged stops every later dvc command ("JSON structure
      is corrupted"). It is removed; DVC reads a missing one as no command running.
    - DVC reads a pid in it as a command still running while that pid exists. A `dvc` killed where nothing reaps
      orphans (a container whose first process is no init) stays a zombie, and every later `dvc repro` refuses
      to start ("... is busy, it is being blocked by"). The zombies' entries are dropped (DVC itself drops
      those of processes that are gone)."""
    import psutil
    import voluptuous
    from dvc.rwlock import SCHEMA

    path = root / ".dvc" / "tmp" / "rwlock"
    if not path.is_file():
        return

    def zombie(info) -> bool:
        try:
            return psutil.Process(int(info["pid"])).status() == psutil.STATUS_ZOMBIE
        except (psutil.Error, KeyError, TypeError, ValueError):
            return False

    with _flocked(path.with_name("rwlock.lock")) as ours:
        if not ours:
            return  # a dvc is editing it now
        try:
            lock = SCHEMA(json.loads(path.read_bytes()))
        except (ValueError, voluptuous.Invalid):
            path.unlink()
            print("stilts: .dvc/tmp/rwlock: left damaged by a dvc command that was killed while writing it; removed "
                  "(DVC reads a missing one as no stage running)", file=sys.stderr)
            return
        read = {p: [i for i in infos if not zombie(i)] for p, infos in lock["read"].items()}
        kept = {"read": {p: v for p, v in read.items() if v},
                "write": {p: i for p, i in lock["write"].items() if not zombie(i)}}
        if kept != lock:
            atomic_write_text(path, json.dumps(kept))


LOCK_COPIES = Path(".stilts") / "dvc-lock"  # the last good copy of each dvc.lock (`keep_lock_files`)


def _lock_files(root: Path) -> list[Path]:
    """The study's dvc.lock files: beside the dvc.yaml files `stilts pipeline` writes."""
    return [p for p in [root / "dvc.lock", *sorted(root.glob("pipelines/*/dvc.lock"))] if p.is_file()]


def _readable(data: bytes) -> bool:
    """Whether DVC will read a dvc.lock with this content: YAML that DVC's own lock-file schema accepts (a file
    cut short can be valid YAML, e.g. one that ends just after a stage's name)."""
    import voluptuous
    import yaml
    from dvc.schema import COMPILED_LOCKFILE_SCHEMA

    try:
        COMPILED_LOCKFILE_SCHEMA(yaml.load(data, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
    except (yaml.YAMLError, voluptuous.Invalid):
        return False
    return True


def keep_lock_files(root: Path) -> None:
    """DVC rewrites a dvc.lock in place: a `dvc` killed while writing it leaves it empty or cut short, and every
    later DVC command stops on it ("validation failed"). Before each dvc command, while no DVC holds the
    project's lock: a damaged dvc.lock is put back from the copy taken before the previous command (the stages
    that command recorded are then restored from DVC's run-cache, or run again) or, with no copy, removed;
    the good ones are copied."""
    repo_lock = root / ".dvc" / "tmp" / "lock"
    if not repo_lock.is_file():
        return
    with _flocked(repo_lock) as ours:
        if not ours:
            return  # a dvc is at work: what it writes is not ours to judge
        for lock in _lock_files(root):
            _keep_or_restore(root, lock)


@contextlib.contextmanager
def _flocked(path: Path):
    """Yields whether this lock file (which DVC holds with flock, as zc.lockfile does) was free and is ours now."""
    import fcntl

    with open(path, "a") as held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)


@contextlib.contextmanager
def one_study(root: Path):
    """Held while `stilts study` runs: a second study in the same project would run every stage again (what
    the first ran is recorded in dvc.lock only when it ends) and the two would record at once."""
    path = Path(root) / ".stilts" / "study.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with _flocked(path) as ours:
        if not ours:
            raise StiltsError(f"{root}: another `stilts study` is running in this project ({path} is held); wait "
                              "for it to end, or stop it (it saves and resumes)")
        yield


def _keep_or_restore(root: Path, lock: Path) -> None:
    rel = lock.relative_to(root)
    copy = root / LOCK_COPIES / rel
    data = lock.read_bytes()
    kept = copy.read_bytes() if copy.is_file() else None
    if data == kept:  # checked when it was copied: no YAML to parse again (lock files of a paper-size study are long)
        return
    if _readable(data):
        atomic_write_bytes(copy, data)
        return
    how = "empty" if not data.strip() else "cut short or damaged"
    if kept is not None:
        atomic_write_bytes(lock, kept)
        what = "put back from the copy taken before that command"
    else:
        lock.unlink()
        what = "removed"
    print(f"stilts: {rel}: left {how} by a dvc command that was killed while writing it; {what} (the stages it "
          f"had recorded are restored from DVC's run-cache or run again)", file=sys.stderr)


def _call_stopping_on_signals(cmd: list[str], root, env: dict) -> int:
    """Run `cmd` in a process group of its own; SIGTERM, SIGINT or SIGUSR1 to us reaches that whole group as
    SIGINT (DVC waits for the running stage, whose cell saves its state and stops), and we return only when
    nothing of the group runs any more: no stage keeps running without its head. Stopped so: EXIT_RESUME."""
    import signal

    from stilts import stop

    proc = subprocess.Popen(cmd, cwd=root, env=env, start_new_session=True)
    received = []

    def forward(signum, frame):
        received.append(signal.Signals(signum).name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)

    previous = {sig: signal.signal(sig, forward) for sig in stop.SIGNALS}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    stop.drain(proc.pid, stop.grace_seconds(), poll=0.2)  # a stage still saving after DVC itself ended
    if received and code:
        print(f"stilts: stopped by {received[0]}; what it had done is saved: run the same command again to continue",
              file=sys.stderr)
        return stop.EXIT_RESUME
    return code


@dataclass
class Stage:
    name: str
    file: str  # the dvc.yaml holding it, relative to the project root
    cmd: str
    outs: list[str]
    uncached: list[str] = field(default_factory=list)  # outputs with `cache: false` (not in the DVC cache)
    inputs: list[str] = field(default_factory=list)  # every stage producing its deps
    upstream: list[str] = field(default_factory=list)  # the stages of this run producing its deps
    downstream: int = 0  # stages of this run that wait for it, directly or not

    @property
    def address(self) -> str:
        from stilts.pipeline import address

        return address(self.file, self.name)

    @property
    def trains(self) -> bool:
        return self.name.startswith(TRAINING)


def _paths(entries: list) -> list[tuple[str, bool]]:
    """(path, cached) for each entry of a stage's outs, metrics or plots."""
    out = []
    for e in entries:
        path, opts = next(iter(e.items())) if isinstance(e, dict) else (e, {})
        out.append((path, (opts or {}).get("cache", True)))
    return out


def graph(layout: dict[str, dict]) -> dict[str, Stage]:
    """The stages of a pipeline layout (`pipeline.layout`: dvc.yaml → stages), each with its inputs."""
    stages, produces = {}, {}
    for file, group in layout.items():
        for name, st in group.items():
            outs = _paths(st.get("outs", []) + st.get("metrics", []) + st.get("plots", []))
            stages[name] = Stage(name, file, st["cmd"], [p for p, _ in outs], [p for p, cached in outs if not cached])
            produces |= {p: name for p, _ in outs}
    for name, st in stages.items():
        deps = layout[st.file][name].get("deps", [])
        st.inputs = list(dict.fromkeys(produces[d] for d in deps if d in produces))
    return stages


def plan(stages: dict[str, Stage], changed: set[str], targets: list[str] | None = None) -> list[Stage]:
    """The stages to run, each after those it depends on: the changed ones and everything downstream of
    them; with `targets`, only what those stages need (themselves included)."""
    try:
        order = list(graphlib.TopologicalSorter({n: st.inputs for n, st in stages.items()}).static_order())
    except graphlib.CycleError as e:
        raise StiltsError(f"the pipeline has a cycle through stage '{e.args[1][0]}'") from None
    todo = set(changed) & set(stages)
    for name in order:
        if any(i in todo for i in stages[name].inputs):
            todo.add(name)
    if targets is not None:
        needed, stack = set(), list(targets)
        while stack:
            if (name := stack.pop()) not in needed:
                needed.add(name)
                stack += stages[name].inputs
        todo &= needed
    below = {name: set() for name in todo}
    for name in reversed(order):
        if name in todo:
            stages[name].upstream = [i for i in stages[name].inputs if i in todo]
            for up in stages[name].upstream:
                below[up] |= {name} | below[name]
    for name in todo:
        stages[name].downstream = len(below[name])
    return [stages[name] for name in order if name in todo]


def changed(params) -> set[str]:
    """The study's stages that `dvc status` reports changed (names without their dvc.yaml path)."""
    return {name.split(":")[-1] for name in json.loads(dvc(params.root, "status", "--json") or "{}")}


def stale_by_records(params, stages: dict[str, Stage]) -> set[str]:
    """For commands run outside DVC: the stages whose outputs are missing, or record other inputs than there
    are now (prepared data: its source files or generator settings; a sweep: its settings, grid and data)."""
    from stilts import data, sweep

    stale = set()
    for name, st in stages.items():
        kind, _, task = name.partition("-")
        if kind == "prepare":
            current = data.is_current(params, task)
        elif kind == "sweep":
            current = sweep.is_current(params, task)
        else:
            current = all(params.path(p).exists() for p in st.outs)
        if not current:
            stale.add(name)
    return stale
