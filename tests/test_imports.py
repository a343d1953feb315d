"""Import a results CSV into MLflow and analyse it: the deltas must be exactly the hand-computed ones."""

import pandas as pd
import pytest

from stilts import config
from stilts.analysis import report
from stilts.analysis.imports import import_results, read
from stilts.errors import StiltsError

CSV = """restart,source,task,role,score,accuracy
0,none,rte,target,0.60,0.60
1,none,rte,target,0.70,0.70
0,mnli,rte,target,0.80,0.80
1,mnli,rte,target,0.90,0.90
0,sst2,rte,target,0.55,
1,sst2,rte,target,0.65,
0,none,cola,probe,0.30,
0,mnli,cola,probe,0.35,
0,sst2,cola,probe,0.20,
1,mnli,cola,probe,0.45,
"""


def test_import_then_analyze(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tmp_path / "res.csv").write_text(CSV)
    params = config.Params(root=tmp_path)
    assert import_results(params, tmp_path / "res.csv", "published") == 10
    out = report.run(params, "published")
    assert out == tmp_path / "reports" / "published"
    m = pd.read_csv(out / "transfer_matrix.csv", index_col="source")
    assert m.loc["mnli", "rte"] == pytest.approx(20.0) and m.loc["sst2", "rte"] == pytest.approx(-5.0)
    assert m.loc["mnli", "cola"] == pytest.approx(10.0) and m.loc["sst2", "cola"] == pytest.approx(-10.0)
    assert m.loc["mnli", "avg_target"] == pytest.approx(20.0)
    text = (out / "report.md").read_text()
    for section in ("## RQ1", "## RQ2", "## RQ3", "## Degenerate runs"):
        assert section in text
    assert {"correlations.csv", "degenerate.csv", "transfer_heatmap.png", "summary.json"} <= \
        {p.name for p in out.iterdir()}


@pytest.mark.parametrize("text, message", [
    ("restart,source,task,role\n0,a,b,target\n", "missing column(s) score"),
    ("restart,source,task,role,score\nx,a,b,target,0.5\n", "res.csv:2: restart 'x' is not an integer"),
    ("restart,source,task,role,score\n0,a,b,teacher,0.5\n", "res.csv:2: role 'teacher'"),
    ("restart,source,task,role,score\n0,a,b,target,85\n", "res.csv:2: score '85' is not a number in [0, 1]"),
    ("restart,source,task,role,score\n0,a,b,target,0.5\n0,a,b,target,0.6\n", "res.csv:3: duplicate of line 2"),
    ("restart,source,task,role,score\n0,,b,target,0.5\n", "res.csv:2: source is empty"),
])
def test_bad_rows_name_their_line(tmp_path, text, message):
    (tmp_path / "res.csv").write_text(text)
    with pytest.raises(StiltsError) as e:
        read(tmp_path / "res.csv")
    assert message in str(e.value)


def test_export_then_import_keeps_every_run_and_its_degenerate_facts(tmp_path, monkeypatch):
    import hashlib

    import yaml

    from stilts.analysis.exports import export

    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    rows = CSV.replace("score,accuracy", "score,majority_score").replace(",0.60,0.60", ",0.60,0.70")
    (tmp_path / "res.csv").write_text(rows)
    params = config.Params(root=tmp_path)
    import_results(params, tmp_path / "res.csv", "grid-a")
    n, meta_path = export(params, tmp_path / "out" / "grid.csv", "grid-a", name="grid-a", command="stilts study")
    assert n == 10 and meta_path == tmp_path / "out" / "grid.yaml"
    meta = yaml.safe_load(meta_path.read_text())
    data = (tmp_path / "out" / "grid.csv").read_bytes()
    assert meta["sha256"] == hashlib.sha256(data).hexdigest() and meta["bytes"] == len(data)
    assert meta["name"] == "grid-a" and meta["file"] == "grid.csv" and meta["encoder"] == params.model.name
    assert meta["machine"]["cores"] and "command" in meta
    back = {(r["source"], r["task"], r["restart"]): r for r in read(tmp_path / "out" / "grid.csv")}
    first = {(r["source"], r["task"], r["restart"]): r for r in read(tmp_path / "res.csv")}
    assert back.keys() == first.keys()
    for key, r in first.items():
        assert back[key]["score"] == pytest.approx(r["score"]) and back[key]["role"] == r["role"]
    assert back[("none", "rte", 0)]["metrics"]["majority_score"] == pytest.approx(0.70)
    import_results(params, tmp_path / "out" / "grid.csv", "grid-b")  # majority_score lands where collect reads it
    from stilts.analysis.collect import collect

    runs = collect(params, "grid-b").set_index(["source", "task", "restart"])
    assert runs.loc[("none", "rte", 0), "majority_score"] == pytest.approx(0.70)


def test_export_refuses_an_empty_experiment_and_writes_nothing(tmp_path, monkeypatch):
    from stilts.analysis.exports import export

    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(StiltsError, match="no finished target or probe runs"):
        export(config.Params(root=tmp_path), tmp_path / "grid.csv", "nothing-here")
    assert not (tmp_path / "grid.csv").exists() and not (tmp_path / "grid.yaml").exists()
