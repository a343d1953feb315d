"""The Dask engine's parts, without a study: the stage graph, GPU slots, the SLURM job script, cells dying
with their worker or stopped by the head, the command line's checks and the no-shared-filesystem
preconditions."""

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml

from stilts import cli, pipeline, stages
from stilts.engine import cell, clusters, transport
from stilts.errors import StiltsError
from tests.commands import git
from tests.conftest import tiny_params_dict


def test_plan_orders_out_of_date_stages_after_their_inputs(make_params):
    params = make_params()

    def plan(changed):
        return stages.plan(stages.graph(pipeline.layout(params)), changed)

    names = [st.name for st in plan({"prepare-syn_rte"})]
    assert sorted(names) == ["analyze", "prepare-syn_rte", "transfer-none-syn_rte-r0", "transfer-syn_nli-syn_rte-r0"]
    assert names[0] == "prepare-syn_rte" and names[-1] == "analyze"
    by = {st.name: st for st in plan({"prepare-syn_rte"})}
    assert by["transfer-syn_nli-syn_rte-r0"].upstream == ["prepare-syn_rte"]
    assert set(by["transfer-syn_nli-syn_rte-r0"].inputs) == {"settings", "prepare-syn_rte", "intermediate-syn_nli-r0"}
    assert by["transfer-syn_nli-syn_rte-r0"].address == "pipelines/syn_nli/dvc.yaml:transfer-syn_nli-syn_rte-r0"
    assert by["prepare-syn_rte"].downstream == 3 and by["analyze"].downstream == 0
    assert by["transfer-none-syn_rte-r0"].trains and not by["prepare-syn_rte"].trains
    assert "reports/summary.json" in by["analyze"].uncached and "reports/report.md" not in by["analyze"].uncached
    everything = plan({"settings"})  # the first stage: every other one depends on its files
    assert len(everything) == len(pipeline.stages(params)) == 10 and everything[0].name == "settings"
    done: set = set()
    for st in everything:  # each stage after every stage it needs
        assert set(st.inputs) <= done
        done.add(st.name)
    assert plan(set()) == []


def test_a_plan_for_one_target_holds_only_what_it_needs(make_params):
    graph = stages.graph(pipeline.layout(make_params()))
    todo = stages.plan(graph, {"prepare-syn_nli", "prepare-syn_rte"}, targets=["transfer-syn_nli-syn_rte-r0"])
    assert [st.name for st in todo][-1] == "transfer-syn_nli-syn_rte-r0"
    assert {st.name for st in todo} == {"prepare-syn_nli", "prepare-syn_rte", "intermediate-syn_nli-r0",
                                        "transfer-syn_nli-syn_rte-r0"}


def test_slurm_job_script_one_gpu_k_cells_and_loopback_only_when_told(monkeypatch):
    import dask

    slurm_cfg = {"cores": 8, "memory": "32GB", "walltime": "04:00:00", "queue": "gpu",
                 "scheduler-options": {"host": "127.0.0.1"}}
    with dask.config.set({"jobqueue.slurm": slurm_cfg}):
        cluster = clusters.slurm(clusters.Options(jobs=2, cells_per_gpu=2))
        try:
            script = cluster.job_script()
            assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        finally:
            cluster.close()
    assert "#SBATCH --gres=gpu:1" in script and "#SBATCH --cpus-per-task=8" in script and "#SBATCH -p gpu" in script
    assert "--resources GPU=2" in script and "--nthreads 2" in script and "export STILTS_CELL_THREADS=4" in script
    assert "--preload-nanny stilts.engine.slurm_signals --preload stilts.engine.slurm_signals" in script  # SIGUSR1
    with dask.config.set({"jobqueue.slurm": slurm_cfg | {"scheduler-options": {}}}):
        with pytest.raises(StiltsError, match="set where the scheduler listens"):
            clusters.slurm(clusters.Options())


def test_local_cluster_workers_pin_their_gpu_and_share_the_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(16)))
    gpus = clusters.local_workers(clusters.Options(devices=["0", "3"], cells_per_gpu=2))
    assert [w["options"]["env"]["CUDA_VISIBLE_DEVICES"] for w in gpus.values()] == ["0", "3"]
    assert all(w["options"]["resources"] == {"GPU": 2} and w["options"]["nthreads"] == 2 and
               w["options"]["env"]["STILTS_CELL_THREADS"] == "4" and w["options"]["host"] == "127.0.0.1"
               for w in gpus.values())
    cpus = clusters.local_workers(clusters.Options(jobs=3))
    assert len(cpus) == 3 and all(w["options"]["nthreads"] == 1 and "resources" not in w["options"] and
                                  w["options"]["env"]["STILTS_CELL_THREADS"] == "5" for w in cpus.values())


