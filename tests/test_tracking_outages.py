"""A tracking store that cannot answer for a moment is asked again; only its answer "not found" means a run or
result is gone. Each outage here is what MLflow raises: sqlite locked by another writer, a server that is down
(MLflow's own HTTP retries spent), a proxy answering 502."""

import http.server
import socket
import sqlite3
import threading

import pytest

from stilts import tracking
from stilts.tracking import store, twins


def _server_down():
    from mlflow.tracking import MlflowClient

    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return MlflowClient(f"http://127.0.0.1:{port}").get_run("0" * 32)


def _bad_gateway():
    from mlflow.tracking import MlflowClient

    class BadGateway(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(502)
            self.end_headers()
            self.wfile.write(b"Bad Gateway")

        def log_message(self, *args):
            pass

    with http.server.HTTPServer(("127.0.0.1", 0), BadGateway) as proxy:
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        try:
            return MlflowClient(f"http://127.0.0.1:{proxy.server_port}").get_run("0" * 32)
        finally:
            proxy.shutdown()


def _sqlite_locked():
    from sqlalchemy.exc import OperationalError

    raise OperationalError("SELECT runs.run_uuid FROM runs", {}, sqlite3.OperationalError("database is locked"))


@pytest.fixture(scope="module")
def outages() -> list[Exception]:
    """The exceptions MLflow raises in these outages (HTTP: after its own retries, none here)."""
    raised = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        for outage in (_sqlite_locked, _server_down, _bad_gateway):
            with pytest.raises(Exception) as error:
                outage()
            raised.append(error.value)
    return raised


def fail_twice(monkeypatch, client, method: str, error: Exception, only: str | None = None) -> list:
    """`client.method` raises `error` at its first two calls (for run `only`, when given), then answers."""
    real, failed = getattr(client, method), []

    def flaky(*args, **kwargs):
        if len(failed) < 2 and only in (None, args[0]):
            failed.append(args[0])
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(client, method, flaky)
    return failed


def _client(params):
    return store.client_for(tracking.tracking_uri(params))


def test_the_outages_are_transient_and_not_found_is_not(outages):
    from mlflow.exceptions import MlflowException, RestException

    assert all(store.transient(e) and not store.missing(e) for e in outages)
    gone = RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Run with id=x not found"})
    refused = RestException({"error_code": "PERMISSION_DENIED", "message": "no"})
    assert store.missing(gone) and not store.transient(gone)
    assert not store.transient(refused) and not store.missing(refused)
    assert not store.transient(MlflowException("Invalid value for metric 'x'", error_code=1000))


def test_a_run_is_resumed_through_an_outage(make_params, monkeypatch, outages):
    params = make_params()
    tags = {"cell": "none/syn_rte/r0", "role": "target"}
    earlier = tracking.start_run(params, "cell", tags)
    earlier.finish("KILLED")  # stopped by a signal: its saved state resumes it
    for outage in outages:
        with monkeypatch.context() as mp:
            failed = fail_twice(mp, _client(params), "get_run", outage)
            with tracking.tracked(params, "cell", tags, resume_id=earlier.id) as run:
                assert run.id == earlier.id
        assert failed == [earlier.id, earlier.id]
    runs = tracking.search_runs(params)
    assert list(runs["run_id"]) == [earlier.id]  # no new run
    assert runs["status"].iloc[0] == "FINISHED" and runs["tags.stilts.resumed"].iloc[0] == "true"


def test_a_run_the_store_does_not_hold_is_not_resumed(make_params):
    params = make_params()
    with tracking.tracked(params, "cell", {"role": "target"}, resume_id="0" * 32) as run:
        assert run.id != "0" * 32
    assert tracking.run_status(params, "0" * 32) is None


def test_run_status_through_an_outage_and_a_store_that_stays_away(make_params, monkeypatch, outages):
    params = make_params()
    run = tracking.start_run(params, "cell", {"role": "target"})
    for outage in outages:
        with monkeypatch.context() as mp:
            failed = fail_twice(mp, _client(params), "get_run", outage)
            assert tracking.run_status(params, run.id) == "RUNNING"
        assert len(failed) == 2

    def away(*args, **kwargs):
        raise outages[0]

    monkeypatch.setattr(_client(params), "get_run", away)
    monkeypatch.setattr(store.time, "sleep", lambda s: None)  # the backoff's waits
    with pytest.raises(type(outages[0])):  # could not ask: not "the run is gone"
        tracking.run_status(params, run.id)
    with pytest.raises(type(outages[0])):
        tracking.resume_run(params, run.id)


def test_an_abandoned_parent_is_ended_through_an_outage(make_params, monkeypatch, outages):
    params = make_params()
    for i, outage in enumerate(outages):
        parent = tracking.start_run(params, "entry", {"role": "entry"})
        parent.set_tags({"entry_point": "main", "host": "another-host", "pid": "4242"})  # its process is gone
        child = tracking.start_run(params, "cell", {"cell": f"c{i}", "role": "target",
                                                    "mlflow.parentRunId": parent.id})
        with monkeypatch.context() as mp:
            failed = fail_twice(mp, _client(params), "get_run", outage, only=parent.id)
            assert tracking.end_stale_runs(params, f"c{i}") == 1
        assert failed == [parent.id, parent.id]
        assert tracking.run_status(params, parent.id) == tracking.run_status(params, child.id) == "KILLED"


def test_a_finished_twin_is_found_through_an_outage(make_params, monkeypatch, outages):
    params = make_params()
    cell, fingerprint = "none/syn_rte/r0", "f" * 64
    twin = tracking.start_run(params, "target:none->syn_rte:r0", {"cell": cell, "role": "target"})
    twin.log_params({"fingerprint": fingerprint})
    twins.log_result(twin, {"score": 0.75, "mlflow_run_id": twin.id})
    twin.finish()
    for outage in outages:
        with monkeypatch.context() as mp:
            searched = fail_twice(mp, _client(params), "search_runs", outage)
            downloaded = fail_twice(mp, _client(params), "download_artifacts", outage)
            assert twins.finished_twin(params, cell, "target", fingerprint) == {"score": 0.75,
                                                                                "mlflow_run_id": twin.id}
        assert len(searched) == 2 and downloaded == [twin.id, twin.id]


def test_a_finished_run_without_a_result_is_no_twin(make_params):
    params = make_params()
    run = tracking.start_run(params, "target:none->syn_rte:r0", {"cell": "none/syn_rte/r0", "role": "target"})
    run.log_params({"fingerprint": "f" * 64})
    run.finish()  # a run from before results were logged: the store answers that the artifact is not there
    assert twins.finished_twin(params, "none/syn_rte/r0", "target", "f" * 64) is None


def test_step_metrics_are_written_in_batches_and_kept_through_an_outage(make_params, monkeypatch, outages):
    monkeypatch.delenv("STILTS_STEP_WRITE_S", raising=False)  # the default: every 5 s
    params = make_params()
    run = tracking.start_run(params, "cell", {"role": "target"})
    clock, down, writes = [0.0], [False], []
    monkeypatch.setattr(tracking.time, "monotonic", lambda: clock[0])
    run._written_at = 0.0
    real = _client(params).log_batch

    def log_batch(run_id, metrics=(), **kwargs):
        if down[0]:
            raise outages[1]
        writes.append(sorted({m.step for m in metrics}))
        return real(run_id, metrics=metrics, **kwargs)

    monkeypatch.setattr(_client(params), "log_batch", log_batch)
    for step, (at, away) in enumerate([(0, False), (1, False), (5, False), (10, True), (12, False),
                                       (15, False), (16, False)], start=1):
        clock[0], down[0] = at, away
        run.log_step({"train_loss": 1.0 / step, "lr": 0.1}, step)  # an outage does not stop training
    run.finish()
    assert writes == [[1, 2, 3], [4, 5, 6], [7]]  # every 5 s; what the outage refused went with the next
    history = _client(params).get_metric_history(run.id, "train_loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4, 5, 6, 7]
    assert tracking.run_status(params, run.id) == "FINISHED"


def test_step_metrics_written_at_every_step_when_asked_and_a_bad_setting_is_one_line(make_params, monkeypatch):
    from stilts.errors import StiltsError
    from stilts.tracking import service

    params = make_params()
    monkeypatch.setenv("STILTS_STEP_WRITE_S", "0")
    run = tracking.start_run(params, "cell", {"role": "target"})
    for step in (1, 2):
        run.log_step({"train_loss": 1.0 / step}, step)
        assert [m.step for m in _client(params).get_metric_history(run.id, "train_loss")] == list(range(1, step + 1))
    run.finish()
    monkeypatch.setenv("STILTS_STEP_WRITE_S", "often")
    with pytest.raises(StiltsError, match=r"^STILTS_STEP_WRITE_S='often': must be a number of seconds >= 0$"):
        service.check_store(tracking.tracking_uri(params))  # every logging command checks it before any run
