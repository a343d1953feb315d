"""The only module that talks to MLflow: tracking URI, experiment, tags, run lifecycle, queries.

Tags are the interface the analysis reads:
  stilts.role     intermediate | target | probe | sweep | analysis | ranking | selection
  stilts.source   intermediate task, or "none" for the baseline
  stilts.task, stilts.restart, stilts.cell (a stable id of the cell), stilts.dvc_stage
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

from stilts.io import writing
from stilts.tracking.service import step_write_s
from stilts.tracking.store import client_for, experiment_id, retry, unless_missing

TAG = "stilts."
GIT_TIMEOUT_S = 10  # `git rev-parse HEAD` at each run's start: milliseconds where the disk answers


def tracking_uri(params) -> str:
    return uri_for(params.root)


def uri_for(root) -> str:
    """$MLFLOW_TRACKING_URI, else the sqlite store of the project in `root`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path(root) / 'mlflow.db').resolve()}"


def git_commit(root: Path) -> str | None:
    """The commit checked out in `root`'s git repository (a sha-1 or sha-256 name); None outside one, before
    its first commit, without git, or when git has not answered within GIT_TIMEOUT_S (said on stderr)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=GIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        print(f"stilts: {root}: `git rev-parse HEAD` did not end within {GIT_TIMEOUT_S} s; the run is not tagged "
              "with the commit", file=sys.stderr)
        return None
    except OSError:
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", sha) else None


def _tag(key: str) -> str:
    return key if key.startswith(("mlflow.", TAG)) else f"{TAG}{key}"


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


class Run:
    """One MLflow run, logged through the client API (no global fluent state)."""

    def __init__(self, client, run_id: str):
        self.client, self.id = client, run_id
        self.pending: list = []  # step metrics from `log_step`, not yet written
        self._written_at = time.monotonic()
        self.write_every_s = step_write_s()

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in _flatten(params).items()]
        for i in range(0, len(items), 100):
            retry(self.client.log_batch, self.id, params=items[i:i + 100])

    def log_metrics(self, metrics: dict, step: int = 0, model_id: str | None = None,
                    dataset: tuple[str, str] | None = None) -> None:
        """Metrics at `step`; with `model_id` they are also the logged model's, with `dataset` (name, digest)
        they are linked to the dataset they were measured on."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        name, digest = dataset or (None, None)
        items = [Metric(k, float(v), now, step, model_id=model_id, dataset_name=name, dataset_digest=digest,
                        run_id=self.id) for k, v in metrics.items() if v is not None]
        for i in range(0, len(items), 500):
            retry(self.client.log_batch, self.id, metrics=items[i:i + 500])

    def log_step(self, metrics: dict, step: int) -> None:
        """A training step's metrics, kept and written together every STILTS_STEP_WRITE_S seconds (default 5;
        0: at every step): one request for many steps, so many cells logging every step do not each send a
        request per step. A write the store refuses is not retried here (training goes on); its metrics stay
        for the next one. `flush()` writes what is left (before a state is saved, and when the run ends).

        MLflow's own asynchronous logging is not used: ending a run that used it waits up to a second
        for MLflow's logging thread to stop, at every cell."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
        if time.monotonic() - self._written_at >= self.write_every_s:
            with contextlib.suppress(Exception):  # the store was busy or away: kept for the next write
                self._write_pending(self.client.log_batch)

    def flush(self) -> None:
        """Write every step metric kept so far, retried while the store cannot answer."""
        self._write_pending(functools.partial(retry, self.client.log_batch))

    def _write_pending(self, log_batch) -> None:
        self._written_at = time.monotonic()
        while self.pending:
            log_batch(self.id, metrics=self.pending[:1000])  # MLflow's most metrics in one request
            del self.pending[:1000]

    def set_tags(self, tags: dict) -> None:
        from mlflow.entities import RunTag

        retry(self.client.log_batch, self.id, tags=[RunTag(_tag(k), str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        with writing(self._artifact(artifact_path or Path(path).name)):
            self.client.log_artifact(self.id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        with writing(self._artifact(artifact_file)):
            self.client.log_text(self.id, text, artifact_file)

    def _artifact(self, name: str) -> str:
        return f"artifact {name} of run {self.id}"

    @property
    def experiment_id(self) -> str:
        return retry(self.client.get_run, self.id).info.experiment_id

    def finish(self, status: str = "FINISHED") -> None:
        self.flush()
        retry(self.client.set_terminated, self.id, status)


def start_run(params, name: str, tags: dict, experiment: str | None = None) -> Run:
    """Create a run in `mlflow.experiment`. Under `mlflow run`, it becomes a child of the entry point's run."""
    client = client_for(tracking_uri(params))
    exp_id = experiment_id(client, experiment or params.mlflow.experiment)
    all_tags = {_tag(k): str(v) for k, v in tags.items()}
    commit = git_commit(params.root)
    if commit:
        all_tags["mlflow.source.git.commit"] = commit
    if os.environ.get("DVC_STAGE"):
        all_tags[f"{TAG}dvc_stage"] = os.environ["DVC_STAGE"]
    # `mlflow run` exports MLFLOW_RUN_ID for its own run; starting ours with it would log into that run.
    parent = os.environ.get("MLFLOW_RUN_ID")
    if parent and "mlflow.parentRunId" not in all_tags:
        all_tags["mlflow.parentRunId"] = parent
    _claim_entry_run(client)
    run = retry(client.create_run, exp_id, tags=all_tags, run_name=name)
    return Run(client, run.info.run_id)


