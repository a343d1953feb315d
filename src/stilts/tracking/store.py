"""The tracking store: one MLflow client per store and process (a new sqlite store made under a lock, in WAL
mode), retries while the store is busy, and the experiment a study logs to."""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path

from stilts.errors import StiltsError

# `mlflow ui` opens an experiment in the view its kind names: the machine-learning (model training) one, not
# the GenAI one (traces, prompts). The UI's own kind switch writes this value for "Machine learning".
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


_CLIENTS: dict = {}


def client_for(uri: str):
    """One client per store and process. A new sqlite store is created (schema migrations) under a
    file lock, so concurrent first writers do not race, and is switched to WAL so readers never block."""
    if uri in _CLIENTS:
        return _CLIENTS[uri]
    from mlflow.tracking import MlflowClient

    if not uri.startswith("sqlite:///"):
        _CLIENTS[uri] = MlflowClient(tracking_uri=uri)
        return _CLIENTS[uri]
    import fcntl
    import sqlite3

    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not db.exists():
                _create_sqlite_store(db)
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)  # opens (and checks) the schema now, under the lock
            with contextlib.closing(sqlite3.connect(db, timeout=60)) as con:
                con.execute("PRAGMA journal_mode=WAL")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _CLIENTS[uri] = client
    return client


def _create_sqlite_store(db: Path) -> None:
    """MLflow's tables are made in a side file renamed into place when complete: a process killed while
    they are made (dozens of migrations) leaves no half-made store behind, only a side file the next
    creation replaces. Runs under the store's lock, and only where the store does not exist."""
    import os

    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    part = db.with_name(f"{db.name}.creating")
    for leftover in (part, part.with_name(f"{part.name}-wal"), part.with_name(f"{part.name}-shm")):
        leftover.unlink(missing_ok=True)
    engine = sqlalchemy.create_engine(f"sqlite:///{part}")
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()
    with open(part, "rb") as f:
        os.fsync(f.fileno())
    # a write-ahead log without its store belongs to a deleted one (`rm mlflow.db` after a process ended
    # without closing it): sqlite would read it into the new store, bringing back its runs or malforming it
    for stale in (db.with_name(f"{db.name}-wal"), db.with_name(f"{db.name}-shm")):
        stale.unlink(missing_ok=True)
    os.replace(part, db)


def prepare_store(uri: str) -> None:
    """Create or migrate the store now (a new sqlite store under a lock, in WAL mode: see client_for)."""
    client_for(uri)


# sqlite busy with other writers; a tracking server whose database connections are all taken (a burst of cells),
# out of reach for a moment (MLflow's own HTTP retries ran out) or answering 5xx
TRANSIENT = ("locked", "busy", "queuepool limit", "max retries exceeded", "connection refused", "connection reset",
             "connection aborted", "timed out", "temporarily unavailable")
TRANSIENT_CODES = ("TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED")
SERVER_ERROR = re.compile(r"error code 5\d\d\b")  # MLflow's text for a 5xx answer that is not MLflow's JSON


def transient(e: Exception) -> bool:
    """Whether a tracking call failed because the store could not answer now (asking again may work)."""
    code = getattr(e, "error_code", None)
    if isinstance(e, ConnectionError | TimeoutError) or code in TRANSIENT_CODES:
        return True
    if code == "INTERNAL_ERROR" and type(e).__name__ == "RestException":  # a server's own 500
        return True
    text = str(e).lower()
    return any(w in text for w in TRANSIENT) or SERVER_ERROR.search(text) is not None


def missing(e: Exception) -> bool:
    """Whether the store answered that what was asked for (a run, an artifact) does not exist."""
    return getattr(e, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def retry(fn, *args, **kwargs):
    """Retry a tracking call while the store cannot answer (`transient`), backing off up to 5 s a try."""
    delay = 0.05
    for attempt in range(12):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # MlflowException wrapping sqlalchemy's OperationalError, or requests' errors
            if attempt == 11 or not transient(e):
                raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def unless_missing(fn, *args, **kwargs):
    """fn's answer (retried as `retry` does), or None when the store answers that it does not exist. Any
    other failure is raised: a store that could not be asked says nothing about what it holds."""
    try:
        return retry(fn, *args, **kwargs)
    except Exception as e:
        if missing(e):
            return None
        raise


def artifact_location(uri: str, name: str) -> str | None:
    """With a sqlite store, artifacts (models, predictions, reports) go beside the database, in
    mlruns/<experiment>/, wherever the process runs; a tracking server chooses its own."""
    if not uri.startswith("sqlite:///"):
        return None
    slug = re.sub(r"[^\w.-]", "_", name)
    return (Path(uri[len("sqlite:///"):]).resolve().parent / "mlruns" / slug).as_uri()


def experiment_id(client, name: str) -> str:
    for attempt in range(5):
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                client.restore_experiment(exp.experiment_id)
            for key, value in EXPERIMENT_KIND.items():  # made by an earlier stilts, or by hand: a kind chosen stays
                if key not in exp.tags:
                    retry(client.set_experiment_tag, exp.experiment_id, key, value)
            return exp.experiment_id
        try:
            return client.create_experiment(name, artifact_location=artifact_location(client.tracking_uri, name),
                                            tags=EXPERIMENT_KIND)
        except Exception:  # another process created it first; look it up again
            time.sleep(0.2 * (attempt + 1))
    raise StiltsError(f"mlflow.experiment: could not create or find experiment '{name}'")


def experiment_id_if_any(uri: str, name: str) -> str | None:
    """The id of experiment `name` in the store at `uri`, or None when it is not there (yet)."""
    exp = client_for(uri).get_experiment_by_name(name)
    return exp.experiment_id if exp is not None and exp.lifecycle_stage == "active" else None