def test_error_line_is_the_cells_own_one_line_error(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("--- 2026 stilts prepare\nsome output\nstilts: error: params.yaml: unknown key 'x'\n")
    assert cell.error_line(log) == "params.yaml: unknown key 'x'"
    log.write_text("--- 2026 cmd\nTraceback (most recent call last):\n  ...\nValueError: bad\n")
    assert cell.error_line(log) == "ValueError: bad"


ENV = {"PATH": "/usr/bin:/bin", "STILTS_WORKER": "0"}
RUNNER = f"""
import sys
from pathlib import Path
from stilts.engine import cell
cell.run_command(sys.argv[1], Path(sys.argv[2]), {ENV}, Path(sys.argv[2]) / "log")
"""


def _pid(path: Path) -> int:
    deadline = time.monotonic() + 60
    while not (path.is_file() and path.read_text().strip()):
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.1)
    return int(path.read_text())


def test_a_cell_without_the_warm_server_dies_with_its_worker(tmp_path):
    """A worker process SIGKILLed mid-cell: the guard kills the cell's whole process group."""
    cmd = "sleep 300 & echo $! > pid; wait"
    worker = subprocess.Popen([sys.executable, "-c", RUNNER, cmd, str(tmp_path)])
    try:
        sleeper = psutil.Process(_pid(tmp_path / "pid"))
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        psutil.wait_procs([sleeper], timeout=10)
        assert not sleeper.is_running() or sleeper.status() == psutil.STATUS_ZOMBIE
    finally:
        worker.kill()


def _gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_the_head_stops_a_studys_running_cells(tmp_path):
    """A signal to the head: `client.run(cell.stop, study)` stops that study's cells on each worker (SIGTERM to
    the command's group, which a cell answers by saving its state) and returns once they have ended."""
    codes = []
    runner = threading.Thread(target=lambda: codes.append(cell.run_command(
        "echo $$ > pid; exec sleep 300", tmp_path, ENV, tmp_path / "log", study="s1")))
    runner.start()
    sleeper = _pid(tmp_path / "pid")
    assert cell.stop("s2") == 0 and not _gone(sleeper)  # another study's cells stay
    start = time.monotonic()
    assert cell.stop("s1") == 1
    runner.join(60)
    assert codes == [128 + signal.SIGTERM] and time.monotonic() - start < 30
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.wait_procs([psutil.Process(sleeper)], timeout=10)
    assert _gone(sleeper)
    assert cell.run_command("echo hi; exit 3", tmp_path, ENV, tmp_path / "log") == 3
    assert "hi" in (tmp_path / "log").read_text()


def test_a_closed_study_starts_no_new_cell_and_its_running_cell_finishes(tmp_path):
    """After a stage failed the head closes the study on every worker (`cell.close`): a cell already running
    finishes (and is recorded); one handed over later does not start and leaves no log, so nothing runs that
    the head would not record."""
    codes = []
    runner = threading.Thread(target=lambda: codes.append(cell.run_command(
        "echo $$ > pid; sleep 1; echo done", tmp_path, ENV, tmp_path / "running.log", study="closing")))
    runner.start()
    _pid(tmp_path / "pid")
    cell.close("closing")
    with pytest.raises(cell.NotStarted):
        cell.run_command("echo late", tmp_path, ENV, tmp_path / "late.log", study="closing")
    runner.join(60)
    assert codes == [0] and "done" in (tmp_path / "running.log").read_text()
    assert not (tmp_path / "late.log").exists()
    assert cell.run_command("exit 0", tmp_path, ENV, tmp_path / "other.log", study="open") == 0


