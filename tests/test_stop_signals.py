"""A cell or a study stopped by a signal (SIGUSR1, SIGTERM) saves its state at once, ends its run KILLED and
exits 75; run again, it resumes that run and ends exactly like an uninterrupted run."""

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import yaml

from stilts import config, stop, tracking
from tests.commands import BIN, git_dvc_init, run, runs_of, started, stilts, warm_env
from tests.conftest import tiny_params_dict

pytestmark = pytest.mark.slow
# 512 examples, batch 8, 2 epochs: 128 steps, long enough to be signalled mid-way; a state every 32 steps
LONG = {"data": {"generated_train": 512, "generated_validation": 32},
        "train": {"epochs": 2, "eval_every": 16, "log_every": 1, "batch_size": 8, "save_every": 32,
                  "save_interval_s": 3600}}
TOTAL_STEPS = 128


def env_for(root: Path) -> dict:
    # STILTS_STEP_WRITE_S=0: the signal is sent at a step read from MLflow, which by default lags up to 5 s
    return warm_env(root, STILTS_WORKER_IDLE="30", STILTS_STOP_GRACE_S="60", STILTS_STEP_WRITE_S="0")


def make_project(root: Path, tiny_model, **over) -> Path:
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict(tiny_model, **over), sort_keys=False))
    return root


