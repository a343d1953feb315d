"""The session guard of the test suite: a test run that changed anything in the checkout it runs from fails,
and its summary names what changed. Tests make their projects under tmp, never in the checkout.

Every file of the checkout is compared by size and modification time before and after the session (and
every folder by its presence): a study's outputs (models/, results/, reports/, mlflow.db, dvc.lock, the DVC
cache, .stilts/, data/), its sources (params.yaml, dvc.yaml, pipelines/*/dvc.yaml) and everything else. Left
out is what running Python and pytest writes by nature: bytecode, pytest's cache, the virtual environment,
the package's egg-info, and git's own folder. The study's store and sources (`WATCHED`) are also looked at
around every test, so that the summary names the first test during which one of them changed.

Loaded by tests/conftest.py; `--checkout-root DIR` guards another folder (the guard's own test uses it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[1]
LEFT_OUT = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache"}
# looked at around every test (a stat each), so that the summary names the test that first changed one of them
WATCHED = ("mlflow.db", "mlflow.db-wal", "mlflow.db-shm", "params.yaml", "dvc.yaml", "dvc.lock")
_STATE = pytest.StashKey[dict]()


def _signature(path: str | Path) -> tuple[int, int] | None:
    """A file's size and modification time; None when it is not there."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def checkout_state(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every file under `root` with its size and modification time, every folder with None (`LEFT_OUT` and
    egg-info folders aside)."""
    state: dict[str, tuple[int, int] | None] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in LEFT_OUT and not d.endswith(".egg-info"))
        rel = os.path.relpath(folder, root)
        if rel != ".":
            state[rel + os.sep] = None
        for name in files:
            signature = _signature(os.path.join(folder, name))
            if signature is not None:  # else removed while walking
                state[os.path.normpath(os.path.join(rel, name))] = signature
    return state


def changed(before: dict, after: dict) -> list[str]:
    """The paths added, removed or changed; a folder only when no path under it is named already."""
    paths = sorted(k for k in before.keys() | after.keys() if before.get(k, "gone") != after.get(k, "gone"))
    return [p for p in paths if not (p.endswith(os.sep) and any(q.startswith(p) and q != p for q in paths))]


def pytest_addoption(parser):
    parser.addoption("--checkout-root", default=str(CHECKOUT),
                     help="the folder no test may change (default: the checkout the tests are in)")


def pytest_sessionstart(session):
    root = Path(session.config.getoption("checkout_root"))
    session.config.stash[_STATE] = {"root": root, "before": checkout_state(root)}


def _watched(root: Path) -> dict[str, tuple[int, int] | None]:
    return {name: _signature(root / name) for name in WATCHED}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    state = item.config.stash.get(_STATE, None)
    before = _watched(state["root"]) if state is not None and "first" not in state else None
    yield
    if before is not None:
        after = _watched(state["root"])
        names = [name for name in WATCHED if before[name] != after[name]]
        if names:
            state["first"] = f"{', '.join(names)} changed during {item.nodeid}"


def pytest_sessionfinish(session, exitstatus):
    state = session.config.stash.get(_STATE, None)
    if state is None:
        return
    state["changed"] = changed(state["before"], checkout_state(state["root"]))
    if state["changed"]:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    state = config.stash.get(_STATE, {})
    paths = state.get("changed")
    if paths:
        more = f" and {len(paths) - 50} more" if len(paths) > 50 else ""
        terminalreporter.write_line(f"FAILED: the tests changed {len(paths)} path(s) in the checkout {state['root']} "
                                    f"(tests must make their projects in tmp; or was it edited while they ran?): "
                                    f"{', '.join(paths[:50])}{more}", red=True)
        if "first" in state:
            terminalreporter.write_line(f"first seen: {state['first']}", red=True)