@pytest.mark.parametrize("argv, message", [
    (["study", "--jobs", "2"], "add --cluster local"),
    (["study", "--cluster", "tcp://127.0.0.1:1", "--jobs", "2"], "--jobs, --devices and --cells-per-gpu are for"),
    (["study", "--cluster", "tcp://127.0.0.1:1", "--cells-per-gpu", "2"], "--nthreads K --resources GPU=K"),
    (["study", "--cluster", "locla"], "'locla' is not local, slurm or tcp://HOST:PORT"),
    (["study", "--cluster", "local", "--cells-per-gpu", "2"], "name them with --devices"),
    (["study", "--cluster", "local", "--devices", "0", "--jobs", "2"], "--jobs counts CPU workers: use one"),
    (["study", "--cluster", "local", "--dashboard"], "--dashboard needs bokeh"),
    (["study", "--cluster", "tcp://127.0.0.1:1"], "pass --tracking-uri"),
    (["study", "--cluster", "local", "--tracking-uri", "http://127.0.0.1:1"], "does not answer (connection refused)"),
])
def test_study_command_line_errors(tiny_model, tmp_path, monkeypatch, capsys, argv, message):
    if "bokeh" in message and importlib.util.find_spec("bokeh"):
        pytest.skip("bokeh is installed here")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict(tiny_model)))
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "dvc.yaml").exists()  # refused before writing anything


def test_local_cluster_refuses_a_non_shared_filesystem(tiny_model, tmp_path, monkeypatch, capsys):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict(
        tiny_model, cluster={"shared_filesystem": False})))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["study", "--cluster", "local"]) == 2
    assert "set cluster.shared_filesystem: true" in capsys.readouterr().err


def test_without_a_shared_filesystem_the_head_refuses_uncommitted_study_files(make_params, tmp_path):
    params = make_params(cluster={"shared_filesystem": False})
    remote = transport.DvcRemote(params)
    with pytest.raises(StiltsError, match="not a git repository"):
        remote._check_clean(tmp_path)
    git(tmp_path, "init", "-q")
    pipeline.write(params)
    git(tmp_path, "add", "params.yaml")
    git(tmp_path, "commit", "-q", "-m", "params")
    with pytest.raises(StiltsError, match=r"^dvc.yaml: not committed to git; workers check out commit"):
        remote._check_clean(tmp_path)
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "pipeline")
    assert len(remote._check_clean(tmp_path)) == 40
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")  # lock files are the study's own output
    git(tmp_path, "add", "dvc.lock")
    git(tmp_path, "commit", "-q", "-m", "lock")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    remote._check_clean(tmp_path)
    (tmp_path / "params.yaml").write_text((tmp_path / "params.yaml").read_text() + "\n# edited\n")
    with pytest.raises(StiltsError, match=r"^params.yaml: uncommitted changes"):
        remote._check_clean(tmp_path)


def test_lock_entries_round_trip(tmp_path):
    a, b = "pipelines/a/dvc.yaml", "dvc.yaml"
    s1 = {"cmd": "x", "outs": [{"path": "o", "md5": "1"}]}
    transport.write_locks(tmp_path, {"s1": (a, s1), "t": (b, {"cmd": "z"})})
    transport.write_locks(tmp_path, {"s2": (a, {"cmd": "y"})})
    assert transport.read_lock(tmp_path, a) == {"s1": s1, "s2": {"cmd": "y"}}
    assert transport.read_lock(tmp_path, b) == {"t": {"cmd": "z"}}
    assert yaml.safe_load((tmp_path / "pipelines/a/dvc.lock").read_text())["schema"] == "2.0"


def test_local_cluster_listens_on_loopback_only():
    with clusters.open_cluster("local", clusters.Options(jobs=1)) as opened:
        assert opened.address.startswith("tcp://127.0.0.1:")
        me = psutil.Process()
        listening = {c.laddr.ip for p in [me, *me.children(recursive=True)]
                     for c in p.net_connections("inet") if c.status == "LISTEN"}
        assert listening == {"127.0.0.1"}


def test_cells_get_the_threads_their_cluster_gives_and_no_dask_malloc_threshold(monkeypatch):
    monkeypatch.setenv("STILTS_WORKER", "0")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("STILTS_CELL_THREADS", "4")  # as the local and SLURM clusters set it
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # as Dask's nanny sets it
    cell.CellWorker().setup(None)
    assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "4"
    assert "MALLOC_TRIM_THRESHOLD_" not in os.environ  # it made training 1.8× slower
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "12345")  # the user's own value stays
    monkeypatch.delenv("STILTS_CELL_THREADS")
    cell.CellWorker().setup(None)
    assert os.environ["OMP_NUM_THREADS"] == "4" and os.environ["MALLOC_TRIM_THRESHOLD_"] == "12345"


