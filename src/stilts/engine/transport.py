"""How a stage's inputs reach the worker that runs it, and how its outputs come home (docs/cluster.md).

`cluster.shared_filesystem: true`: workers see the project at the head's path; the head records what ran
with one `dvc commit`. `false`: each worker has a git clone at the head's commit; it writes the dvc.lock
entries of the stage's inputs, `dvc pull`s them, and after the cell `dvc commit`s and `dvc push`es its
outputs; the entry (and any `cache: false` output) travels back, and the head writes it, `dvc pull`s and
commits. dvc.lock entries are written here rather than taken from DVC's run-cache: restoring one stage from
the run-cache needs every stage upstream of it present, and a missing entry makes DVC run the stage.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
from pathlib import Path

import yaml

from stilts.errors import StiltsError, last_line
from stilts.io import atomic_write_bytes, atomic_write_text
from stilts.pipeline import address, layout
from stilts.stages import dvc

LOCK_SCHEMA = "2.0"
GIT_TIMEOUT_S = 120  # local queries of the project's repository: a second or two where the disk answers
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # lock files of the paper's study hold ~9,000 lines


def git(root: Path, *args: str) -> str:
    """`git ARGS` in `root` (local queries: rev-parse, ls-files, diff): its output, or a one-line error."""
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=GIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise StiltsError(f"{root}: `git {args[0]}` did not end within {GIT_TIMEOUT_S} s; stopped it (is the "
                          f"repository on a file system that does not answer?)") from None
    if out.returncode:
        raise StiltsError(f"{root}: `git {args[0]}` failed: {last_line(out.stderr)}")
    return out.stdout.strip()


def lock_path(root: Path, file: str) -> Path:
    return root / Path(file).with_name("dvc.lock")


def read_lock(root: Path, file: str) -> dict:
    path = lock_path(root, file)
    return (yaml.load(path.read_text(), Loader=_Loader) or {}).get("stages", {}) if path.is_file() else {}


def write_locks(root: Path, entries: dict[str, tuple[str, dict]]) -> None:
    """Put stages' entries (name → (its dvc.yaml, entry)) into the dvc.lock files beside them (others stay)."""
    for file in dict.fromkeys(f for f, _ in entries.values()):
        path = lock_path(root, file)
        data = (yaml.load(path.read_text(), Loader=_Loader) or {}) if path.is_file() else {}
        data.setdefault("schema", LOCK_SCHEMA)
        data.setdefault("stages", {}).update({n: entry for n, (f, entry) in entries.items() if f == file})
        atomic_write_text(path, yaml.safe_dump(data, sort_keys=False, width=120))


class SharedWorker:
    """The worker sees the project at the head's path: nothing to fetch or send."""

    def __init__(self, spec: dict):
        self.root = Path(spec["root"])
        if not (self.root / "dvc.yaml").is_file():
            raise StiltsError(f"{self.root}: no dvc.yaml on this worker; with cluster.shared_filesystem: true every "
                              f"worker must see the project at the head's path")

    def fetch(self, spec: dict, upstream: list[dict]) -> None:
        pass

    def store(self, spec: dict) -> dict:
        return {}


class CopyWorker:
    """The worker's own working copy: inputs come from the DVC remote, outputs go back to it."""

    def __init__(self, spec: dict):
        base = Path(os.environ.get("STILTS_WORKDIR") or os.getcwd())
        try:
            top = Path(git(base, "rev-parse", "--show-toplevel"))
        except StiltsError:
            raise StiltsError(f"{base}: not a git clone of the project; start `dask worker` in one "
                              f"(or set STILTS_WORKDIR) when cluster.shared_filesystem is false") from None
        self.root = top / spec["prefix"]
        commit = git(top, "rev-parse", "HEAD")
        if commit != spec["commit"]:
            raise StiltsError(f"{top}: this worker's copy is at commit {commit[:12]}, the study at "
                              f"{spec['commit'][:12]}; run `git fetch && git checkout {spec['commit'][:12]}` there")

    def _leave_git_alone(self) -> None:
        """DVC adds each output to a .gitignore next to it; in a worker's copy those files would block the
        next `git pull` of the head's commit (which has them too). `core.no_scm` in the copy's own
        `.dvc/config.local` (never committed) stops that; the copy's DVC remote and cache stay as they are."""
        local = self.root / ".dvc" / "config.local"
        if "no_scm = true" not in (local.read_text() if local.is_file() else ""):
            dvc(self.root, "config", "--local", "core.no_scm", "true")

    @contextlib.contextmanager
    def _locked(self, files: list[str]):
        """One DVC operation on this copy at a time (cells in this worker's threads or in other workers on the
        machine: each open of the file is locked apart), its dvc.lock files restored afterwards."""
        guard = self.root / ".dvc" / "tmp" / "stilts-copy.lock"
        guard.parent.mkdir(parents=True, exist_ok=True)
        with open(guard, "a") as g:
            fcntl.flock(g, fcntl.LOCK_EX)
            self._leave_git_alone()
            saved = {p: p.read_bytes() if p.is_file() else None for p in {lock_path(self.root, f) for f in files}}
            try:
                yield
            finally:
                for p, text in saved.items():
                    if text is None:
                        p.unlink(missing_ok=True)
                    else:
                        atomic_write_bytes(p, text)

    def _files(self, rels: list[str]) -> dict[str, bytes]:
        files = {}
        for rel in rels:
            path = self.root / rel
            for f in ([path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())):
                files[str(f.relative_to(self.root))] = f.read_bytes()
        return files

    def fetch(self, spec: dict, upstream: list[dict]) -> None:
        # `cache: false` outputs (reports/summary.json, plots) may be committed to git: put them back after
        self.before = self._files(spec["uncached"])
        entries = {name: tuple(v) for name, v in spec["recorded"].items()}
        entries |= {u["stage"]: (u["file"], u["entry"]) for u in upstream}
        if entries:
            with self._locked([f for f, _ in entries.values()]):
                write_locks(self.root, entries)
                dvc(self.root, "pull", "--force", "--quiet", *[address(f, n) for n, (f, _) in entries.items()])

    def store(self, spec: dict) -> dict:
        with self._locked([spec["file"]]):
            dvc(self.root, "commit", "--force", "--quiet", spec["address"])
            entry = read_lock(self.root, spec["file"])[spec["name"]]
            dvc(self.root, "push", "--quiet", spec["address"])
        after = self._files(spec["uncached"])
        for rel in set(after) - set(self.before):
            (self.root / rel).unlink()
        for rel, data in self.before.items():
            atomic_write_bytes(self.root / rel, data)
        return {"entry": entry, "files": after}


