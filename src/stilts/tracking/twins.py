"""Exactly one FINISHED run per cell.

A cell whose finished twin is in the store (same cell and role, same fingerprint: settings, data, starting
weights, seed, model) takes that run's result instead of training again: this is what happens when a worker
is lost after a cell finished but before its result was collected, and the cell is scheduled again.
A cell that does train again (other settings, or outputs that cannot be restored) supersedes the earlier
FINISHED runs of the cell when it finishes: they are tagged `stilts.superseded_by` with the run that
replaced them and stay FINISHED (they did finish; KILLED is for runs that were stopped). A restored twin
supersedes the others in the same way: its result is the cell's current one again.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from stilts import tracking
from stilts.tracking import store

RESULT_ARTIFACT = "stilts/result.json"
SUPERSEDED_BY = "stilts.superseded_by"
CELL_ROLES = ("intermediate", "target", "probe")  # sweep points share their cell id: they are not cells
RESTORABLE_ROLES = ("target", "probe")  # a checkpoint is not restored from its run: an intermediate cell retrains


def _cell_runs(params, cell: str, role: str, status: str, experiment: str | None = None):
    return tracking.search_runs(params, experiment, f"tags.`stilts.cell` = '{cell}' and "
                                f"tags.`stilts.role` = '{role}' and attributes.status = '{status}'")


def log_result(run, summary: dict) -> None:
    """The cell's result as an artifact of its run: what a twin restores without training."""
    run.log_text(json.dumps(summary, sort_keys=True, default=str), RESULT_ARTIFACT)


def finished_twin(params, cell: str, role: str, fingerprint: str, experiment: str | None = None) -> dict | None:
    """The result of the newest FINISHED run of this cell with this fingerprint, or None."""
    if role not in RESTORABLE_ROLES:
        return None
    runs = _cell_runs(params, cell, role, "FINISHED", experiment)
    if runs.empty or "params.fingerprint" not in runs:
        return None
    runs = runs[runs["params.fingerprint"] == fingerprint].sort_values("start_time", ascending=False)
    for run_id in runs["run_id"]:
        result = _read_artifact(params, run_id, RESULT_ARTIFACT)
        if result is not None:
            return json.loads(result)
    return None


def _read_artifact(params, run_id: str, path: str) -> str | None:
    """The artifact's text; None when the store says it is not there (a run from before results were logged).
    Artifacts out of reach are asked for again (`store.retry`), then their error is raised: the cell does not
    train again beside a finished twin it could not read."""
    client = store.client_for(tracking.tracking_uri(params))
    with tempfile.TemporaryDirectory() as tmp:
        local = store.unless_missing(client.download_artifacts, run_id, path, tmp)
        return Path(local).read_text() if local is not None else None


def supersede(params, cell: str, role: str, keep: str, experiment: str | None = None) -> int:
    """Tag the other FINISHED runs of `cell` `stilts.superseded_by` = `keep` (their status stays), and
    clear that tag from `keep` (a restored twin that an earlier run had superseded)."""
    if role not in CELL_ROLES:
        return 0
    runs = _cell_runs(params, cell, role, "FINISHED", experiment)
    if runs.empty:
        return 0
    by = runs.set_index("run_id")[f"tags.{SUPERSEDED_BY}"] if f"tags.{SUPERSEDED_BY}" in runs else {}
    client = store.client_for(tracking.tracking_uri(params))
    older = [r for r in runs["run_id"] if r != keep and by.get(r) != keep]
    for run_id in older:
        tracking.Run(client, run_id).set_tags({"superseded_by": keep})
    if isinstance(by.get(keep), str):
        store.retry(client.delete_tag, keep, SUPERSEDED_BY)
    return len(older)
