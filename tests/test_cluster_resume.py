"""A cell stopped on one worker resumes on another, without a shared filesystem: its saved training state
travels through the DVC remote (`stilts.remote_state`). Two `dask worker`s on 127.0.0.1, each in its own git
clone, a local-directory DVC remote, one `stilts server`."""

import json
import shutil
import signal

import pytest
from mlflow import MlflowClient

from tests.commands import BIN, runs_of, started, wait_for
from tests.dask_cluster import Processes, cell_children, results, start_server, two_workers

pytestmark = [pytest.mark.slow, pytest.mark.long, pytest.mark.timeout(1200)]
CELL, STAGE = "syn_nli/syn_nli/r0", "intermediate-syn_nli-r0"
STEPS, LOG_EVERY, EVAL_EVERY = 192, 2, 8  # TINY: 24 epochs of 8 batches, evaluated (and saved) every 8 steps


def logged_steps(uri: str, run_id: str) -> list[int]:
    return [m.step for m in MlflowClient(uri).get_metric_history(run_id, "train_loss")]


def test_a_cell_sigtermed_on_one_worker_resumes_on_the_other_from_its_saved_state(tmp_path_factory, tiny_model):
    base = tmp_path_factory.mktemp("resume-elsewhere")
    procs = Processes(base)
    try:
        uri = procs.uri = start_server(procs, base)
        made = two_workers(procs, tiny_model, tasks={"intermediate": ["syn_nli"], "target": ["syn_rte"], "probe": []})
        head, clones, address, workers = made["head"], made["clones"], made["address"], made["workers"]
        with started(head, BIN / "stilts", "study", "--cluster", address, "--tracking-uri", uri,
                     env=procs.env) as study:
            def half_way():
                r = runs_of(head, CELL, uri)
                return len(r) and max(logged_steps(uri, r["run_id"].iloc[0]) or [0]) >= STEPS // 2

            wait_for("the intermediate cell to reach half of its steps", half_way, every=0.1)
            victim = next(c for c in clones if (c / ".stilts" / "logs" / f"{STAGE}.log").is_file())
            for cell in cell_children(procs, victim):  # as SLURM signals every process of the job
                cell.send_signal(signal.SIGTERM)
            workers[victim.name].send_signal(signal.SIGTERM)
            stdout, stderr = study.communicate(timeout=600)
        assert study.returncode == 0, stderr[-3000:]
        assert workers[victim.name].wait(60) is not None
        other = next(c for c in clones if c != victim)
        assert "comes from the DVC remote" in (other / ".stilts" / "logs" / f"{STAGE}.log").read_text()

        run = runs_of(head, CELL, uri)
        assert list(run["status"]) == ["FINISHED"]  # the same run, resumed: not a second one
        assert run["tags.stilts.interrupted"].iloc[0] == "SIGTERM" and run["tags.stilts.resumed"].iloc[0] == "true"
        steps = logged_steps(uri, run["run_id"].iloc[0])
        assert sorted(set(steps)) == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
        assert len(steps) - len(set(steps)) <= EVAL_EVERY // LOG_EVERY  # at most one save interval repeated
        assert not [p for p in (base / "remote" / "stilts" / "state").rglob("*") if p.is_file()]  # cleared

        # the same stage uninterrupted, on one machine, from the study's own inputs: the same numbers and weights
        ref = base / "ref"
        procs.run(base, "git", "clone", "-q", str(head), str(ref))
        for lock in [head / "dvc.lock", *head.glob("pipelines/*/dvc.lock")]:
            shutil.copy2(lock, ref / lock.relative_to(head))
        procs.run(ref, "dvc", "pull", "--quiet")
        procs.run(ref, "dvc", "repro", "--force", "--single-item", f"pipelines/syn_nli/dvc.yaml:{STAGE}",
                  env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": uri})
        assert results(ref) == results(head)
        made = json.loads((ref / "models" / "intermediate" / "syn_nli" / "r0" / "stilts.json").read_text())
        assert made["steps"] == STEPS
    finally:
        procs.stop()
