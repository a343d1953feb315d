"""Four processes logging to one sqlite tracking store at once lose no run, param or metric."""

import contextlib
import sys

import pytest

from stilts import config, tracking
from stilts.tracking import store
from tests.commands import started

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
def test_four_concurrent_writers(tmp_path):
    with contextlib.ExitStack() as stack:
        procs = [stack.enter_context(started(tmp_path, sys.executable, "-c", WRITER, tmp_path, w, 5, stdout=None))
                 for w in range(4)]
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