def for_worker(spec: dict):
    return SharedWorker(spec) if spec["shared"] else CopyWorker(spec)


def _commit(root, addresses: list[str]) -> None:
    if addresses:
        dvc(root, "commit", "--force", "--quiet", *addresses)


class SharedFilesystem:
    shared = True

    def __init__(self, params):
        self.params = params

    def prepare(self, plan) -> dict:
        return {"shared": True, "root": str(Path(self.params.root).resolve())}

    def record(self, results: list[dict], stages: dict) -> None:
        _commit(self.params.root, [stages[r["stage"]].address for r in results])


class DvcRemote:
    """The head's side of `cluster.shared_filesystem: false`."""

    shared = False

    def __init__(self, params):
        self.params = params

    def _check_clean(self, root: Path) -> str:
        try:
            commit = git(root, "rev-parse", "HEAD")
        except StiltsError:
            raise StiltsError(f"{root}: cluster.shared_filesystem is false, so workers check out the project's "
                              f"git commit, but this is not a git repository with a commit") from None
        needed = [Path(self.params.source).resolve(), *(root / f for f in layout(self.params))]
        for path in needed:
            rel = os.path.relpath(path, root)
            if not git(root, "ls-files", "--", rel):
                raise StiltsError(f"{rel}: not committed to git; workers check out commit {commit[:12]}, "
                                  f"so commit it first (cluster.shared_filesystem is false)")
        for rel in git(root, "diff", "--name-only", "HEAD", "--").splitlines():
            if Path(rel).name != "dvc.lock":
                raise StiltsError(f"{rel}: uncommitted changes; workers check out commit {commit[:12]}, so commit "
                                  f"them first (cluster.shared_filesystem is false)")
        return commit

    def prepare(self, plan) -> dict:
        root = Path(self.params.root).resolve()
        commit = self._check_clean(root)
        if not dvc(root, "remote", "default").strip():
            raise StiltsError("cluster.shared_filesystem is false: outputs travel through a DVC remote that the "
                              "head and every worker reach; add one with `dvc remote add -d NAME URL` and commit it")
        todo = {st.name for st in plan}
        needed = sorted({i for st in plan for i in st.inputs if i not in todo})  # up to date, made before
        locks = {file: read_lock(root, file) for file in layout(self.params)}
        recorded = {n: (f, lock[n]) for f, lock in locks.items() for n in needed if n in lock}
        for name in needed:
            if name not in recorded:
                raise StiltsError(f"stage '{name}' is up to date but not in its dvc.lock; run `dvc commit` first")
        if needed:  # the workers fetch these from the remote: make sure it has them
            dvc(root, "push", "--quiet", *[address(f, n) for n, (f, _) in recorded.items()])
        return {"shared": False, "commit": commit, "prefix": git(root, "rev-parse", "--show-prefix"),
                "recorded": recorded}

    def record(self, results: list[dict], stages: dict) -> None:
        if not results:
            return
        root = Path(self.params.root)
        write_locks(root, {r["stage"]: (r["file"], r["entry"]) for r in results})
        for r in results:
            for rel, data in r["files"].items():
                atomic_write_bytes(root / rel, data)
        addresses = [stages[r["stage"]].address for r in results]
        dvc(root, "pull", "--force", "--quiet", *addresses)  # a stale output here gives way to the recorded one
        _commit(root, addresses)


def for_head(params):
    return SharedFilesystem(params) if params.cluster.shared_filesystem else DvcRemote(params)