def logged_steps(root: Path, metric: str = "train_loss") -> list[int]:
    """The steps at which `metric` was logged, over every run in the project's store (repeats included)."""
    db = root / "mlflow.db"
    if not db.is_file():
        return []
    with contextlib.suppress(sqlite3.OperationalError), contextlib.closing(
            sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as con:
        return [r[0] for r in con.execute("select step from metrics where key = ?", (metric,))]
    return []


def signal_at_step(proc: subprocess.Popen, root: Path, step: int, sig: int, timeout: float = 300) -> int:
    """Send `sig` to `proc` once the run logged `step`; the last step logged then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        steps = logged_steps(root)
        if steps and max(steps) >= step:
            proc.send_signal(sig)
            return max(steps)
        time.sleep(0.05)
    raise AssertionError(f"never reached step {step}: {proc.poll()}")


@pytest.fixture(scope="module")
def reference(tiny_model, tmp_path_factory):
    """The uninterrupted run of the cell, in a project of its own."""
    root = make_project(tmp_path_factory.mktemp("stop") / "ref", tiny_model, **LONG)
    assert stilts(root, "prepare", env=env_for(root)).returncode == 0
    done = stilts(root, "transfer", "--source", "none", "--task", "syn_rte", env=env_for(root))
    assert done.returncode == 0, done.stderr
    return root


def result(root: Path) -> dict:
    return json.loads((root / "results" / "none" / "syn_rte" / "r0.json").read_text())


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGTERM], ids=["SIGUSR1", "SIGTERM"])
def test_a_signalled_cell_saves_at_once_and_resumes_its_run(reference, tiny_model, sig):
    root = reference.parent / signal.Signals(sig).name
    make_project(root, tiny_model, **LONG)
    assert stilts(root, "prepare", env=env_for(root)).returncode == 0
    with started(root, BIN / "stilts", "transfer", "--source", "none", "--task", "syn_rte", env=env_for(root)) as cell:
        at = signal_at_step(cell, root, TOTAL_STEPS // 2 - 12, sig)
        out, err = cell.communicate(timeout=120)
    assert cell.returncode == stop.EXIT_RESUME, err
    assert f"stopped by {signal.Signals(sig).name}" in err.splitlines()[-1]
    assert not (root / "results" / "none" / "syn_rte" / "r0.json").exists()
    saved = json.loads(next((root / ".stilts" / "state").glob("*/state.json")).read_text())["loop"]["step"]
    assert at <= saved < TOTAL_STEPS and saved % 32  # saved when signalled, not at a periodic save
    runs = runs_of(root, "none/syn_rte/r0")
    assert list(runs["status"]) == ["KILLED"]
    assert runs["tags.stilts.interrupted"].iloc[0] == signal.Signals(sig).name

    again = stilts(root, "transfer", "--source", "none", "--task", "syn_rte", env=env_for(root))
    assert again.returncode == 0, again.stderr
    assert {k: result(root)[k] for k in ("metrics", "steps", "best_step", "score")} == \
        {k: result(reference)[k] for k in ("metrics", "steps", "best_step", "score")}
    runs = runs_of(root, "none/syn_rte/r0")
    assert list(runs["status"]) == ["FINISHED"] and runs["tags.stilts.resumed"].iloc[0] == "true"
    steps = logged_steps(root)
    assert sorted(set(steps)) == list(range(1, TOTAL_STEPS + 1))
    assert len(steps) - TOTAL_STEPS <= 32  # repeated steps: at most one save interval (here none)


def left_behind(root: Path) -> list[str]:
    """Processes still running in the project, other than the idle warm cell server (which waits for work)."""
    left = []
    for p in psutil.process_iter(["pid", "cmdline", "cwd", "status"]):
        with contextlib.suppress(psutil.Error, TypeError):
            if p.info["cwd"] and Path(p.info["cwd"]).is_relative_to(root) and p.pid != os.getpid() and \
                    "stilts.worker" not in " ".join(p.info["cmdline"]) and p.info["status"] != psutil.STATUS_ZOMBIE:
                left.append(" ".join(p.info["cmdline"]))
    return left


def wait_until_gone(root: Path, timeout: float = 90) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := left_behind(root)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def git_dvc_project(root: Path, tiny_model) -> Path:
    """A study of 3 cells (an intermediate task, a target: baseline and transfer)."""
    make_project(root, tiny_model, **LONG, tasks={"intermediate": ["syn_nli"], "target": ["syn_rte"], "probe": []})
    git_dvc_init(root, env_for(root))
    return root


class Group:
    """A process group, signalled as a whole (what `timeout` and a terminal's Ctrl-C do)."""

    def __init__(self, proc):
        self.proc = proc

    def poll(self):
        return self.proc.poll()

    def send_signal(self, sig):
        os.killpg(self.proc.pid, sig)


@pytest.mark.long
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("cluster, group", [(["--cluster", "local", "--jobs", "2"], False),
                                            (["--cluster", "local", "--jobs", "2"], True), ([], False)],
                         ids=["dask", "dask-group", "dvc-repro"])
def test_sigterm_to_the_study_head_stops_its_cells_and_the_next_study_resumes_them(tiny_model, tmp_path, cluster,
                                                                                   group):
    root = git_dvc_project(tmp_path / "study", tiny_model)
    with started(root, BIN / "stilts", "study", *cluster, env=env_for(root), start_new_session=group) as head:
        signal_at_step(Group(head) if group else head, root, 40, signal.SIGTERM)
        out, err = head.communicate(timeout=300)
    assert head.returncode == stop.EXIT_RESUME, err
    assert wait_until_gone(root, timeout=5) == []  # the head returned once its cells had ended
    params = config.load(root / "params.yaml")
    runs = tracking.search_runs(params)
    # the Dask head passes SIGTERM on; the `dvc repro` head SIGINT, on which DVC waits for its stage
    assert "RUNNING" not in set(runs["status"]) and set(runs["tags.stilts.interrupted"].dropna()) & {"SIGTERM",
                                                                                                       "SIGINT"}
    assert list((root / ".stilts" / "state").glob("*/state.json"))

    again = stilts(root, "study", *cluster, env=env_for(root), timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    runs = tracking.search_runs(params)
    cells = runs[runs["tags.stilts.role"].isin(["intermediate", "target", "probe"])]
    assert (cells.groupby("tags.stilts.cell")["status"].apply(lambda s: (s == "FINISHED").sum()) == 1).all()
    assert "RUNNING" not in set(runs["status"]) and (cells["tags.stilts.resumed"] == "true").any()
    assert run(root, "dvc", "status", "--quiet", check=False, env=env_for(root)).returncode == 0
    assert not list((root / ".stilts" / "state").glob("*/state.json"))


class CellOf:
    """The first training cell command (`stilts intermediate|transfer`, the warm server's client) of a study."""

    def __init__(self, root: Path, head: subprocess.Popen, timeout: float = 300):
        deadline = time.monotonic() + timeout
        self.proc = None
        while self.proc is None and time.monotonic() < deadline and head.poll() is None:
            for p in psutil.process_iter(["cmdline", "cwd"]):
                cmd = " ".join(p.info["cmdline"] or [])
                if p.info["cwd"] == str(root) and "bin/stilts transfer" in cmd and "stilts.worker" not in cmd:
                    self.proc, self.cmd = p, cmd
                    break
            time.sleep(0.05)
        assert self.proc is not None, "no training cell started"

    def poll(self):
        return None if self.proc.is_running() and self.proc.status() != psutil.STATUS_ZOMBIE else 0

    def send_signal(self, sig):
        self.proc.send_signal(sig)


@pytest.mark.long
@pytest.mark.timeout(1200)
def test_a_cell_stopped_on_its_worker_is_run_again_by_the_head_and_resumes(tiny_model, tmp_path):
    """SIGUSR1 to one cell of `stilts study --cluster local` (as SLURM sends it): the cell saves and exits 75,
    the head submits it again, and the rerun resumes its state and its run; the study ends complete."""
    root = git_dvc_project(tmp_path / "study", tiny_model)
    with started(root, BIN / "stilts", "study", "--cluster", "local", "--jobs", "2", env=env_for(root)) as head:
        cell = CellOf(root, head)
        signal_at_step(cell, root, 40, signal.SIGUSR1)
        out, err = head.communicate(timeout=900)
    assert head.returncode == 0, err[-3000:]
    runs = tracking.search_runs(config.load(root / "params.yaml"))
    cells = runs[runs["tags.stilts.role"].isin(["intermediate", "target", "probe"])]
    assert (cells["status"] == "FINISHED").all() and cells["tags.stilts.cell"].is_unique
    stopped = cells[cells["tags.stilts.interrupted"] == "SIGUSR1"]
    assert len(stopped) == 1 and stopped["tags.stilts.resumed"].iloc[0] == "true"
    assert run(root, "dvc", "status", "--quiet", check=False, env=env_for(root)).returncode == 0
