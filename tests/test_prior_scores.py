"""published/prior_scores.json: written by benchmarks/prior_scores.py, the only source of the figures `stilts rank`
quotes about a shipped grid's prior."""

import json
import subprocess
import sys
from pathlib import Path

from stilts import config
from stilts.selection import guidance, published

ROOT = Path(__file__).resolve().parents[1]


def test_the_shipped_file_holds_what_the_script_computes_from_the_shipped_grids(tmp_path):
    out = tmp_path / "scores.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "prior_scores.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    made = json.loads(out.read_text())
    shipped = published.prior_scores()
    assert made["made"]["command"] == f"python benchmarks/prior_scores.py --out {out}"
    assert shipped["made"]["command"].startswith("python benchmarks/prior_scores.py")
    assert shipped["made"]["stilts_commit"]
    within = [r for r in shipped["rows"] if r["held_out_grid"] in published.names()]
    assert within and within == made["rows"]
    rows = {r["metric"]: r for r in within if r["setting"] == "prior:paper-2020"}
    assert rows["targets"]["value"] == 10 and rows["regret_at_1"]["value"] < rows["regret_at_1"]["random"]


def test_the_rank_note_quotes_the_file_and_nothing_else(tmp_path, monkeypatch):
    rows = [{"setting": "prior:paper-2020", "held_out_grid": "other", "metric": m, "value": v, "random": r}
            for m, v, r in (("targets", 7, None), ("candidates", 4, None), ("regret_at_1", 0.0312, 0.0841),
                            ("regret_at_3", 0.0051, 0.0099))]
    scores = {"made": {}, "grids": {"other": {"encoder": "bert-base-uncased", "about": "a grid of another encoder"}},
              "rows": rows}
    (tmp_path / "scores.json").write_text(json.dumps(scores))
    monkeypatch.setattr(published, "SCORES", tmp_path / "scores.json")
    published.prior_scores.cache_clear()
    try:
        params = config.Params(root=tmp_path)
        grid = published.catalog()["paper-2020"]
        from stilts.selection.grids import from_runs

        notes = guidance.encoder_notes(params, [from_runs("paper-2020", published.runs("paper-2020"), grid.encoder)])
        assert len(notes) == 1
        assert ("on a grid of another encoder, 7 targets × the 4 intermediate tasks both grids hold, its prior had "
                "Regret@1 3.1% (a random order: 8.4%) and Regret@3 0.5% (random: 1.0%)") in notes[0]
        (tmp_path / "scores.json").write_text(json.dumps({"made": {}, "grids": {}, "rows": []}))
        published.prior_scores.cache_clear()
        notes = guidance.encoder_notes(params, [from_runs("paper-2020", published.runs("paper-2020"), grid.encoder)])
        assert "Regret" not in notes[0] and "measured with roberta-large" in notes[0]
    finally:
        published.prior_scores.cache_clear()
