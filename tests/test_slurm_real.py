"""`stilts study --cluster slurm` against a real SLURM (e.g. `sudo sh benchmarks/slurm_local.sh start`): a job
warned with SIGUSR1 before its walltime requeues itself and its cell resumes. Skipped where no SLURM answers."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.commands import BIN, run, runs, runs_of, wait_for
from tests.dask_cluster import Processes, project, start_server

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.long, pytest.mark.timeout(1500)]
CELL = "syn_nli/syn_nli/r0"  # the intermediate cell
# the intermediate cell trains 40 s or more on 2 CPUs (minutes on a loaded machine): once it trains, the job's
# walltime is cut to 2 minutes, so SLURM's next check (every 30 s or so) sends it the SIGUSR1 due 90 s before the end
TINY = {"task_overrides": {"syn_nli": {"epochs": 200}}, "train": {"eval_every": 8}}


def _slurm_answers() -> bool:
    if not shutil.which("sinfo"):
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def job_fields(job: str) -> dict:
    out = run(".", "scontrol", "show", "job", "-o", job, check=False, timeout=60).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def our_job(log_dir: Path) -> str | None:
    mine = [p.stem.rsplit("-", 1)[-1] for p in log_dir.glob("dask-worker-*.err")]
    return mine[0] if mine else None


@pytest.mark.skipif(not _slurm_answers(), reason="no SLURM controller answers (sinfo)")
def test_sigusr1_before_the_walltime_requeues_the_job_and_the_cell_resumes(tmp_path, tiny_model):
    procs = Processes(tmp_path)
    try:
        procs.uri = start_server(procs, tmp_path)
        root = project(procs, tmp_path / "head", tiny_model, None, **TINY)
        logs = tmp_path / "joblogs"
        (tmp_path / "dask").mkdir()
        (tmp_path / "dask" / "jobqueue.yaml").write_text(yaml.safe_dump({"jobqueue": {"slurm": {
            "cores": 2, "memory": "4GB", "walltime": "00:10:00", "interface": "lo",
            "python": f"srun --ntasks=1 {BIN / 'python'}", "log-directory": str(logs),
            "local-directory": str(tmp_path / "dask-scratch"),
            "job-extra-directives": ["--signal=USR1@90", "--requeue"]}}}))
        env = procs.env | {"DASK_CONFIG": str(tmp_path / "dask")}
        with open(tmp_path / "study.log", "wb") as out:
            head = subprocess.Popen([str(BIN / "stilts"), "study", "--cluster", "slurm", "--jobs", "1",
                                     "--tracking-uri", procs.uri], cwd=root, env=env, stdout=out, stderr=out)
        procs.procs.append(head)
        job = wait_for("the SLURM job", lambda: our_job(logs), timeout=120)

        def training():
            r = runs_of(root, CELL, procs.uri)
            return len(r) and "metrics.train_loss" in r and r["metrics.train_loss"].notna().any()

        wait_for("the intermediate cell to train", training, timeout=180, every=1)
        run(tmp_path, "scontrol", "update", f"JobId={job}", "TimeLimit=2", timeout=60)
        requeued = wait_for("the job requeued by its worker", lambda: (
            (f := job_fields(job)).get("Restarts") == "1" and f.get("JobState") == "PENDING" and f), timeout=120)
        cell_log = (root / ".stilts" / "logs" / "intermediate-syn_nli-r0.log").read_text()
        assert "stilts: stopped by SIGUSR1" in cell_log  # exit 75 (EX_TEMPFAIL): only then does the worker requeue
        stopped = runs_of(root, CELL, procs.uri)
        assert stopped[["status", "tags.stilts.interrupted"]].values.tolist() == [["KILLED", "SIGUSR1"]]
        # SLURM holds a requeued job (Reason=BeginTime) for about two minutes: start it now, and with a walltime
        # whose SIGUSR1 comes after the study (a real one's, hours long, would too; 2 minutes would warn again)
        assert requeued["Reason"] == "BeginTime"
        run(tmp_path, "scontrol", "update", f"JobId={job}", "StartTime=now", "TimeLimit=10", timeout=60)
        assert head.wait(timeout=600) == 0, (tmp_path / "study.log").read_text()[-3000:]
        assert job_fields(job).get("Restarts", "1") == "1"
        done = runs(root, procs.uri)
        assert len(done) == 6 and (done["status"] == "FINISHED").all()  # one FINISHED run per cell, the analysis
        resumed = runs_of(root, CELL, procs.uri)
        assert resumed[["status", "tags.stilts.interrupted", "tags.stilts.resumed"]].values.tolist() == [
            ["FINISHED", "SIGUSR1", "true"]]
        assert resumed["run_id"].tolist() == stopped["run_id"].tolist()  # the same run, continued
        cell_log = (root / ".stilts" / "logs" / "intermediate-syn_nli-r0.log").read_text()
        assert cell_log.count("stilts: stopped by SIGUSR1") == 1  # stopped once, then resumed
        assert len(re.findall("^--- ", cell_log, re.M)) == 2
        status = procs.run(root, "dvc", "status")
        assert "up to date" in status.stdout, status.stdout
    finally:
        if (logs := tmp_path / "joblogs").is_dir() and (job := our_job(logs)):
            run(tmp_path, "scancel", job, check=False, timeout=60)
        procs.stop()

