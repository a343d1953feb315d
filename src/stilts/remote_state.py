"""A training cell's resume state on the DVC remote, so the cell can resume on another machine.

With `STILTS_STATE_REMOTE` set to a DVC remote's name (`default`: the project's default remote; a Dask
worker without a shared filesystem sets it for its cells), every save of a cell's training state — the
periodic ones and the one made when a signal stops the cell — is also uploaded to
`<remote>/stilts/state/<state folder>/<save>/`, and `latest.json` there is written last, naming it. A cell
that starts without a local state, or with an older one, downloads the newest save first: a cell stopped on
one worker resumes on another, and a cell whose node vanished resumes from its last periodic save. The files
are checked against the sizes and hashes recorded at the save before they are used (`resume.discard_damaged`).
A cell that finishes removes its copy. A remote that cannot be reached is said in one line; the cell goes on.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

from stilts.io import atomic_dir

ENV = "STILTS_STATE_REMOTE"
POINTER = "latest.json"


def remote_name() -> str | None:
    """The DVC remote states travel through (None: they stay on this machine)."""
    return os.environ.get(ENV) or None


_warned: set[str] = set()


def _warn(what: str, e: Exception) -> None:
    """One line, once per process for the same problem (a remote that is not there would repeat at every save)."""
    line = f"stilts: warning: {what}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    if line not in _warned:
        _warned.add(line)
        print(line, file=sys.stderr)


def _folder(state_dir: Path):
    """(the remote's filesystem, this state's folder on it); the remote is the one of the DVC project
    the state folder is in."""
    from dvc.repo import Repo

    name = remote_name()
    near = next(p for p in state_dir.parents if p.is_dir())  # .stilts/state/ may not be there yet
    with Repo(Repo.find_root(str(near))) as repo:
        remote = repo.cloud.get_remote(None if name == "default" else name, "push")
    return remote.fs, remote.fs.join(remote.path, "stilts", "state", state_dir.name)


def _pointer(fs, folder: str) -> dict | None:
    try:
        pointer = json.loads(fs.cat_file(fs.join(folder, POINTER)))
        return pointer if {"save", "step"} <= set(pointer) else None
    except (FileNotFoundError, ValueError):
        return None


def push(state_dir: Path) -> None:
    """Upload the state just saved in `state_dir`, then point `latest.json` at it and drop older saves."""
    try:
        fs, folder = _folder(state_dir)
        loop = json.loads((state_dir / "state.json").read_text())["loop"]
        save = f"{int(loop['step']):09d}-{uuid.uuid4().hex[:8]}"
        for f in sorted(p for p in state_dir.iterdir() if p.is_file()):
            fs.put_file(str(f), fs.join(folder, save, f.name))
        pointer = {"save": save, "step": int(loop["step"]), "run_id": loop.get("run_id")}
        fs.pipe_file(fs.join(folder, POINTER), json.dumps(pointer).encode())
        for path in fs.ls(folder, detail=False):
            if fs.name(path) not in (save, POINTER):
                fs.rm(path, recursive=True)
    except Exception as e:  # noqa: BLE001  (any remote's errors: the cell goes on with its local state)
        _warn(f"{state_dir.name}: the saved state was not copied to the DVC remote", e)


def _wait_for_its_run(fs, folder: str, pointer: dict, run_status) -> dict:
    """A save whose run is still RUNNING may be followed by another: its cell, stopped on another worker, may
    still be saving. Wait for the run to end (at most the stop grace period and a margin); a node that died
    without notice never ends it."""
    from stilts.stop import grace_seconds

    deadline = time.monotonic() + grace_seconds() + 15
    while pointer.get("run_id") and run_status(pointer["run_id"]) == "RUNNING" and time.monotonic() < deadline:
        time.sleep(1)
        pointer = _pointer(fs, folder) or pointer
    return pointer


def restore(state_dir: Path, local_step: int | None, run_status) -> None:
    """Put the newest save on the remote into `state_dir` when it is newer than the local one (`local_step`).
    `run_status(run_id)` is the MLflow status of the run a save belongs to."""
    try:
        fs, folder = _folder(state_dir)
        pointer = _pointer(fs, folder)
        if pointer is None or (local_step is not None and local_step >= pointer["step"]):
            return
        pointer = _wait_for_its_run(fs, folder, pointer, run_status)
        if local_step is not None and local_step >= pointer["step"]:
            return
        source = fs.join(folder, pointer["save"])
        with atomic_dir(state_dir) as tmp:
            for path in fs.ls(source, detail=False):
                fs.get_file(path, str(tmp / fs.name(path)))
        print(f"{state_dir.name}: the state saved at step {pointer['step']} comes from the DVC remote")
    except Exception as e:  # noqa: BLE001
        _warn(f"{state_dir.name}: no saved state could be read from the DVC remote", e)


def clear(state_dir: Path) -> None:
    """Remove the copy of a finished cell's state (when states travel)."""
    if not remote_name():
        return
    try:
        fs, folder = _folder(state_dir)
        if fs.exists(folder):
            fs.rm(folder, recursive=True)
    except Exception as e:  # noqa: BLE001
        _warn(f"{state_dir.name}: its copy on the DVC remote was not removed", e)


def fetch_newer(params, state_dir: Path) -> None:
    """Before a cell starts: the remote's save, when states travel and it is newer than the local one."""
    if not remote_name():
        return
    from stilts import resume, tracking

    restore(state_dir, (resume.read_loop(state_dir) or {}).get("step"), lambda run: tracking.run_status(params, run))
    resume.discard_damaged(state_dir)


def uploader(state_dir: Path):
    """What a training loop calls after each save: the upload, when states travel (else None)."""
    return (lambda: push(state_dir)) if remote_name() else None