def test_a_cell_that_does_not_stop_is_killed_after_the_grace_period(tmp_path):
    """The worker goes: SIGTERM to the cell's group, SIGKILL once STILTS_STOP_GRACE_S has passed."""
    env = ENV | {"STILTS_STOP_GRACE_S": "2"}
    guard = subprocess.Popen([sys.executable, "-m", "stilts.engine.guard", "/bin/sh", "-c",
                              "trap '' TERM; echo $$ > pid; while :; do sleep 0.1; done"],
                             stdin=subprocess.PIPE, cwd=tmp_path, env=env)
    shell = _pid(tmp_path / "pid")
    start = time.monotonic()
    guard.stdin.close()
    assert guard.wait(30) == 128 + signal.SIGKILL and 2 <= time.monotonic() - start < 20
    assert _gone(shell)


def test_guard_passes_the_exit_code_while_its_stdin_stays_open():
    proc = subprocess.Popen([sys.executable, "-m", "stilts.engine.guard", "sh", "-c", "exit 7"], stdin=subprocess.PIPE)
    assert proc.wait(60) == 7
    proc.stdin.close()


@pytest.mark.parametrize("env, job", [({"SLURM_JOB_ID": "41"}, "41"),
                                      ({"SLURM_JOB_ID": "42", "SLURM_ARRAY_JOB_ID": "40", "SLURM_ARRAY_TASK_ID": "2"},
                                       "40_2")])
def test_a_cell_stopped_by_sigusr1_under_slurm_requeues_its_job(tmp_path, monkeypatch, env, job):
    """As Lightning's SLURMEnvironment does: `scontrol requeue` the job (an array task by its array id)."""
    fake = tmp_path / "scontrol"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'calls'}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    for k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    cell.requeue_slurm_job()
    assert (tmp_path / "calls").read_text() == f"requeue {job}\n"
    monkeypatch.setitem(cell._running, "study", {object()})  # a cell runs: it requeues once it has saved
    assert not cell.requeue_slurm_job_if_idle()
    monkeypatch.setitem(cell._running, "study", set())  # none runs: the warning requeues the job at once
    assert cell.requeue_slurm_job_if_idle()
    assert (tmp_path / "calls").read_text() == f"requeue {job}\nrequeue {job}\n"


def test_a_killed_dvc_left_as_a_zombie_no_longer_blocks_the_next_repro(tmp_path):
    """Where nothing reaps orphans, a SIGKILLed `dvc` stays a zombie whose pid DVC's rwlock still names."""
    import json as json_

    from stilts.stages import mend_rwlock

    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        deadline = time.monotonic() + 10
        while psutil.Process(pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.01)
        lock = tmp_path / ".dvc" / "tmp" / "rwlock"
        lock.parent.mkdir(parents=True)
        alive = {"pid": os.getpid(), "cmd": "dvc status"}
        lock.write_text(json_.dumps({"read": {"data/a": [{"pid": pid, "cmd": "dvc repro"}, alive]},
                                     "write": {"models/m": {"pid": pid, "cmd": "dvc repro"}}}))
        mend_rwlock(tmp_path)
        assert json_.loads(lock.read_text()) == {"read": {"data/a": [alive]}, "write": {}}
    finally:
        os.waitpid(pid, 0)


def test_after_a_failure_every_cell_that_ran_is_recorded(tmp_path, monkeypatch):
    """A stage fails while another runs; that one finishes before the head acts on the failure (the head is
    made slow here). It ran, so it is recorded: the cancel after a failure takes only what no worker was
    handed. A stage downstream of it is not started."""
    from distributed import Client, LocalCluster

    from stilts.engine import runner
    from stilts.stages import Stage

    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    plan = [Stage("bad", "dvc.yaml", "exit 2", [], downstream=2),
            Stage("slow", "dvc.yaml", "sleep 0.5; touch ran-slow", [], downstream=1),
            Stage("after", "dvc.yaml", "touch ran-after", [], inputs=["slow"], upstream=["slow"])]
    acting = runner.Study._stop_new_starts
    monkeypatch.setattr(runner.Study, "_stop_new_starts", lambda self: (time.sleep(1.5), acting(self)))
    params = type("Params", (), {"root": tmp_path})()
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,  # in-process: no socket
                      dashboard_address=None) as cluster, Client(cluster) as client:
        study = runner.Study(params, client, plan, {"shared": True, "root": str(tmp_path)}, False, None)
        study.run()
    assert [f.stage for f in study.failures] == ["bad"]
    assert set(study.results) == {"slow"} and (tmp_path / "ran-slow").exists()
    assert not (tmp_path / "ran-after").exists()
