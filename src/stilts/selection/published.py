"""Published transfer grids shipped with stilts (selection/published/): each a CSV of per-run results in the
format of `stilts import-results`, with a YAML file beside it stating its provenance and encoder.

`stilts rank` learns from every shipped grid when no prior experiment is named, without an import step;
a name in `--prior-experiment` is an MLflow experiment when one by that name holds transfer runs, else a
shipped grid. `stilts analyze --experiment NAME` imports the shipped grid NAME into MLflow on first use
(import_shipped).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

FOLDER = Path(__file__).parent / "published"
SCORES = FOLDER / "prior_scores.json"


@dataclass(frozen=True)
class Published:
    name: str
    file: Path
    citation: str
    encoder: str
    source: str
    licence: str
    aggregation: str


@functools.cache
def catalog() -> dict[str, Published]:
    out = {}
    for meta in sorted(FOLDER.glob("*.yaml")):
        d = yaml.safe_load(meta.read_text(encoding="utf-8"))
        out[d["name"]] = Published(d["name"], FOLDER / d["file"], " ".join(d["citation"].split()), d["encoder"],
                                   " ".join(d["source"].split()), d["licence"], " ".join(d["aggregation"].split()))
    return out


@functools.cache
def prior_scores() -> dict:
    """How each shipped grid's prior ranked grids (prior_scores.json, written by benchmarks/prior_scores.py):
    {"made": {command, stilts_commit, date}, "grids": {name: {encoder, about}}, "rows": [{setting,
    held_out_grid, metric, value, random}]}."""
    return json.loads(SCORES.read_text(encoding="utf-8")) if SCORES.is_file() else {"grids": {}, "rows": []}


def cross_encoder(name: str) -> str:
    """How the prior of shipped grid `name` ranked the grids in prior_scores.json measured with another encoder,
    as a clause of `stilts rank`'s note ("" when none was)."""
    scores, own = prior_scores(), catalog()[name].encoder
    clauses = []
    for held_out, about in scores["grids"].items():
        if about["encoder"] == own:
            continue
        m = {r["metric"]: r for r in scores["rows"]
             if r["setting"] == f"prior:{name}" and r["held_out_grid"] == held_out}
        if not {"targets", "candidates", "regret_at_1", "regret_at_3"} <= set(m):
            continue
        clauses.append(f"on {about['about']}, {m['targets']['value']} targets × the {m['candidates']['value']} "
                       f"intermediate tasks both grids hold, its prior had Regret@1 {m['regret_at_1']['value']:.1%} "
                       f"(a random order: {m['regret_at_1']['random']:.1%}) and Regret@3 "
                       f"{m['regret_at_3']['value']:.1%} (random: {m['regret_at_3']['random']:.1%})")
    return "; ".join(clauses)


def names() -> list[str]:
    return list(catalog())


@functools.cache
def runs(name: str) -> pd.DataFrame:
    """The shipped grid as analysis.collect's table (one row per run)."""
    from stilts.analysis.imports import read

    rows = read(catalog()[name].file)
    return pd.DataFrame({"run_id": [f"{name}:{r['line']}" for r in rows], "source": [r["source"] for r in rows],
                         "task": [r["task"] for r in rows], "role": [r["role"] for r in rows],
                         "restart": [r["restart"] for r in rows], "score": [r["score"] for r in rows],
                         "imported": True})


def summary(name: str) -> dict:
    """Its size: targets, probes, intermediate tasks, restarts, runs."""
    r = runs(name)
    return {"runs": len(r), "targets": r.loc[r.role == "target", "task"].nunique(),
            "probes": r.loc[r.role == "probe", "task"].nunique(),
            "sources": r.loc[r.source != "none", "source"].nunique(), "restarts": r["restart"].nunique()}


def listing() -> str:
    """What `stilts grids` prints."""
    lines = []
    for name, p in catalog().items():
        s = summary(name)
        lines += [f"{name}: {p.encoder}; {s['sources']} intermediate tasks × {s['targets']} targets + {s['probes']} "
                  f"probes × {s['restarts']} restarts ({s['runs']:,} runs, with baselines)",
                  f"  {p.citation}", f"  from: {p.source} ({p.licence})", f"  file: {p.file}"]
    lines.append(f"{len(catalog())} shipped grid(s); `stilts rank --method prior` learns from them when no "
                 "--prior-experiment is named")
    return "\n".join(lines)


OWN_ROLES = ("analysis", "ranking")  # runs stilts logs about an experiment, not results in it


def import_shipped(params, experiment: str) -> int:
    """A shipped grid named as the experiment (`stilts grids`): the rows of its file that the MLflow experiment
    of that name lacks are imported, so its first analysis imports the whole grid, one cut short is completed,
    and later ones import nothing. An experiment of that name holding other results (a study, another import)
    is left as it is. Returns the number of runs imported (0 for any other experiment)."""
    import pandas as pd

    from stilts import tracking
    from stilts.analysis.imports import log_rows, read

    if experiment not in names():
        return 0
    file = catalog()[experiment].file
    runs = tracking.search_runs(params, experiment)
    present = set()
    if not runs.empty:
        origin = runs.get("tags.stilts.imported_from", pd.Series("", index=runs.index)).fillna("")
        role = runs.get("tags.stilts.role", pd.Series("", index=runs.index))
        ours = origin.str.startswith(f"{file.name}:")
        if (~ours & ~role.isin(OWN_ROLES)).any():
            return 0
        present = set(origin[ours & (runs["status"] == "FINISHED")])
    missing = [r for r in read(file) if f"{file.name}:{r['line']}" not in present]
    log_rows(params, missing, file.name, experiment)
    return len(missing)
