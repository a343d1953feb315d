"""Four processes logging to one sqlite tracking store at once lose no run, param or metric."""

import os
import subprocess
import sys

import pytest

from stilts import config, tracking
from stilts.tracking import store

WRITER = """
import sys
from stilts import config, tracking
params = config.Params(root=__import__("pathlib").Path(sys.argv[1]))
params.mlflow.experiment = "concurrency"
for r in range(int(sys.argv[3])):
    with tracking.tracked(params, f"w{sys.argv[2]}-{r}", {"role": "target", "cell": f"w{sys.argv[2]}/{r}"}) as run:
        run.log_params({"train": {f"p{i}": i for i in range(30)}})
        for step in range(20):
            run.log_metrics({f"m{i}": step * i for i in range(10)}, step)
"""


@pytest.mark.slow
def test_four_concurrent_writers(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID")}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(w), "5"], env=env,
                              stderr=subprocess.PIPE, text=True) for w in range(4)]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    params = config.Params(root=tmp_path)
    runs = tracking.search_runs(params, "concurrency")
    assert len(runs) == 20 and set(runs["status"]) == {"FINISHED"}
    assert all(f"params.train.p{i}" in runs for i in range(30)) and runs["params.train.p29"].eq("29").all()
    client = store.client_for(tracking.tracking_uri(params))
    for run_id in runs["run_id"]:
        history = client.get_metric_history(run_id, "m9")
        assert sorted(m.step for m in history) == list(range(20))
