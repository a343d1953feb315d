"""`stilts analyze --compare`: another grid beside this one, on the cells both measured."""

import pandas as pd
import pytest
from scipy import stats

from stilts import config
from stilts.analysis import report
from stilts.analysis.imports import import_results
from stilts.errors import StiltsError


def grid_csv(deltas: dict[tuple[str, str], float], extra_source: str) -> str:
    """Two restarts per cell, baselines at 0.5; each (source, task) scores 0.5 + delta (± 0.01 across restarts)."""
    lines = ["restart,source,task,role,score"]
    tasks = sorted({t for _, t in deltas})
    for r, jitter in ((0, -0.01), (1, 0.01)):
        lines += [f"{r},none,{t},target,{0.5 + jitter}" for t in tasks]
        lines += [f"{r},{s},{t},target,{0.5 + d + jitter}" for (s, t), d in deltas.items()]
        lines += [f"{r},{extra_source},{t},target,{0.5 + jitter}" for t in tasks]
    return "\n".join(lines) + "\n"


def test_compare_ranks_the_shared_cells_only(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    here = {("a", "rte"): 0.10, ("b", "rte"): -0.05, ("c", "rte"): 0.02, ("a", "cb"): 0.03, ("b", "cb"): 0.01}
    there = {("a", "rte"): 0.20, ("b", "rte"): 0.01, ("c", "rte"): -0.10, ("a", "cb"): 0.04, ("b", "cb"): -0.02}
    (tmp_path / "here.csv").write_text(grid_csv(here, "only_here"))
    (tmp_path / "there.csv").write_text(grid_csv(there, "only_there"))
    params = config.Params(root=tmp_path)
    import_results(params, tmp_path / "here.csv", "here")
    import_results(params, tmp_path / "there.csv", "there")
    out = report.run(params, "here", compare_with=("there",))
    shared = pd.read_csv(out / "compare_there.csv")
    assert len(shared) == 5 and set(shared["source"]) == {"a", "b", "c"}  # only_* are in one grid each
    keys = sorted(here)
    rho = stats.spearmanr([here[k] for k in keys], [there[k] for k in keys]).statistic
    text = (out / "report.md").read_text()
    assert "## Beside `there`" in text
    assert f"Spearman ρ = {rho:+.2f} over 5 shared cells" in text
    assert "agrees in 40% of them" in text  # a/rte and a/cb; b/rte, c/rte and b/cb differ
    per_source = text.split("per intermediate task (points):")[1]
    assert "| a | +6.5 | +12.0 |" in per_source


def test_compare_with_an_unknown_grid_is_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tmp_path / "here.csv").write_text(grid_csv({("a", "rte"): 0.1, ("b", "rte"): 0.0}, "c"))
    params = config.Params(root=tmp_path)
    import_results(params, tmp_path / "here.csv", "here")
    with pytest.raises(StiltsError, match="'nope' is neither an MLflow experiment"):
        report.run(params, "here", compare_with=("nope",))
    assert not (tmp_path / "reports" / "here").exists()
