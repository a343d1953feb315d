"""The study on real Dask clusters on 127.0.0.1: a scheduler and `dask worker` processes, each worker in its
own git clone (no shared filesystem, a local-directory DVC remote), one `stilts server` for MLflow."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from stilts import config, tracking
from stilts.io import sha256_file
from tests.conftest import tiny_params_dict

pytestmark = [pytest.mark.slow, pytest.mark.long]
BIN = Path(sys.executable).parent
CELLS = {"intermediate-syn_nli-r0", "transfer-none-syn_rte-r0", "transfer-none-syn_tense-r0",
         "transfer-syn_nli-syn_rte-r0", "transfer-syn_nli-syn_tense-r0"}
# the intermediate cell trains long enough (32 steps) to be killed mid-way
# syn_nli trains long enough (192 steps, seconds) for the kill test to catch its cell mid-training under load
TINY = {"task_overrides": {"syn_nli": {"epochs": 24}}, "train": {"eval_every": 8}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    """Every process a test starts, stopped at the end: the scheduler, workers, the MLflow server, and
    the warm cell servers the workers started (found through their sockets' peer credentials)."""

    def __init__(self, runtime: Path):
        self.runtime, self.procs, self.uri = runtime, [], None
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
                    "HF_DATASETS_OFFLINE": "1", "DVC_NO_ANALYTICS": "1", "STILTS_WORKER_IDLE": "120",
                    "XDG_RUNTIME_DIR": str(runtime), "STILTS_CELL_THREADS": "1"}
        for k in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "STILTS_WORKER", "STILTS_FAULT", "STILTS_WORKDIR"):
            self.env.pop(k, None)

    def start(self, cwd, *cmd, log: Path) -> subprocess.Popen:
        with open(log, "ab") as out:
            proc = subprocess.Popen(list(cmd), cwd=cwd, env=self.env, stdout=out, stderr=out,
                                    stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def run(self, cwd, *cmd, check=True, env=None):
        out = subprocess.run(list(cmd), cwd=cwd, env=self.env | (env or {}), capture_output=True, text=True)
        if check and out.returncode:
            raise AssertionError(f"{cmd} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        return out

    def warm_servers(self) -> list[psutil.Process]:
        found = []
        for sock in self.runtime.glob("stilts-*/worker-*.sock"):
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
                s.connect(str(sock))
                pid, _, _ = __import__("struct").unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
                found.append(psutil.Process(pid))
        return found

    def all(self) -> list[psutil.Process]:
        procs = []
        for p in self.procs + [s.pid for s in self.warm_servers()]:
            with contextlib.suppress(psutil.NoSuchProcess):
                top = psutil.Process(p if isinstance(p, int) else p.pid)
                procs += [top, *top.children(recursive=True)]
        return procs

    def stop(self) -> None:
        servers = self.warm_servers()
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10  # all of them at once, then whatever is left is killed
        for proc in self.procs:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for server in servers:
            with contextlib.suppress(psutil.NoSuchProcess):
                server.kill()
                server.wait(10)


def wait_for(what, check, timeout=300, every=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def start_server(procs: Processes, root: Path) -> str:
    port = free_port()
    procs.start(root, str(BIN / "stilts"), "server", "--port", str(port), "--workers", "1", log=root / "server.log")
    uri = f"http://127.0.0.1:{port}"

    def healthy():
        with contextlib.suppress(OSError):
            return __import__("urllib.request").request.urlopen(f"{uri}/health", timeout=2).status == 200

    wait_for("the MLflow server", healthy)
    return uri


def start_scheduler(procs: Processes, root: Path, name: str) -> str:
    port, log = free_port(), root / f"{name}.log"
    procs.start(root, str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                "--dashboard-address", "127.0.0.1:0", log=log)
    wait_for("the scheduler", lambda: b"Scheduler at" in log.read_bytes(), timeout=120)
    return f"tcp://127.0.0.1:{port}"


def start_worker(procs: Processes, cwd: Path, address: str, *args: str) -> subprocess.Popen:
    return procs.start(cwd, str(BIN / "dask"), "worker", address, "--host", "127.0.0.1", "--dashboard-address",
                       "127.0.0.1:0", "--no-nanny", "--name", cwd.name, *args, log=cwd.parent / f"{cwd.name}.log")


def project(procs: Processes, root: Path, tiny_model, remote: Path | None, **over) -> Path:
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict(tiny_model, **over), sort_keys=False))
    (root / ".gitignore").write_text("/mlflow.db*\n/mlartifacts/\n/.stilts/\n/*.log\n")
    procs.run(root, "git", "init", "-q")
    procs.run(root, "dvc", "init", "-q")
    if remote is not None:
        procs.run(root, "dvc", "remote", "add", "-d", "store", str(remote))
    procs.run(root, "stilts", "pipeline")
    commit(procs, root)
    return root


def commit(procs: Processes, root: Path) -> None:
    procs.run(root, "git", "add", "-A")
    procs.run(root, "git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-q", "-m", "study")


def runs(root: Path, uri: str):
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        return tracking.search_runs(config.load(root / "params.yaml"))
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]


