"""The session guard (tests/checkout_guard.py): a pytest run that changes the checkout fails and names what it
changed; what Python and pytest write by nature does not count. Run on a fake checkout (`--checkout-root`)."""

import re
import sys
from pathlib import Path

from tests.checkout_guard import CHECKOUT
from tests.commands import command_env, run

WRITES = """
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(os.environ["FAKE_CHECKOUT"])


@pytest.mark.parametrize("rel", {paths!r})
def test_write(rel):
    path = ROOT / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("written by a test")


def test_remove():
    for rel in {removed!r}:
        shutil.rmtree(ROOT / rel) if (ROOT / rel).is_dir() else (ROOT / rel).unlink()


def test_make_folders():
    for rel in {made!r}:
        (ROOT / rel).mkdir(parents=True)
"""
# what a study writes, and its sources: each one changed alone must fail the run
CAUGHT = [".stilts/state/none__syn_rte__r0/state.json", "dvc.yaml", "pipelines/none/dvc.yaml", "params.yaml",
          "data/raw/syn_rte/train.jsonl", "data/raw/README.md", "models/intermediate/syn_nli/r0/model.safetensors",
          "results/none/syn_rte/r0.json", "mlflow.db", ".dvc/cache/files/md5/00/1", ".dvc/tmp/rwlock",
          "src/stilts/new.py"]
NOT_CAUGHT = ["src/stilts/__pycache__/new.cpython-311.pyc", ".pytest_cache/v/cache/lastfailed",
              ".venv/lib/site.py", "src/stilts.egg-info/PKG-INFO", ".git/index"]


def fake_checkout(root: Path) -> Path:
    for rel in ["params.yaml", "dvc.yaml", "pipelines/none/dvc.yaml", "pipelines/none/dvc.lock", "data/raw/README.md",
                "reports/summary.json", "src/stilts/__init__.py", ".git/index", ".venv/lib/site.py"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("as committed")
    return root


def pytest_on(checkout: Path, tmp_path: Path, paths: list[str], removed: list[str] = (), made: list[str] = ()):
    """pytest with only the guard loaded, on a test file that writes `paths` in `checkout`, removes `removed`
    and makes the empty folders `made`."""
    tests = tmp_path / "elsewhere"
    tests.mkdir()
    (tests / "test_writes.py").write_text(WRITES.format(paths=paths, removed=list(removed), made=list(made)))
    env = command_env(FAKE_CHECKOUT=str(checkout), PYTHONPATH=str(CHECKOUT))
    return run(tests, sys.executable, "-m", "pytest", "-q", "-p", "tests.checkout_guard", "--checkout-root", checkout,
               "test_writes.py", check=False, env=env, timeout=300)


def test_a_run_that_writes_into_the_checkout_fails_and_names_every_path(tmp_path):
    checkout = fake_checkout(tmp_path / "checkout")
    removed, made = ["reports/summary.json", "pipelines/none/dvc.lock"], [".dvc/tmp/exps", "mlruns/0"]
    out = pytest_on(checkout, tmp_path, CAUGHT + NOT_CAUGHT, removed, made)
    summary = next((line for line in out.stdout.splitlines() if "the tests changed" in line), "")
    assert out.returncode == 1 and f"in the checkout {checkout}" in summary, out.stdout[-3000:]
    named = set(summary.split("while they ran?): ", 1)[1].split(", "))
    assert named == set(CAUGHT) | set(removed) | {".dvc/tmp/exps/", "mlruns/0/"}  # an empty folder made counts too
    assert "passed" in out.stdout  # every test passed: the guard alone failed the run
    # the first watched file a test changed, named with that test (the inner run's order may be random)
    first = [line for line in out.stdout.splitlines() if line.startswith("first seen: ")]
    assert len(first) == 1 and re.fullmatch(r"first seen: (\S+) changed during elsewhere/test_writes\.py::"
                                            r"test_write\[\1\]", first[0]), first


def test_a_run_that_leaves_the_checkout_alone_passes(tmp_path):
    checkout = fake_checkout(tmp_path / "checkout")
    out = pytest_on(checkout, tmp_path, NOT_CAUGHT)
    assert out.returncode == 0 and "the tests changed" not in out.stdout, out.stdout[-3000:]
