"""A new sqlite tracking store appears whole or not at all: a process killed while MLflow makes its tables
leaves no half-made store (the chaos test once hit 'duplicate column name: run_link' on the next cell)."""

import signal
import subprocess
import sys
import textwrap

from tests.commands import command_env

# the store's first migrations run, then the process stops in the middle of the rest until it is killed
CREATE_AND_HANG = textwrap.dedent("""
    import sys, time
    import mlflow.store.db.utils as db_utils
    def hang(engine):
        print("migrating", flush=True)
        time.sleep(600)
    db_utils._upgrade_db = hang
    from stilts.tracking.store import client_for
    client_for(sys.argv[1])
""")


def test_a_store_whose_creation_was_killed_is_made_anew_by_the_next_process(tmp_path):
    db = tmp_path / "tracking" / "mlflow.db"
    uri = f"sqlite:///{db}"
    proc = subprocess.Popen([sys.executable, "-c", CREATE_AND_HANG, uri], stdout=subprocess.PIPE, text=True,
                            env=command_env())
    try:
        assert proc.stdout.readline().strip() == "migrating"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    side = db.with_name("mlflow.db.creating")
    assert side.exists() and not db.exists()  # the half-made tables are in the side file only

    from stilts.tracking.store import client_for

    client = client_for(uri)
    exp = client.create_experiment("after-the-kill")
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "accuracy", 0.5)
    client.set_terminated(run.info.run_id)
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    assert not side.exists()
    assert sorted(p.name for p in db.parent.iterdir() if "creating" in p.name) == []


# cells log runs and end as forked cells do (os._exit): their write-ahead log stays beside the store
LOG_AND_EXIT = textwrap.dedent("""
    import os, sys
    from mlflow.entities import Param
    from stilts.tracking.store import client_for
    client = client_for(sys.argv[1])
    exp = client.create_experiment("before")
    for _ in range(30):
        run = client.create_run(exp)
        client.log_batch(run.info.run_id, params=[Param(f"p{j}", "x" * 200) for j in range(50)])
        client.set_terminated(run.info.run_id)
    client.create_experiment("before-last")
    os._exit(0)
""")


def test_a_store_deleted_without_its_write_ahead_log_is_made_anew_whole(tmp_path):
    """`rm mlflow.db` leaves mlflow.db-wal and -shm when a process ended without closing the store. sqlite
    would read that log into the new store: the deleted runs came back, or the store was malformed."""
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    subprocess.run([sys.executable, "-c", LOG_AND_EXIT, uri], check=True, timeout=300, env=command_env())
    assert db.with_name("mlflow.db-wal").exists()
    db.unlink()

    from stilts.tracking.store import client_for

    client = client_for(uri)
    run = client.create_run(client.create_experiment("after"))
    client.set_terminated(run.info.run_id)
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    assert [e.name for e in client.search_experiments()] == ["after", "Default"]
