"""The only module that talks to MLflow: tracking URI, experiment, tags, run lifecycle, queries.

Tags are the interface the analysis reads:
  stilts.role     intermediate | target | probe | sweep | analysis
  stilts.source   intermediate task, or "none" for the baseline
  stilts.task, stilts.restart, stilts.cell (a stable id of the cell), stilts.dvc_stage
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import traceback
from pathlib import Path

from stilts.errors import StiltsError

TAG = "stilts."


def tracking_uri(params) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path(params.root) / 'mlflow.db').resolve()}"


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _experiment_id(client, name: str) -> str:
    for attempt in range(5):
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                client.restore_experiment(exp.experiment_id)
            return exp.experiment_id
        try:
            return client.create_experiment(name)
        except Exception:  # another process created it first; look it up again
            time.sleep(0.2 * (attempt + 1))
    raise StiltsError(f"mlflow.experiment: could not create or find experiment '{name}'")


def git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


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

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in _flatten(params).items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.id, params=items[i:i + 100])

    def log_metrics(self, metrics: dict, step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.id, metrics=items[i:i + 500])

    def set_tags(self, tags: dict) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.id, tags=[RunTag(_tag(k), str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.id, status)


def start_run(params, name: str, tags: dict, experiment: str | None = None) -> Run:
    """Create a run in `mlflow.experiment`. Under `mlflow run`, it becomes a child of the entry point's run."""
    client = _client(tracking_uri(params))
    exp_id = _experiment_id(client, experiment or params.mlflow.experiment)
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
    run = client.create_run(exp_id, tags=all_tags, run_name=name)
    return Run(client, run.info.run_id)


@contextlib.contextmanager
def tracked(params, name: str, tags: dict, experiment: str | None = None):
    """A run that ends FINISHED on success and FAILED (with the error recorded) on any exception."""
    run = start_run(params, name, tags, experiment)
    try:
        yield run
    except BaseException as e:
        with contextlib.suppress(Exception):
            run.set_tags({f"{TAG}error": f"{type(e).__name__}: {e}"[:5000]})
            run.client.log_text(run.id, traceback.format_exc(), "error.txt")
        with contextlib.suppress(Exception):
            run.finish("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    run.finish("FINISHED")


def search_runs(params, experiment: str | None = None, filter_string: str = ""):
    """All runs of the experiment as a pandas DataFrame, in mlflow.search_runs' layout
    (run_id, status, start_time, end_time, params.*, metrics.*, tags.*; params and tags are strings).

    Uses the client, not the fluent API: mlflow.set_tracking_uri would change process-global state
    (and the MLFLOW_TRACKING_URI seen by later code and child processes)."""
    import pandas as pd

    client = _client(tracking_uri(params))
    exp = client.get_experiment_by_name(experiment or params.mlflow.experiment)
    if exp is None:
        return pd.DataFrame()
    rows, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], filter_string, max_results=5000, page_token=token)
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