def results(root: Path) -> dict:
    """What a study computed: every result's metrics and steps, and the checkpoints' weights."""
    out = {str(p.relative_to(root)): {k: json.loads(p.read_text())[k] for k in ("metrics", "steps", "best_step")}
           for p in (root / "results").rglob("*.json")}
    out |= {str(p.relative_to(root)): sha256_file(p) for p in (root / "models").rglob("model.safetensors")}
    return out


def ran(out) -> list[str]:
    import re

    return [s.split(":")[-1] for s in re.findall(r"Running stage '([^']+)'", out.stdout)]


@pytest.fixture(scope="module")
def procs(tmp_path_factory):
    """The module's processes, stopped at its end; one MLflow server for every study here."""
    base = tmp_path_factory.mktemp("cluster")
    procs = Processes(base)
    try:
        procs.uri = start_server(procs, base)
        yield procs
    finally:
        procs.stop()


def two_workers(procs: Processes, tiny_model, **over) -> dict:
    """A head project without a shared filesystem, two worker clones, and a scheduler with one worker in each."""
    base = procs.runtime
    head = project(procs, base / "head", tiny_model, base / "remote", **TINY, cluster={"shared_filesystem": False},
                   **over)
    clones = []
    for name in ("w1", "w2"):
        procs.run(base, "git", "clone", "-q", str(head), name)
        clones.append(base / name)
    address = start_scheduler(procs, base, "scheduler")
    workers = {c.name: start_worker(procs, c, address, "--nthreads", "1") for c in clones}
    return {"base": base, "head": head, "clones": clones, "uri": procs.uri, "address": address, "workers": workers,
            "procs": procs}


@pytest.fixture(scope="module")
def cluster(procs, tiny_model):
    return two_workers(procs, tiny_model)


