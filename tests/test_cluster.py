"""The study on real Dask clusters on 127.0.0.1: a scheduler and `dask worker` processes, each worker in its
own git clone (no shared filesystem, a local-directory DVC remote), one `stilts server` for MLflow."""

import json
import signal

import psutil
import pytest
import yaml

from tests.commands import BIN, ran, runs, runs_of, started, wait_for
from tests.dask_cluster import (
    Processes,
    cell_children,
    commit,
    project,
    results,
    start_scheduler,
    start_server,
    start_worker,
    two_workers,
)

# a test's bound includes the module's cluster and first study when it runs first
pytestmark = [pytest.mark.slow, pytest.mark.long, pytest.mark.timeout(1200)]
CELLS = {"intermediate-syn_nli-r0", "transfer-none-syn_rte-r0", "transfer-none-syn_tense-r0",
         "transfer-syn_nli-syn_rte-r0", "transfer-syn_nli-syn_tense-r0"}


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


@pytest.fixture(scope="module")
def cluster(procs, tiny_model):
    """Two workers without a shared filesystem and the study they ran first (one restart), with what that study
    left (its output, results, runs, report, listening sockets, the clones' lock files) kept as it was then: the
    tests that grow the study later change the live ones."""
    made = two_workers(procs, tiny_model)
    head, uri = made["head"], made["uri"]
    first = procs.run(head, "stilts", "study", "--cluster", made["address"], "--tracking-uri", uri)
    listening = [c.laddr.ip for p in procs.all() for c in p.net_connections("inet") if c.status == "LISTEN"]
    commit_id = procs.run(head, "git", "rev-parse", "HEAD").stdout.strip()
    return made | {"first": first, "first_listening": listening, "first_runs": runs(head, uri),
                   "first_results": results(head), "first_commit": commit_id,
                   "first_summary": json.loads((head / "reports" / "summary.json").read_text()),
                   "first_clone_locks": [c for c in made["clones"] if (c / "pipelines/syn_nli/dvc.lock").is_file()]}


