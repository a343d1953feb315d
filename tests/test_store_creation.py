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