def end_stale_runs(params, cell: str, keep: str | None = None, experiment: str | None = None) -> int:
    """Mark RUNNING runs of `cell` left by killed processes as KILLED (except `keep`, being resumed), and
    the entry point runs (`mlflow run`) they were children of, when those were left RUNNING too."""
    runs = search_runs(params, experiment, f"tags.`stilts.cell` = '{cell}' and attributes.status = 'RUNNING'")
    if runs.empty:
        return 0
    client = client_for(tracking_uri(params))
    stale = [r for r in runs["run_id"] if r != keep]
    for run_id in stale:
        _end_stale_parent(client, run_id)
        end_killed(client, run_id, "the process running this cell was killed; superseded by a rerun")
    return len(stale)


def end_killed(client, run_id: str, why: str) -> None:
    """End a run whose process was stopped as KILLED, tagged with why (`stilts.error`)."""
    run = Run(client, run_id)
    run.set_tags({"error": why})
    run.finish("KILLED")


def _abandoned(run) -> bool:
    """Whether an entry point run (tagged by `claim_entry_run`) was left by its process: that process is
    gone from this host, or it ran on another host (where the same entry point ran again meanwhile).
    Runs stilts did not tag (a user's own parent run, say) are never judged abandoned."""
    import socket

    tags = run.data.tags
    if not tags.get(f"{TAG}pid", "").isdigit():
        return False
    if tags.get(f"{TAG}host") != socket.gethostname():
        return True
    try:
        os.kill(int(tags[f"{TAG}pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


def _end_stale_parent(client, run_id: str) -> None:
    """End the parent of a stale or resumed cell run when it is an abandoned entry point run."""
    parent_id = retry(client.get_run, run_id).data.tags.get("mlflow.parentRunId")
    if not parent_id or parent_id == os.environ.get("MLFLOW_RUN_ID"):
        return
    parent = unless_missing(client.get_run, parent_id)  # None: deleted, or a run of another store
    if parent is not None and parent.info.status == "RUNNING" and _abandoned(parent):
        end_killed(client, parent_id, "the process running this entry point was killed; superseded by a rerun")


_CLAIMED: set = set()


def _claim_entry_run(client) -> None:
    """Under `mlflow run` (once per process): tag the entry point's run with what it runs and the process
    running it (set by stilts.mlproject: STILTS_ENTRY_POINT, STILTS_ENTRY_PID), and end as KILLED earlier
    runs of the same entry point that were left RUNNING by killed processes."""
    import socket

    run_id, entry = os.environ.get("MLFLOW_RUN_ID"), os.environ.get("STILTS_ENTRY_POINT")
    if not run_id or not entry or run_id in _CLAIMED:
        return
    _CLAIMED.add(run_id)
    entry = re.sub(r"[^\w./ -]", "_", entry)  # it goes into a filter string
    Run(client, run_id).set_tags({"entry_point": entry, "host": socket.gethostname(),
                                  "pid": os.environ.get("STILTS_ENTRY_PID", os.getpid())})
    exp_id = retry(client.get_run, run_id).info.experiment_id
    found = retry(client.search_runs, [exp_id], f"tags.`stilts.entry_point` = '{entry}' and "
                   "attributes.status = 'RUNNING'", max_results=1000)
    for r in found:
        if r.info.run_id != run_id and _abandoned(r):
            end_killed(client, r.info.run_id, "the process running this entry point was killed; "
                        "superseded by a rerun")


def set_parent(params, run_id: str, parent_id: str) -> None:
    """Make a run a child of another (a selection's cells of the selection's run)."""
    Run(client_for(tracking_uri(params)), run_id).set_tags({"mlflow.parentRunId": parent_id})


def run_status(params, run_id: str | None) -> str | None:
    """RUNNING, FINISHED, FAILED, KILLED; None for a run that is not in the store (deleted, or another
    store's). A store that cannot be asked is asked again (`store.retry`), then its error is raised."""
    if not run_id:
        return None
    run = unless_missing(client_for(tracking_uri(params)).get_run, run_id)
    return run.info.status if run is not None else None


def resume_run(params, run_id: str) -> Run | None:
    """Reopen the run of a cell whose training resumes from saved state (None if the store says it is not
    there: deleted, or another store's; one that cannot be asked is asked again, then its error is raised)."""
    client = client_for(tracking_uri(params))
    if unless_missing(client.get_run, run_id) is None:
        return None
    _claim_entry_run(client)
    _end_stale_parent(client, run_id)
    retry(client.update_run, run_id, status="RUNNING")
    run = Run(client, run_id)
    run.set_tags({"resumed": "true"})
    if os.environ.get("MLFLOW_RUN_ID"):  # resumed under another `mlflow run`: a child of that one now
        run.set_tags({"mlflow.parentRunId": os.environ["MLFLOW_RUN_ID"]})
    return run


@contextlib.contextmanager
def tracked(params, name: str, tags: dict, experiment: str | None = None, resume_id: str | None = None):
    """A run that ends FINISHED on success and FAILED (with the error recorded) on any exception.
    With `resume_id`, that run is reopened instead of starting a new one."""
    run = (resume_run(params, resume_id) if resume_id else None) or start_run(params, name, tags, experiment)
    try:
        yield run
    except BaseException as e:
        _end_on_error(run, e)
        raise
    run.finish("FINISHED")


def _end_on_error(run: Run, e: BaseException) -> None:
    """A run stopped by a signal ends KILLED, tagged `stilts.interrupted` (its cell's rerun resumes it);
    one that failed ends FAILED with the error as `stilts.error` and its traceback as error.txt."""
    from stilts.stop import Interrupted

    with contextlib.suppress(Exception):
        if isinstance(e, Interrupted):
            run.set_tags({"interrupted": e.signal})
        else:
            run.set_tags({f"{TAG}error": f"{type(e).__name__}: {e}"[:5000]})
            run.client.log_text(run.id, traceback.format_exc(), "error.txt")
    with contextlib.suppress(Exception):
        run.finish("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")


def search_runs(params, experiment: str | None = None, filter_string: str = ""):
    """All runs of the experiment as a pandas DataFrame, in mlflow.search_runs' layout
    (run_id, status, start_time, end_time, params.*, metrics.*, tags.*; params and tags are strings).

    Uses the client, not the fluent API: mlflow.set_tracking_uri would change process-global state
    (and the MLFLOW_TRACKING_URI seen by later code and child processes)."""
    import pandas as pd

    client = client_for(tracking_uri(params))
    exp = retry(client.get_experiment_by_name, experiment or params.mlflow.experiment)
    if exp is None:
        return pd.DataFrame()
    rows, token = [], None
    while True:
        page = retry(client.search_runs, [exp.experiment_id], filter_string, max_results=5000, page_token=token)
        for r in page:
            row = {"run_id": r.info.run_id, "status": r.info.status,
                   "start_time": pd.to_datetime(r.info.start_time, unit="ms", utc=True),
                   "end_time": pd.to_datetime(r.info.end_time, unit="ms", utc=True) if r.info.end_time else pd.NaT}
            row |= {f"params.{k}": v for k, v in r.data.params.items()}
            row |= {f"metrics.{k}": v for k, v in r.data.metrics.items()}
            row |= {f"tags.{k}": v for k, v in r.data.tags.items()}
            rows.append(row)
        token = page.token
        if not token:
            break
    return pd.DataFrame(rows)


def experiment_exists(params, name: str) -> bool:
    uri = tracking_uri(params)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        return False  # no store yet: nothing exists, and asking would create one
    return client_for(uri).get_experiment_by_name(name) is not None