def test_no_shared_filesystem_study_equals_sequential_dvc_repro(cluster):
    head, procs, out = cluster["head"], cluster["procs"], cluster["first"]
    assert "9 of 10 stages to run" in out.stdout and "9 stages ran" in out.stdout  # settings ran first, at the head
    assert "9/9" in out.stderr  # the progress bar reached the end
    listening = cluster["first_listening"]
    assert listening and set(listening) == {"127.0.0.1"}
    done = cluster["first_runs"]
    assert (done["status"] == "FINISHED").all()
    cells = done[done["tags.stilts.role"] != "analysis"]
    assert sorted(cells["tags.stilts.dvc_stage"].str.split(":").str[-1]) == sorted(CELLS)  # one run per cell
    assert set(cells["tags.stilts.task"]) == {"syn_nli", "syn_rte", "syn_tense"}
    assert ran(procs.run(head, "dvc", "repro")) == set()
    assert "up to date" in procs.run(head, "dvc", "status").stdout
    assert cluster["first_summary"]["runs"] == 4  # the analysis read the server
    assert cluster["first_clone_locks"] == []  # the head recorded what ran, not the workers
    # the same study, one stage at a time, at the same CPU threads per cell: the same numbers and weights
    ref = cluster["base"] / "ref"
    procs.run(cluster["base"], "git", "clone", "-q", str(head), str(ref))
    procs.run(ref, "git", "checkout", "-q", cluster["first_commit"])  # the study as it was first run
    procs.run(ref, "dvc", "repro", env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    assert cluster["first_results"] == results(ref) and len(results(ref)) == 5


def grow_study(cluster: dict) -> int:
    """One restart more: the head writes and commits the new pipeline, every worker's clone pulls it, and a worker
    an earlier test killed is started again. The new restart's index."""
    head, procs = cluster["head"], cluster["procs"]
    for clone in cluster["clones"]:
        if cluster["workers"][clone.name].poll() is not None:
            cluster["workers"][clone.name] = start_worker(procs, clone, cluster["address"], "--nthreads", "1")
    params = yaml.safe_load((head / "params.yaml").read_text())
    restart = params["study"]["restarts"]
    params["study"]["restarts"] = restart + 1
    (head / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    procs.run(head, "stilts", "pipeline")
    commit(procs, head)
    for clone in cluster["clones"]:
        procs.run(clone, "git", "pull", "-q")
    return restart


def stages(restarts: int) -> int:
    """The study's stages: settings, 3 prepare, per restart 1 intermediate and 4 transfer cells, the analysis."""
    return 5 + 5 * restarts


def test_worker_killed_mid_cell_the_study_completes_on_the_other(cluster):
    head, uri, procs = cluster["head"], cluster["uri"], cluster["procs"]
    r = grow_study(cluster)
    cell = f"syn_nli/syn_nli/r{r}"
    with started(head, BIN / "stilts", "study", "--cluster", cluster["address"], "--tracking-uri", uri,
                 env=procs.env) as study:
        def running():
            found = runs(head, uri)
            found = found[(found["tags.stilts.cell"] == cell) & (found["status"] == "RUNNING")] if len(found) else found
            return len(found) and "metrics.train_loss" in found and found["metrics.train_loss"].notna().any()

        wait_for("the intermediate cell to train", running, every=0.2)
        victim = next(c for c in cluster["clones"] if (c / f".stilts/logs/intermediate-syn_nli-r{r}.log").is_file())
        orphans = cell_children(procs, victim)
        cluster["workers"][victim.name].send_signal(signal.SIGKILL)
        psutil.wait_procs(orphans, timeout=10)
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in orphans)
        stdout, stderr = study.communicate(timeout=600)
    assert study.returncode == 0, stderr
    assert f"6 of {stages(r + 1)} stages to run" in stdout and "6 stages ran" in stdout
    done = runs(head, uri)
    cells = done[done["tags.stilts.role"] != "analysis"]
    finished = cells[cells["status"] == "FINISHED"]
    assert len(finished) == 5 * (r + 1) and finished["tags.stilts.cell"].is_unique  # one FINISHED run per cell
    # its guard stopped the cell when the worker died: it saved and ended its run (KILLED), and the rerun on
    # the other worker resumed that run from the state on the DVC remote; a kill before any save starts over
    victim_runs = cells[cells["tags.stilts.cell"] == cell]
    assert set(cells[cells["status"] == "KILLED"]["tags.stilts.cell"]) <= {cell}
    assert (victim_runs["status"] == "KILLED").any() or \
        victim_runs[victim_runs["status"] == "FINISHED"]["tags.stilts.resumed"].eq("true").all()
    assert ran(procs.run(head, "dvc", "repro")) == set()
    assert not list(head.rglob("*.tmp")) and not list(head.rglob(".*.old-*"))  # nothing half-written
    assert json.loads((head / "results" / "syn_nli" / "syn_rte" / f"r{r}.json").read_text())["steps"] == 8


def test_worker_lost_after_its_cell_finished_leaves_one_finished_run(cluster):
    """The window between a cell finishing and the head collecting it: the worker is frozen (SIGSTOP) while its
    cell trains, the cell finishes (its run FINISHED, its result never reported), then the worker is SIGKILLed.
    Dask runs the stage again on the other worker, which restores the finished twin instead of training."""
    head, uri, procs, address = cluster["head"], cluster["uri"], cluster["procs"], cluster["address"]
    r = grow_study(cluster)
    cell, log = f"none/syn_tense/r{r}", f".stilts/logs/transfer-none-syn_tense-r{r}.log"
    with started(head, BIN / "stilts", "study", "--cluster", address, "--tracking-uri", uri, env=procs.env) as study:
        def status():
            return set(runs_of(head, cell, uri).get("status", []))

        wait_for("the baseline cell to start", lambda: "RUNNING" in status(), every=0.05)
        victim = next(c for c in cluster["clones"] if (c / log).is_file())
        worker = cluster["workers"][victim.name]
        worker.send_signal(signal.SIGSTOP)  # it can no longer report the result; its cell goes on
        wait_for("the cell to finish", lambda: status() == {"FINISHED"}, every=0.1)
        worker.send_signal(signal.SIGKILL)
        stdout, stderr = study.communicate(timeout=600)
    assert study.returncode == 0, stderr
    other = next(c for c in cluster["clones"] if c != victim)
    assert "its result is restored, nothing is trained" in (other / log).read_text()  # the stage did run again
    done = runs(head, uri)
    cells = done[(done["tags.stilts.role"] != "analysis") & (done["status"] == "FINISHED")]
    assert cells["tags.stilts.cell"].is_unique and (cells["tags.stilts.cell"] == cell).sum() == 1
    assert ran(procs.run(head, "dvc", "repro")) == set()


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
    assert ran(procs.run(root, "dvc", "repro")) == set()