def test_no_shared_filesystem_study_equals_sequential_dvc_repro(cluster, tiny_model):
    head, uri, procs = cluster["head"], cluster["uri"], cluster["procs"]
    out = procs.run(head, "stilts", "study", "--cluster", cluster["address"], "--tracking-uri", uri)
    assert "9 of 10 stages to run" in out.stdout and "9 stages ran" in out.stdout  # settings ran first, at the head
    assert "9/9" in out.stderr  # the progress bar reached the end
    listening = [c.laddr.ip for p in procs.all() for c in p.net_connections("inet") if c.status == "LISTEN"]
    assert listening and set(listening) == {"127.0.0.1"}
    done = runs(head, uri)
    assert (done["status"] == "FINISHED").all()
    cells = done[done["tags.stilts.role"] != "analysis"]
    assert sorted(cells["tags.stilts.dvc_stage"].str.split(":").str[-1]) == sorted(CELLS)  # one run per cell
    assert set(cells["tags.stilts.task"]) == {"syn_nli", "syn_rte", "syn_tense"}
    assert ran(procs.run(head, "dvc", "repro")) == []
    assert "up to date" in procs.run(head, "dvc", "status").stdout
    assert json.loads((head / "reports" / "summary.json").read_text())["runs"] == 4  # the analysis read the server
    assert all((c / "pipelines" / "syn_nli" / "dvc.lock").is_file() is False for c in cluster["clones"])
    # the same study, one stage at a time, at the same CPU threads per cell: the same numbers and weights
    ref = cluster["base"] / "ref"
    procs.run(cluster["base"], "git", "clone", "-q", str(head), str(ref))
    procs.run(ref, "dvc", "repro", env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    assert results(head) == results(ref) and len(results(head)) == 5


def grow_study(cluster: dict, restarts: int) -> None:
    """More restarts: the head writes and commits the new pipeline, every worker's clone pulls it."""
    head, procs = cluster["head"], cluster["procs"]
    params = yaml.safe_load((head / "params.yaml").read_text())
    params["study"]["restarts"] = restarts
    (head / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    procs.run(head, "stilts", "pipeline")
    commit(procs, head)
    for clone in cluster["clones"]:
        procs.run(clone, "git", "pull", "-q")


def _cell_children(procs: Processes, clone: Path) -> list[psutil.Process]:
    """The warm server's children running a cell in this clone."""
    kids = []
    for server in procs.warm_servers():
        for kid in server.children():
            with contextlib.suppress(psutil.NoSuchProcess):
                if Path(kid.cwd()).resolve() == clone.resolve():
                    kids.append(kid)
    return kids


def test_worker_killed_mid_cell_the_study_completes_on_the_other(cluster):
    head, uri, procs = cluster["head"], cluster["uri"], cluster["procs"]
    grow_study(cluster, restarts=2)
    study = subprocess.Popen([str(BIN / "stilts"), "study", "--cluster", cluster["address"], "--tracking-uri", uri],
                             cwd=head, env=procs.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def running():
            r = runs(head, uri)
            r = r[(r["tags.stilts.cell"] == "syn_nli/syn_nli/r1") & (r["status"] == "RUNNING")] if len(r) else r
            return len(r) and "metrics.train_loss" in r and r["metrics.train_loss"].notna().any()

        wait_for("the intermediate cell to train", running, every=0.2)
        victim = next(c for c in cluster["clones"] if (c / ".stilts/logs/intermediate-syn_nli-r1.log").is_file())
        orphans = _cell_children(procs, victim)
        cluster["workers"][victim.name].send_signal(signal.SIGKILL)
        psutil.wait_procs(orphans, timeout=10)
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in orphans)
        stdout, stderr = study.communicate(timeout=600)
    finally:
        if study.poll() is None:
            study.kill()
    assert study.returncode == 0, stderr
    assert "6 of 15 stages to run" in stdout and "6 stages ran" in stdout
    done = runs(head, uri)
    cells = done[done["tags.stilts.role"] != "analysis"]
    finished = cells[cells["status"] == "FINISHED"]
    assert len(finished) == 10 and finished["tags.stilts.cell"].is_unique  # exactly one FINISHED run per cell
    # its guard stopped the cell when the worker died: it saved and ended its run (KILLED), and the rerun on
    # the other worker resumed that run from the state on the DVC remote; a kill before any save starts over
    victim_runs = cells[cells["tags.stilts.cell"] == "syn_nli/syn_nli/r1"]
    assert set(cells[cells["status"] == "KILLED"]["tags.stilts.cell"]) <= {"syn_nli/syn_nli/r1"}
    assert (victim_runs["status"] == "KILLED").any() or \
        victim_runs[victim_runs["status"] == "FINISHED"]["tags.stilts.resumed"].eq("true").all()
    assert ran(procs.run(head, "dvc", "repro")) == []
    assert not list(head.rglob("*.tmp")) and not list(head.rglob(".*.old-*"))  # nothing half-written
    assert json.loads((head / "results" / "syn_nli" / "syn_rte" / "r1.json").read_text())["steps"] == 8


def test_worker_lost_after_its_cell_finished_leaves_one_finished_run(cluster):
    """The window between a cell finishing and the head collecting it: the worker is frozen (SIGSTOP) while its
    cell trains, the cell finishes (its run FINISHED, its result never reported), then the worker is SIGKILLed.
    Dask runs the stage again on the other worker, which restores the finished twin instead of training."""
    head, uri, procs, address = cluster["head"], cluster["uri"], cluster["procs"], cluster["address"]
    for clone in cluster["clones"]:  # a worker the previous test killed comes back
        if cluster["workers"][clone.name].poll() is not None:
            cluster["workers"][clone.name] = start_worker(procs, clone, address, "--nthreads", "1")
    grow_study(cluster, restarts=3)
    cell, log = "none/syn_tense/r2", ".stilts/logs/transfer-none-syn_tense-r2.log"
    study = subprocess.Popen([str(BIN / "stilts"), "study", "--cluster", address, "--tracking-uri", uri],
                             cwd=head, env=procs.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def status():
            r = runs(head, uri)
            return set(r[r["tags.stilts.cell"] == cell]["status"]) if len(r) and "tags.stilts.cell" in r else set()

        wait_for("the baseline cell to start", lambda: "RUNNING" in status(), every=0.05)
        victim = next(c for c in cluster["clones"] if (c / log).is_file())
        worker = cluster["workers"][victim.name]
        worker.send_signal(signal.SIGSTOP)  # it can no longer report the result; its cell goes on
        wait_for("the cell to finish", lambda: status() == {"FINISHED"}, every=0.1)
        worker.send_signal(signal.SIGKILL)
        stdout, stderr = study.communicate(timeout=600)
    finally:
        if study.poll() is None:
            study.kill()
    assert study.returncode == 0, stderr
    other = next(c for c in cluster["clones"] if c != victim)
    assert "its result is restored, nothing is trained" in (other / log).read_text()  # the stage did run again
    done = runs(head, uri)
    cells = done[(done["tags.stilts.role"] != "analysis") & (done["status"] == "FINISHED")]
    assert cells["tags.stilts.cell"].is_unique and (cells["tags.stilts.cell"] == cell).sum() == 1
    assert ran(procs.run(head, "dvc", "repro")) == []


def test_two_cells_share_one_gpu_worker(procs, tiny_model):
    """A worker with 3 threads and a GPU of two cell slots (`--resources GPU=2`): two training cells at once,
    never three (each asks for one slot)."""
    root = project(procs, procs.runtime / "shared", tiny_model, None, mlflow={"experiment": "gpu-share"},
                   tasks={"intermediate": [], "target": ["syn_rte", "syn_copa"], "probe": ["syn_tense"]})
    address = start_scheduler(procs, procs.runtime, "gpu-scheduler")
    start_worker(procs, root, address, "--nthreads", "3", "--resources", "GPU=2")
    procs.run(root, "stilts", "study", "--cluster", address, "--tracking-uri", procs.uri)
    cells = runs(root, procs.uri)
    cells = cells[cells["tags.stilts.role"] != "analysis"]
    assert len(cells) == 3 and (cells["status"] == "FINISHED").all()
    spans = list(cells[["start_time", "end_time"]].itertuples(index=False))
    at_once = [sum(s <= t < e for s, e in spans) for t, _ in spans]  # cells running when each one started
    assert max(at_once) == 2  # their runs overlap, two at a time
    assert ran(procs.run(root, "dvc", "repro")) == []
